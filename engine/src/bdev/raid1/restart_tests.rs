//! A volume with a superblock: what is on block 0 of each base after each
//! change, and the volume built again from its bases after a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::superblock::{SbBaseState, SlotState as AsmSlot, StaleReason, Superblock, assemble};
use super::tests::{BS, Rig, WAIT, dyns, fakes, on_base, wait_rebuilt};
use super::*;
use crate::bdev::RamBdev;
use crate::bdev::test_support::{FakeBdev, pattern};

/// The superblock on block 0 of `base`.
fn sb_on(base: &RamBdev) -> Superblock {
    Superblock::decode(&on_base(base, 0, 0, 1)).unwrap()
}

/// Waits until `base`'s superblock has `seq_number` `seq` or more.
fn wait_seq(base: &RamBdev, seq: u64) -> Superblock {
    wait_sb(base, |sb| sb.seq_number >= seq)
}

/// Waits until `base`'s superblock satisfies `ok`.
fn wait_sb(base: &RamBdev, ok: impl Fn(&Superblock) -> bool) -> Superblock {
    let t0 = Instant::now();
    loop {
        let sb = sb_on(base);
        if ok(&sb) {
            return sb;
        }
        assert!(t0.elapsed() < WAIT, "superblock stuck at {sb:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn states(sb: &Superblock) -> Vec<(SbBaseState, [u8; 16])> {
    let mut v: Vec<_> = sb.base_bdevs.iter().map(|b| (b.slot, b.state, b.uuid)).collect();
    v.sort_by_key(|x| x.0);
    v.into_iter().map(|(_, s, u)| (s, u)).collect()
}

fn sb_volume(f: &[Arc<FakeBdev>], rig: &Rig) -> (Arc<Raid1Bdev>, Arc<dyn Bdev>) {
    let params = Raid1Params {
        superblock: true,
        ..Raid1Params::default()
    };
    let r = Arc::new(Raid1Bdev::create("Vol0", dyns(f), params).unwrap());
    r.write_superblock(&rig.handle(0), WAIT).unwrap();
    let b: Arc<dyn Bdev> = r.clone();
    (r, b)
}

#[test]
fn the_superblock_is_written_at_creation_and_after_every_change() {
    let rig = Rig::start();
    let f = fakes(&["A", "B", "C"], 4096);
    let (r, b) = sb_volume(&f, &rig);
    let uuids: Vec<[u8; 16]> = f.iter().map(|x| x.info().uuid).collect();
    for base in &f {
        let sb = sb_on(base.ram());
        assert_eq!((sb.name.as_str(), sb.uuid, sb.seq_number), ("Vol0", b.info().uuid, 1));
        assert_eq!((sb.block_size, sb.raid_size, sb.strip_size), (BS, 2048, 0));
        assert_eq!(
            states(&sb),
            uuids.iter().map(|u| (SbBaseState::Configured, *u)).collect::<Vec<_>>()
        );
        assert!(
            sb.base_bdevs
                .iter()
                .all(|x| (x.data_offset, x.data_size) == (2048, 2048))
        );
    }
    assert!(r.status().superblock);

    // B fails a write late; by then A and C are slow to take the
    // superblock. The write is answered only once their superblock says B
    // failed.
    f[1].set_delay(Duration::from_millis(5));
    f[1].set_fail(false, true);
    let (tx, rx) = std::sync::mpsc::channel();
    let bb = b.clone();
    rig.run(0, move |cx| {
        let io = BdevIo::Write {
            lba: 0,
            data: pattern(8 * 512, 1),
        };
        bb.submit(cx, io, BdevDone::from_fn(move |_, r, _| tx.send(r).unwrap()));
    });
    f[0].set_write_delay(Duration::from_millis(50));
    f[2].set_write_delay(Duration::from_millis(50));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Ok(()));
    for base in [&f[0], &f[2]] {
        let sb = sb_on(base.ram());
        assert_eq!(sb.seq_number, 2, "persisted before the write was answered");
        assert_eq!(states(&sb)[1], (SbBaseState::Failed, uuids[1]));
    }
    assert_eq!(sb_on(f[1].ram()).seq_number, 1, "B is not written any more");
    f[0].set_write_delay(Duration::ZERO);
    f[2].set_write_delay(Duration::ZERO);

    // Removed: MISSING; added: MISSING while rebuilt, then CONFIGURED.
    r.remove_base("C").unwrap();
    let sb = wait_seq(f[0].ram(), 3);
    assert_eq!(states(&sb)[2], (SbBaseState::Missing, uuids[2]));
    let d = FakeBdev::new("D", 4096, BS);
    r.add_base(d.clone(), &rig.handle(1)).unwrap();
    wait_rebuilt(&r);
    // Updates asked for while one is written are folded into the next.
    let d_uuid = d.info().uuid;
    let sb = wait_sb(f[0].ram(), |sb| states(sb)[1] == (SbBaseState::Configured, d_uuid));
    assert!(sb.seq_number >= 4, "{sb:?}");
    assert_eq!(wait_seq(d.ram(), sb.seq_number), sb, "D carries the same superblock");
}

#[test]
fn a_restart_reassembles_the_volume_and_rebuilds_a_stale_member_before_reading_it() {
    let rig = Rig::start();
    let f = fakes(&["A", "B", "C"], 4096);
    let (r, b) = sb_volume(&f, &rig);
    for lba in (0..2048).step_by(128) {
        rig.write(1, &b, lba, pattern(128 * 512, lba as u8)).unwrap();
    }
    // B leaves; writes go on without it; then the daemon "restarts".
    r.remove_base("B").unwrap();
    wait_seq(f[0].ram(), 2);
    rig.write(0, &b, 500, pattern(64 * 512, 77)).unwrap();
    let before = on_base(f[0].ram(), 2048, 0, 2048);
    drop((r, b));

    let found: Vec<_> = f
        .iter()
        .map(|x| {
            let bdev: Arc<dyn Bdev> = x.clone();
            let sb = read_superblock(&bdev, &rig.handle(0), WAIT)
                .unwrap()
                .expect("a superblock");
            (x.info().uuid, sb)
        })
        .collect();
    let asm = assemble(&found).unwrap();
    assert!(
        matches!(
            &asm.slots[1],
            AsmSlot::Stale {
                reason: StaleReason::Recorded(SbBaseState::Missing),
                ..
            }
        ),
        "{:?}",
        asm.slots[1]
    );
    let reads_b = f[1].reads();
    // B takes its time, so the reads below meet it stale.
    f[1].set_write_delay(Duration::from_millis(300));
    let r = Arc::new(Raid1Bdev::from_assembly(&asm, dyns(&f), Raid1Options::default(), &rig.handle(1)).unwrap());
    let b: Arc<dyn Bdev> = r.clone();
    assert_eq!((b.info().name.as_str(), b.info().num_blocks), ("Vol0", 2048));
    // Read at once, while B may still be rebuilt: never from B.
    for i in 0..6 {
        assert_eq!(rig.read(i, &b, 500, 64).unwrap(), pattern(64 * 512, 77));
    }
    assert!(r.status().process.is_some(), "still rebuilding B");
    let s = wait_rebuilt(&r);
    assert_eq!(f[1].reads(), reads_b, "B was not read while stale");
    assert!(s.base_bdevs.iter().all(|x| x.is_operational), "{s:?}");
    assert!(on_base(f[1].ram(), 2048, 0, 2048) == before, "B rebuilt");
    let sb = wait_seq(f[1].ram(), 4);
    assert!(states(&sb).iter().all(|(st, _)| *st == SbBaseState::Configured));

    // Wiped (the volume deleted): nothing left to assemble.
    r.wipe_superblock(&rig.handle(0), WAIT).unwrap();
    for base in &f {
        let bdev: Arc<dyn Bdev> = base.clone();
        assert_eq!(read_superblock(&bdev, &rig.handle(1), WAIT).unwrap(), None);
    }
    assert!(on_base(f[0].ram(), 2048, 0, 2048) == before, "data untouched");

    // A base the volume never had: no superblock.
    let blank: Arc<dyn Bdev> = Arc::new(RamBdev::new("Blank", 4096 * 512, BS).unwrap());
    assert_eq!(read_superblock(&blank, &rig.handle(0), WAIT).unwrap(), None);
}

/// A volume wiped and deleted (`bdev_raid_delete clear_sb`) while a
/// rebuild runs and another is queued behind it: nothing more reaches its
/// bases afterwards. Neither the superblock update that ending the aborted
/// rebuild asks for (which wrote back the superblock just zeroed) nor the
/// queued rebuild (its target is a free bdev once the volume is gone).
#[test]
fn a_deleted_volume_writes_nothing_more_to_its_bases() {
    let rig = Rig::start();
    let mut f = fakes(&["A", "B", "C", "D"], 4096);
    let (r, b) = sb_volume(&f, &rig);
    rig.write(0, &b, 0, pattern(2048 * 512, 9)).unwrap();
    r.remove_base("C").unwrap();
    r.remove_base("D").unwrap();
    wait_seq(f[0].ram(), 3);
    // Blank replacements: what reaches them is the rebuild's.
    f[2] = FakeBdev::new("E", 4096, BS);
    f[3] = FakeBdev::new("F", 4096, BS);
    // Slow: C's rebuild is in the middle when the volume goes.
    r.set_options(Raid1Options {
        process_window_size_kb: 64,
        process_max_bandwidth_mb_sec: 1,
    })
    .unwrap();
    r.add_base(f[2].clone(), &rig.handle(0)).unwrap();
    r.add_base(f[3].clone(), &rig.handle(0)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(r.status().process.map(|p| p.target), Some("E".to_string()));
    // bdev_raid_delete clear_sb: the superblocks zeroed, then the volume dropped.
    r.wipe_superblock(&rig.handle(1), WAIT).unwrap();
    drop((r, b));
    // A and B are only read by a rebuild: any write to them now is a superblock.
    let writes: Vec<u64> = f[..2].iter().map(|x| x.writes()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<u64> = f[..2].iter().map(|x| x.writes()).collect();
    assert_eq!(after, writes, "writes to A and B after the delete");
    for base in &f {
        assert!(
            on_base(base.ram(), 0, 0, 1).iter().all(|&x| x == 0),
            "{}: superblock back",
            base.info().name
        );
    }
    assert!(
        on_base(f[3].ram(), 2048, 0, 2048).iter().all(|&x| x == 0),
        "F was rebuilt after the delete"
    );
}

/// A volume deleted while its rebuild runs, its bases then failing (their
/// controllers detached next, as `lull volume create` undoes itself): no
/// base is recorded failed after the delete, so creating the volume again
/// over the same bases finds the members that were in sync in sync.
#[test]
fn a_deleted_volume_records_no_failure_after_its_delete() {
    let rig = Rig::start();
    let f = fakes(&["A", "B", "C"], 32768);
    let (r, b) = sb_volume(&f, &rig);
    rig.write(0, &b, 0, pattern(64 * 512, 3)).unwrap();
    r.remove_base("C").unwrap();
    r.set_options(Raid1Options {
        process_window_size_kb: 64,
        process_max_bandwidth_mb_sec: 1,
    })
    .unwrap();
    let d = FakeBdev::new("D", 32768, BS);
    r.add_base(d.clone(), &rig.handle(0)).unwrap();
    // The rebuild runs (15 MiB at 1 MiB/s) and the add's update is on the bases.
    let t0 = Instant::now();
    while r.status().process.as_ref().is_none_or(|p| p.blocks == 0) {
        assert!(t0.elapsed() < WAIT, "no rebuild: {:?}", r.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let before = sb_on(f[0].ram()).seq_number;
    drop(r);
    drop(b);
    // B's and D's controllers go away: their I/O fails from now on.
    f[1].set_fail(true, true);
    d.set_fail(true, true);
    std::thread::sleep(Duration::from_millis(500));
    let on_a = sb_on(f[0].ram());
    assert!(on_a.seq_number >= before);
    let b_uuid = f[1].info().uuid;
    assert!(
        on_a.base_bdevs
            .iter()
            .any(|x| x.uuid == b_uuid && x.state == SbBaseState::Configured),
        "B is still recorded in sync: {on_a:?}"
    );
    let d_uuid = d.info().uuid;
    assert!(
        on_a.base_bdevs
            .iter()
            .all(|x| x.uuid != d_uuid || x.state != SbBaseState::Configured),
        "D, never rebuilt, is not recorded in sync: {on_a:?}"
    );
}
