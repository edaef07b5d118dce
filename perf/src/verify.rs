//! The `--verify` block format: every block written carries its LBA and a
//! generation, so a read can tell a block that is stale, misplaced or torn.
//!
//! Block layout (little-endian): bytes 0..8 LBA, 8..16 generation, then
//! the rest filled with 8-byte words `lba ^ generation ^ (word index x
//! 0x9E37_79B9_7F4A_7C15)`, so a block cannot pass for another one even
//! in its tail.

/// Fills `buf` (whole blocks of `block_size` bytes starting at `lba`) with generation `generation`.
pub fn fill(buf: &mut [u8], block_size: usize, lba: u64, generation: u64) {
    for (i, block) in buf.chunks_exact_mut(block_size).enumerate() {
        let l = lba + i as u64;
        block[0..8].copy_from_slice(&l.to_le_bytes());
        block[8..16].copy_from_slice(&generation.to_le_bytes());
        for (w, word) in block[16..].chunks_exact_mut(8).enumerate() {
            word.copy_from_slice(&tail_word(l, generation, w).to_le_bytes());
        }
    }
}

fn tail_word(lba: u64, generation: u64, w: usize) -> u64 {
    lba ^ generation ^ ((w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A block that did not hold what was written last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The LBA read.
    pub lba: u64,
    /// The generation written last.
    pub expected_generation: u64,
    /// The LBA the block names.
    pub found_lba: u64,
    /// The generation the block names.
    pub found_generation: u64,
    /// Whether the header matched but the tail did not (a torn block).
    pub torn: bool,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.torn {
            write!(
                f,
                "verify failed at LBA {}: header matches generation {} but the block's data does not",
                self.lba, self.expected_generation
            )
        } else {
            write!(
                f,
                "verify failed at LBA {}: expected LBA {} generation {}, found LBA {} generation {}",
                self.lba, self.lba, self.expected_generation, self.found_lba, self.found_generation
            )
        }
    }
}

/// Checks blocks read from `lba` against generation `generation`.
///
/// # Errors
/// The first block that differs.
pub fn check(buf: &[u8], block_size: usize, lba: u64, generation: u64) -> Result<(), Mismatch> {
    for (i, block) in buf.chunks_exact(block_size).enumerate() {
        let l = lba + i as u64;
        let found_lba = u64::from_le_bytes(block[0..8].try_into().unwrap_or([0; 8]));
        let found_generation = u64::from_le_bytes(block[8..16].try_into().unwrap_or([0; 8]));
        let mismatch = |torn| Mismatch {
            lba: l,
            expected_generation: generation,
            found_lba,
            found_generation,
            torn,
        };
        if found_lba != l || found_generation != generation {
            return Err(mismatch(false));
        }
        for (w, word) in block[16..].chunks_exact(8).enumerate() {
            if word != tail_word(l, generation, w).to_le_bytes() {
                return Err(mismatch(true));
            }
        }
    }
    Ok(())
}

/// Checks blocks read from `lba` against the generation each was written
/// with (`generations[i]` for block `lba + i`; 0: not known, not checked).
///
/// # Errors
/// The first block that differs.
pub fn check_known(buf: &[u8], block_size: usize, lba: u64, generations: &[u64]) -> Result<(), Mismatch> {
    for (i, (block, &g)) in buf.chunks_exact(block_size).zip(generations).enumerate() {
        if g != 0 {
            check(block, block_size, lba + i as u64, g)?;
        }
    }
    Ok(())
}

/// Which generation each block of the verified range holds, kept between
/// runs in a file (as fio's `verify_state_save`/`verify_state_load`): a run
/// loads it, checks reads of those blocks against it, and saves what it
/// leaves behind.
///
/// File layout (little-endian): `LULLVST1`, NSID u32, block size u32,
/// namespace blocks u64, verified blocks u64, run count u64, then runs of
/// (first LBA u64, blocks u64, generation u64) for blocks of known contents,
/// then the CRC32C of everything before it (u32).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyState {
    /// Namespace ID.
    pub nsid: u32,
    /// Logical block size, bytes.
    pub block_size: u32,
    /// The namespace's size, blocks (NSZE).
    pub ns_blocks: u64,
    /// Generation of each block from LBA 0 (the `--size` range); 0 = unknown.
    pub generations: Vec<u64>,
}

const STATE_MAGIC: &[u8; 8] = b"LULLVST1";
const STATE_HEADER: usize = 8 + 4 + 4 + 8 + 8 + 8;

