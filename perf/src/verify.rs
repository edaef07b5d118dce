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

#[cfg(test)]
mod tests {
    use super::*;

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
