//! The raid superblock against SPDK v25.09: block 0 of aio base bdevs after
//! SPDK's `bdev_raid_create -r raid1 -s`, `bdev_raid_remove_base_bdev`, a
//! restart, and `bdev_raid_add_base_bdev` (files made by
//! `tests/fixtures/raid_sb/make.sh`, which also checks that SPDK assembles
//! the superblock lull writes, `lull-2way.bin`, kept equal to the encoder's
//! output here). The expected values are what those RPCs ask for; the
//! sequence numbers follow SPDK's rule of one increment per superblock
//! write.
//!
//! `UPDATE_FIXTURES=1 cargo test -p lull-engine --test raid_superblock`
//! rewrites `lull-2way.bin` after an intended change of the encoder.

use lull_engine::bdev::raid1::superblock::{
    RaidLevel, SbBaseBdev, SbBaseState, SlotState, StaleReason, Superblock, assemble, data_offset_blocks,
};

/// `make.sh`'s base bdev uuids: 11111111-2222-4333-8444-5555555555NN.
fn base_uuid(n: u8) -> [u8; 16] {
    [
        0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x43, 0x33, 0x84, 0x44, 0x55, 0x55, 0x55, 0x55, 0x55, n,
    ]
}

/// 6f2e1c3a-0d4b-4e5f-9a8b-7c6d5e4f3a2b, the raid SPDK created.
const SPDK_RAID: [u8; 16] = [
    0x6f, 0x2e, 0x1c, 0x3a, 0x0d, 0x4b, 0x4e, 0x5f, 0x9a, 0x8b, 0x7c, 0x6d, 0x5e, 0x4f, 0x3a, 0x2b,
];

/// 0c0f7d5e-3b2a-4c1d-8e9f-a0b1c2d3e4f5, the raid lull writes.
const LULL_RAID: [u8; 16] = [
    0x0c, 0x0f, 0x7d, 0x5e, 0x3b, 0x2a, 0x4c, 0x1d, 0x8e, 0x9f, 0xa0, 0xb1, 0xc2, 0xd3, 0xe4, 0xf5,
];

/// 8 MiB files of 512-byte blocks: 16384 blocks, 2048 for the superblock.
const DATA_SIZE: u64 = 16384 - 2048;

fn member(n: u8, slot: u8, state: SbBaseState) -> SbBaseBdev {
    SbBaseBdev {
        uuid: base_uuid(n),
        data_offset: data_offset_blocks(512),
        data_size: DATA_SIZE,
        state,
        slot,
    }
}

fn spdk_raid(seq_number: u64, c: SbBaseState) -> Superblock {
    Superblock {
        uuid: SPDK_RAID,
        name: "Raid0".into(),
        seq_number,
        level: RaidLevel::Raid1,
        strip_size: 0,
        block_size: 512,
        raid_size: DATA_SIZE,
        base_bdevs: vec![
            member(1, 0, SbBaseState::Configured),
            member(2, 1, SbBaseState::Configured),
            member(3, 2, c),
        ],
    }
}

const CREATED_A: &[u8] = include_bytes!("fixtures/raid_sb/spdk-created-a.bin");
const REMOVED_A: &[u8] = include_bytes!("fixtures/raid_sb/spdk-removed-a.bin");
const REMOVED_C: &[u8] = include_bytes!("fixtures/raid_sb/spdk-removed-c.bin");
const RESTARTED_A: &[u8] = include_bytes!("fixtures/raid_sb/spdk-restarted-a.bin");
const RESTARTED_C: &[u8] = include_bytes!("fixtures/raid_sb/spdk-restarted-c.bin");
const REBUILT_A: &[u8] = include_bytes!("fixtures/raid_sb/spdk-rebuilt-a.bin");
const REBUILT_C: &[u8] = include_bytes!("fixtures/raid_sb/spdk-rebuilt-c.bin");

#[test]
fn decodes_what_spdk_wrote_at_creation() {
    assert_eq!(
        Superblock::decode(CREATED_A).unwrap(),
        spdk_raid(1, SbBaseState::Configured)
    );
}