impl VerifyState {
    /// Nothing known yet about `blocks` blocks of namespace `nsid`.
    pub fn new(nsid: u32, block_size: u32, ns_blocks: u64, blocks: u64) -> Self {
        VerifyState {
            nsid,
            block_size,
            ns_blocks,
            generations: vec![0; blocks as usize],
        }
    }

    /// Blocks whose contents are known.
    pub fn known_blocks(&self) -> u64 {
        self.generations.iter().filter(|&&g| g != 0).count() as u64
    }

    /// Whether this state fits a run on namespace `nsid` of `ns_blocks`
    /// blocks of `block_size` bytes, verifying its first `blocks` blocks.
    ///
    /// # Errors
    /// The first difference, naming both values and where each comes from.
    pub fn check_geometry(&self, nsid: u32, block_size: u32, ns_blocks: u64, blocks: u64) -> Result<(), String> {
        let saved = self.generations.len() as u64;
        if self.nsid != nsid {
            return Err(format!(
                "the verify state is of namespace {}, this run uses namespace {nsid} (--nsid)",
                self.nsid
            ));
        }
        if self.block_size != block_size {
            return Err(format!(
                "the verify state was saved with {}-byte blocks; the namespace now has {block_size}-byte blocks",
                self.block_size
            ));
        }
        if self.ns_blocks != ns_blocks {
            return Err(format!(
                "the verify state was saved for a namespace of {} blocks; it now has {ns_blocks} blocks",
                self.ns_blocks
            ));
        }
        if saved != blocks {
            return Err(format!(
                "the verify state covers {} bytes ({saved} blocks); this run verifies {} bytes (--size must be the same)",
                saved * u64::from(block_size),
                blocks * u64::from(block_size)
            ));
        }
        Ok(())
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        for (lba, &g) in self.generations.iter().enumerate() {
            if g == 0 {
                continue;
            }
            match runs.last_mut() {
                Some((first, n, rg)) if *rg == g && *first + *n == lba as u64 => *n += 1,
                _ => runs.push((lba as u64, 1, g)),
            }
        }
        let mut b = Vec::with_capacity(STATE_HEADER + runs.len() * 24 + 4);
        b.extend_from_slice(STATE_MAGIC);
        b.extend_from_slice(&self.nsid.to_le_bytes());
        b.extend_from_slice(&self.block_size.to_le_bytes());
        b.extend_from_slice(&self.ns_blocks.to_le_bytes());
        b.extend_from_slice(&(self.generations.len() as u64).to_le_bytes());
        b.extend_from_slice(&(runs.len() as u64).to_le_bytes());
        for (first, n, g) in runs {
            for v in [first, n, g] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        let crc = lull_proto::pdu::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads the file's bytes.
    ///
    /// # Errors
    /// What is wrong with them (not a state file, damaged, inconsistent).
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let le64 = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        let le32 = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
        if b.len() < STATE_HEADER + 4 || &b[..8] != STATE_MAGIC {
            return Err("not a lull perf verify state file".into());
        }
        let body = b.len() - 4;
        if lull_proto::pdu::crc32c(&b[..body]) != le32(body) {
            return Err("the verify state file is damaged (its CRC32C does not match)".into());
        }
        let (nsid, block_size, ns_blocks, blocks, nruns) = (le32(8), le32(12), le64(16), le64(24), le64(32));
        if blocks > ns_blocks || nruns.checked_mul(24) != Some((body - STATE_HEADER) as u64) {
            return Err("the verify state file is inconsistent (its sizes do not add up)".into());
        }
        let mut generations = vec![0u64; blocks as usize];
        for r in 0..nruns as usize {
            let at = STATE_HEADER + r * 24;
            let (first, n, g) = (le64(at), le64(at + 8), le64(at + 16));
            let end = first.checked_add(n).filter(|&e| e <= blocks);
            let Some(end) = end else {
                return Err(format!(
                    "the verify state file is inconsistent (blocks {first}+{n} lie past its {blocks} blocks)"
                ));
            };
            generations[first as usize..end as usize].fill(g);
        }
        Ok(VerifyState {
            nsid,
            block_size,
            ns_blocks,
            generations,
        })
    }

    /// Loads `path`; `Ok(None)` when it does not exist (a first run).
    ///
    /// # Errors
    /// The file unreadable or not a valid state, naming the path.
    pub fn load(path: &std::path::Path) -> Result<Option<Self>, String> {
        match std::fs::read(path) {
            Ok(b) => Self::decode(&b)
                .map(Some)
                .map_err(|e| format!("--verify-state {}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("--verify-state {}: {e}", path.display())),
        }
    }

    /// Saves to `path` (written beside it, then renamed over it, so a crash
    /// leaves the old state or the new one).
    ///
    /// # Errors
    /// The file cannot be written, naming the path.
    pub fn save(&self, path: &std::path::Path) -> Result<(), String> {
        use std::io::Write;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        // Created exclusively: a link or file planted at the temporary name
        // is never written through. Synced before the rename, so that a
        // crash leaves the old state or the new one, never an empty file.
        let mut created = false;
        let r = (|| {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            created = true;
            f.write_all(&self.encode())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        r.map_err(|e| {
            if created {
                let _ = std::fs::remove_file(&tmp);
            }
            format!("--verify-state {}: {e}", path.display())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_never_writes_through_a_link_planted_at_its_temporary_name() {
        let dir = std::env::temp_dir().join(format!("lull-verify-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "victim").unwrap();
        let path = dir.join("state");
        let tmp = dir.join(format!("state.tmp.{}", std::process::id()));
        // Planted at the name this process uses, and at the plain `.tmp` one.
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("state.tmp")).unwrap();
        let s = VerifyState::new(1, 512, 1024, 8);
        assert!(s.save(&path).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
        assert!(!path.exists(), "the link was not renamed into place");
        // Without the planted link the state is saved and reads back.
        std::fs::remove_file(&tmp).unwrap();
        s.save(&path).unwrap();
        assert!(VerifyState::load(&path).unwrap().is_some());
        assert!(!tmp.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_state_round_trips_and_damage_is_refused() {
        let mut s = VerifyState::new(1, 512, 1000, 64);
        s.generations[3..8].fill(9);
        s.generations[8] = 10;
        s.generations[63] = 11;
        let b = s.encode();
        // Three runs of known blocks.
        assert_eq!(b.len(), STATE_HEADER + 3 * 24 + 4);
        assert_eq!(VerifyState::decode(&b).unwrap(), s);
        assert_eq!(s.known_blocks(), 7);
        let mut bad = b.clone();
        bad[STATE_HEADER + 5] ^= 1;
        assert!(VerifyState::decode(&bad).unwrap_err().contains("damaged"));
        assert!(VerifyState::decode(b"hello").is_err());
        assert!(s.check_geometry(1, 512, 1000, 64).is_ok());
        assert!(s.check_geometry(1, 4096, 1000, 64).unwrap_err().contains("4096-byte"));
        assert!(s.check_geometry(1, 512, 2000, 64).unwrap_err().contains("2000 blocks"));
        assert!(s.check_geometry(1, 512, 1000, 32).unwrap_err().contains("--size"));
        assert!(s.check_geometry(2, 512, 1000, 64).unwrap_err().contains("--nsid"));
    }

    #[test]
    fn known_blocks_are_checked_and_unknown_ones_skipped() {
        let mut b = vec![0u8; 4 * 512];
        fill(&mut b[512..1024], 512, 11, 5);
        assert_eq!(check_known(&b, 512, 10, &[0, 5, 0, 0]), Ok(()));
        let e = check_known(&b, 512, 10, &[0, 5, 6, 0]).unwrap_err();
        assert_eq!(e.lba, 12);
    }

    #[test]
    fn what_is_written_verifies_and_every_kind_of_damage_is_named() {
        let mut b = vec![0u8; 4 * 512];
        fill(&mut b, 512, 100, 7);
        assert_eq!(check(&b, 512, 100, 7), Ok(()));
        // Stale: an older generation.
        let e = check(&b, 512, 100, 8).unwrap_err();
        assert_eq!((e.lba, e.found_generation, e.torn), (100, 7, false));
        // Misplaced: the same data read at another LBA.
        let e = check(&b, 512, 101, 7).unwrap_err();
        assert_eq!((e.lba, e.found_lba), (101, 100));
        // Torn: one byte of the third block's tail.
        b[2 * 512 + 300] ^= 1;
        let e = check(&b, 512, 100, 7).unwrap_err();
        assert_eq!((e.lba, e.torn), (102, true));
        assert!(e.to_string().contains("LBA 102"));
        // Never written (zeros) is a mismatch too.
        assert!(check(&[0u8; 512], 512, 5, 1).is_err());
    }
}