#[test]
fn a_new_raid1_is_laid_out_as_spdk_lays_it_out() {
    // Three 8 MiB bases of 512-byte blocks; SPDK's first write carries 1.
    let bases = [(base_uuid(1), 16384), (base_uuid(2), 16384), (base_uuid(3), 16384)];
    let mut sb = Superblock::new_raid1(SPDK_RAID, "Raid0", 512, &bases).unwrap();
    sb.seq_number += 1;
    assert_eq!(sb.encode(512).unwrap(), CREATED_A);
}

#[test]
fn decodes_what_spdk_wrote_after_removing_a_member() {
    // The survivors get the update with C recorded MISSING (removed on
    // request, not failed); C keeps the superblock of creation.
    assert_eq!(
        Superblock::decode(REMOVED_A).unwrap(),
        spdk_raid(2, SbBaseState::Missing)
    );
    assert_eq!(REMOVED_C, CREATED_A);
}

#[test]
fn decodes_what_spdk_wrote_when_it_reassembled_without_the_stale_member() {
    // SPDK rewrites the superblock (one more seq_number) on the members it
    // assembles, and leaves the stale one as it was.
    assert_eq!(
        Superblock::decode(RESTARTED_A).unwrap(),
        spdk_raid(3, SbBaseState::Missing)
    );
    assert_eq!(RESTARTED_C, CREATED_A);
}

#[test]
fn decodes_what_spdk_wrote_after_a_rebuild() {
    let rebuilt = Superblock::decode(REBUILT_A).unwrap();
    assert_eq!(rebuilt, spdk_raid(4, SbBaseState::Configured));
    assert_eq!(REBUILT_C, REBUILT_A);
}

#[test]
fn spdks_superblocks_re_encode_to_the_same_bytes() {
    for bytes in [CREATED_A, REMOVED_A, RESTARTED_A, REBUILT_A] {
        let sb = Superblock::decode(bytes).unwrap();
        assert_eq!(sb.encode(512).unwrap(), bytes);
    }
}

#[test]
fn assembles_spdks_raid_after_a_removal() {
    let removed = Superblock::decode(REMOVED_A).unwrap();
    let c = Superblock::decode(REMOVED_C).unwrap();
    let a = assemble(&[
        (base_uuid(1), removed.clone()),
        (base_uuid(2), removed.clone()),
        (base_uuid(3), c.clone()),
    ])
    .unwrap();
    assert_eq!(a.superblock, removed);
    assert_eq!(
        a.slots[2],
        SlotState::Stale {
            base_uuid: base_uuid(3),
            reason: StaleReason::Recorded(SbBaseState::Missing),
        }
    );
    // After the rebuild, C's old superblock (had it missed the update)
    // would still make it stale.
    let rebuilt = Superblock::decode(REBUILT_A).unwrap();
    let a = assemble(&[(base_uuid(1), rebuilt.clone()), (base_uuid(3), c)]).unwrap();
    assert_eq!(a.in_sync().collect::<Vec<_>>(), vec![(0, base_uuid(1))]);
    assert_eq!(a.stale().collect::<Vec<_>>(), vec![(2, base_uuid(3))]);
    assert_eq!(a.missing().collect::<Vec<_>>(), vec![1]);
}

/// The superblock `make.sh` gives SPDK: raid1 `LullRaid` over bases D (4)
/// and E (5).
fn lull_raid() -> Superblock {
    Superblock {
        uuid: LULL_RAID,
        name: "LullRaid".into(),
        seq_number: 1,
        level: RaidLevel::Raid1,
        strip_size: 0,
        block_size: 512,
        raid_size: DATA_SIZE,
        base_bdevs: vec![
            member(4, 0, SbBaseState::Configured),
            member(5, 1, SbBaseState::Configured),
        ],
    }
}

#[test]
fn the_fixture_spdk_reads_is_what_lull_writes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/raid_sb/lull-2way.bin");
    let bytes = lull_raid().encode(512).unwrap();
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(path, &bytes).unwrap();
    }
    assert_eq!(std::fs::read(path).unwrap(), bytes);
}
