//! Tests of the superblock format and of assembly. Expected bytes are built
//! by hand from the field offsets of SPDK's `struct raid_bdev_superblock`
//! (`bdev_raid.h`, v25.09), written here as literal numbers, and the CRC by
//! a bitwise CRC-32C written here, checked against the published check
//! value.

use super::*;

/// Bitwise reflected CRC-32C (polynomial 0x1EDC6F41, reflected 0x82F63B78)
/// continued from `crc`, with no inversion.
fn crc32c_bitwise(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[test]
fn the_bitwise_reference_gives_the_published_crc32c_check_value() {
    // The usual CRC-32C inverts on entry and exit; its check value over
    // "123456789" is 0xE3069283 (RFC 3720 B.4's polynomial, the CRC
    // catalogue's CRC-32/ISCSI).
    assert_eq!(!crc32c_bitwise(!0, b"123456789"), 0xE306_9283);
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn the_superblock_crc_starts_from_zero_without_inversion() {
    // SPDK computes spdk_crc32c_update(sb, length, 0): no inversion.
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
    for len in [0, 1, 7, 8, 9, 255, 256, 1000] {
        assert_eq!(
            crc_update(0, &data[..len]),
            crc32c_bitwise(0, &data[..len]),
            "len {len}"
        );
    }
    // And continues like the reference from any value.
    assert_eq!(crc_update(0x1234_5678, &data), crc32c_bitwise(0x1234_5678, &data));
    // With the inversions put back around it, the check value.
    assert_eq!(!crc_update(!0, b"123456789"), 0xE306_9283);
}

const RAID_UUID: [u8; 16] = [
    0x5d, 0x0c, 0x3e, 0x4a, 0x9b, 0x1f, 0x4f, 0x7e, 0x8a, 0x52, 0x6f, 0x1d, 0x2c, 0x3b, 0x4a, 0x5e,
];

fn base_uuid(n: u8) -> [u8; 16] {
    let mut u = [0xb0 + n; 16];
    u[15] = n;
    u
}

fn sample() -> Superblock {
    Superblock {
        uuid: RAID_UUID,
        name: "Raid0".into(),
        seq_number: 0x0102_0304_0506_0708,
        level: RaidLevel::Raid1,
        strip_size: 0,
        block_size: 4096,
        raid_size: 0x0000_0011_2233_4455,
        base_bdevs: vec![
            SbBaseBdev {
                uuid: base_uuid(1),
                data_offset: 256,
                data_size: 0x0000_0011_2233_4455,
                state: SbBaseState::Configured,
                slot: 0,
            },
            SbBaseBdev {
                uuid: base_uuid(2),
                data_offset: 2048,
                data_size: 0x0000_0011_2233_4400,
                state: SbBaseState::Failed,
                slot: 1,
            },
            SbBaseBdev {
                uuid: base_uuid(3),
                data_offset: 288,
                data_size: 77,
                state: SbBaseState::Missing,
                slot: 2,
            },
        ],
    }
}

/// `sample()` laid out by hand: every offset a literal from SPDK's struct.
fn sample_bytes_by_hand(block_size: usize) -> Vec<u8> {
    let mut b = vec![0u8; block_size.max(448).div_ceil(block_size) * block_size];
    b[0..8].copy_from_slice(b"SPDKRAID");
    b[8..10].copy_from_slice(&[1, 0]); // major 1
    b[10..12].copy_from_slice(&[0, 0]); // minor 0
    b[12..16].copy_from_slice(&[0xc0, 0x01, 0, 0]); // length 448 = 256 + 3 x 64
    // 16..20 crc, set below; 20..24 flags 0.
    b[24..40].copy_from_slice(&RAID_UUID);
    b[40..45].copy_from_slice(b"Raid0"); // NUL and zeroes follow to 104
    b[104..112].copy_from_slice(&[0x55, 0x44, 0x33, 0x22, 0x11, 0, 0, 0]); // raid_size
    b[112..116].copy_from_slice(&[0x00, 0x10, 0, 0]); // block_size 4096
    b[116..120].copy_from_slice(&[1, 0, 0, 0]); // level raid1
    b[120..124].copy_from_slice(&[0, 0, 0, 0]); // strip_size 0
    // 124..128 state 0
    b[128..136].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]); // seq_number
    b[136] = 3; // num_base_bdevs; 137..255 reserved
    b[255] = 3; // base_bdevs_size
    // Record 0 at 256.
    b[256..272].copy_from_slice(&base_uuid(1));
    b[272..280].copy_from_slice(&[0x00, 0x01, 0, 0, 0, 0, 0, 0]); // data_offset 256
    b[280..288].copy_from_slice(&[0x55, 0x44, 0x33, 0x22, 0x11, 0, 0, 0]); // data_size
    b[288..292].copy_from_slice(&[1, 0, 0, 0]); // CONFIGURED
    b[296] = 0; // slot
    // Record 1 at 320.
    b[320..336].copy_from_slice(&base_uuid(2));
    b[336..344].copy_from_slice(&[0x00, 0x08, 0, 0, 0, 0, 0, 0]); // 2048
    b[344..352].copy_from_slice(&[0x00, 0x44, 0x33, 0x22, 0x11, 0, 0, 0]);
    b[352..356].copy_from_slice(&[2, 0, 0, 0]); // FAILED
    b[360] = 1;
    // Record 2 at 384.
    b[384..400].copy_from_slice(&base_uuid(3));
    b[400..408].copy_from_slice(&[0x20, 0x01, 0, 0, 0, 0, 0, 0]); // 288
    b[408..416].copy_from_slice(&[77, 0, 0, 0, 0, 0, 0, 0]);
    b[416..420].copy_from_slice(&[0, 0, 0, 0]); // MISSING
    b[424] = 2;
    let crc = crc32c_bitwise(0, &b[..448]); // crc field still zero
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn encode_lays_out_every_field_at_spdks_offsets() {
    for bs in [512usize, 4096] {
        let bytes = sample().encode(bs as u32).unwrap();
        assert_eq!(bytes, sample_bytes_by_hand(bs), "block size {bs}");
        assert_eq!(bytes.len(), bs);
    }
}

#[test]
fn decode_reads_a_superblock_built_by_hand() {
    assert_eq!(Superblock::decode(&sample_bytes_by_hand(512)).unwrap(), sample());
}

#[test]
fn round_trips() {
    let mut sb = sample();
    for bs in [512u32, 520, 4096, 8192] {
        let bytes = sb.encode(bs).unwrap();
        assert_eq!(bytes.len() as u64, sb_len_blocks(3, bs) * u64::from(bs));
        assert_eq!(Superblock::decode(&bytes).unwrap(), sb);
    }
    // Longest name, other levels, no records, 255 records (several blocks).
    sb.name = "n".repeat(63);
    sb.level = RaidLevel::Concat;
    sb.strip_size = 128;
    sb.base_bdevs.clear();
    assert_eq!(Superblock::decode(&sb.encode(512).unwrap()).unwrap(), sb);
    sb.base_bdevs = (0..=254u8)
        .map(|i| SbBaseBdev {
            uuid: [i; 16],
            data_offset: 2048,
            data_size: 1 << 20,
            state: SbBaseState::Configured,
            slot: 254 - i,
        })
        .collect();
    sb.name = "ünïcode".into();
    let bytes = sb.encode(512).unwrap();
    assert_eq!(bytes.len(), 33 * 512);
    assert_eq!(
        u32::from_le_bytes(bytes[12..16].try_into().unwrap()),
        SB_MAX_LENGTH as u32
    );
    assert_eq!(Superblock::decode(&bytes).unwrap(), sb);
}

#[test]
fn trailing_bytes_past_the_length_are_ignored() {
    let mut bytes = sample().encode(512).unwrap();
    bytes.extend_from_slice(&[0xab; 1024]);
    bytes[448..512].fill(0xcd);
    assert_eq!(Superblock::decode(&bytes).unwrap(), sample());
}

#[test]
fn a_higher_minor_version_is_read() {
    let mut b = sample_bytes_by_hand(512);
    b[10] = 3;
    refresh_crc(&mut b);
    assert_eq!(Superblock::decode(&b).unwrap(), sample());
}

#[test]
fn data_offset_is_one_mib_of_blocks() {
    assert_eq!(MIN_DATA_OFFSET_BYTES, 1_048_576);
    assert_eq!(data_offset_blocks(512), 2048);
    assert_eq!(data_offset_blocks(4096), 256);
    assert_eq!(data_offset_blocks(520), 2017); // 2016.5 rounded up
    assert_eq!(data_offset_blocks(0), 1_048_576);
    assert_eq!(data_offset_blocks_aligned(4096, 0), 256);
    assert_eq!(data_offset_blocks_aligned(4096, 64), 256);
    assert_eq!(data_offset_blocks_aligned(4096, 48), 288);
    assert_eq!(data_offset_blocks_aligned(512, 3000), 3000);
    // The largest superblock fits in front of the data.
    for bs in [512, 4096] {
        assert!(sb_max_len_blocks(bs) < data_offset_blocks(bs));
    }
}

#[test]
fn superblock_sizes_in_blocks() {
    assert_eq!(SB_MAX_LENGTH, 16_576);
    assert_eq!(sb_len_bytes(3), 448);
    assert_eq!(sb_len_blocks(0, 512), 1);
    assert_eq!(sb_len_blocks(4, 512), 1); // 512 exactly
    assert_eq!(sb_len_blocks(5, 512), 2);
    assert_eq!(sb_len_blocks(255, 4096), 5);
    assert_eq!(sb_max_len_blocks(512), 33);
    assert_eq!(sb_max_len_blocks(4096), 5);
}

#[test]
fn level_and_state_numbers() {
    for (level, n, s) in [
        (RaidLevel::Raid0, 0, "raid0"),
        (RaidLevel::Raid1, 1, "raid1"),
        (RaidLevel::Raid5f, 95, "raid5f"),
        (RaidLevel::Concat, 99, "concat"),
    ] {
        assert_eq!(level.to_u32(), n);
        assert_eq!(RaidLevel::from_u32(n), Some(level));
        assert_eq!(level.as_str(), s);
    }
    assert_eq!(RaidLevel::from_u32(2), None);
    for (state, n) in [
        (SbBaseState::Missing, 0),
        (SbBaseState::Configured, 1),
        (SbBaseState::Failed, 2),
        (SbBaseState::Spare, 3),
    ] {
        assert_eq!(state.to_u32(), n);
        assert_eq!(SbBaseState::from_u32(n), Some(state));
    }
    assert_eq!(SbBaseState::from_u32(4), None);
}

#[test]
fn uuid_text_is_the_usual_form() {
    assert_eq!(UuidText(RAID_UUID).to_string(), "5d0c3e4a-9b1f-4f7e-8a52-6f1d2c3b4a5e");
}

/// Recomputes the CRC of hand-edited bytes, with the reference.
fn refresh_crc(b: &mut [u8]) {
    let len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    b[16..20].fill(0);
    let crc = crc32c_bitwise(0, &b[..len]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes `sample_bytes_by_hand(512)` after `edit`, with a fresh CRC.
fn decode_edited(edit: impl FnOnce(&mut Vec<u8>)) -> Result<Superblock, SbError> {
    let mut b = sample_bytes_by_hand(512);
    edit(&mut b);
    refresh_crc(&mut b);
    Superblock::decode(&b)
}

#[test]
fn decode_errors() {
    let good = sample_bytes_by_hand(512);

    assert_eq!(
        Superblock::decode(&[0u8; 512]),
        Err(SbError::BadSignature { found: vec![0; 8] })
    );
    assert_eq!(
        Superblock::decode(b"SPDKRAIX"),
        Err(SbError::BadSignature {
            found: b"SPDKRAIX".to_vec()
        })
    );
    assert_eq!(
        Superblock::decode(b"NOPE"),
        Err(SbError::BadSignature {
            found: b"NOPE".to_vec()
        })
    );
    assert_eq!(
        Superblock::decode(&[]),
        Err(SbError::Truncated { needed: 256, have: 0 })
    );
    assert_eq!(
        Superblock::decode(b"SPDK"),
        Err(SbError::Truncated { needed: 256, have: 4 })
    );
    assert_eq!(
        Superblock::decode(&good[..255]),
        Err(SbError::Truncated { needed: 256, have: 255 })
    );
    assert_eq!(
        Superblock::decode(&good[..447]),
        Err(SbError::Truncated { needed: 448, have: 447 })
    );

    let mut b = good.clone();
    b[12..16].copy_from_slice(&255u32.to_le_bytes());
    assert_eq!(Superblock::decode(&b), Err(SbError::LengthTooSmall { length: 255 }));
    b[12..16].copy_from_slice(&16_577u32.to_le_bytes());
    assert_eq!(Superblock::decode(&b), Err(SbError::LengthTooLarge { length: 16_577 }));
    b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        Superblock::decode(&b),
        Err(SbError::LengthTooLarge { length: u32::MAX })
    );

    let mut b = good.clone();
    b[300] ^= 1;
    assert!(matches!(Superblock::decode(&b), Err(SbError::BadCrc { .. })));
    let mut b = good.clone();
    b[16] ^= 0x80;
    let stored = u32::from_le_bytes(b[16..20].try_into().unwrap());
    let computed = u32::from_le_bytes(good[16..20].try_into().unwrap());
    assert_eq!(Superblock::decode(&b), Err(SbError::BadCrc { stored, computed }));

    assert_eq!(
        decode_edited(|b| b[8] = 2),
        Err(SbError::UnsupportedVersion { major: 2, minor: 0 })
    );
    assert_eq!(
        decode_edited(|b| b[8..10].copy_from_slice(&0u16.to_le_bytes())),
        Err(SbError::UnsupportedVersion { major: 0, minor: 0 })
    );
    assert_eq!(
        decode_edited(|b| {
            b[136] = 4;
            b[255] = 4;
        }),
        Err(SbError::RecordsPastLength {
            records: 4,
            needed: 512,
            length: 448
        })
    );
    assert_eq!(
        decode_edited(|b| b[255] = 2),
        Err(SbError::TooFewBaseRecords {
            records: 2,
            num_base_bdevs: 3
        })
    );
    assert_eq!(
        decode_edited(|b| {
            b[12..16].copy_from_slice(&512u32.to_le_bytes());
            b[255] = 4;
        }),
        Err(SbError::TooManyBaseRecords {
            records: 4,
            num_base_bdevs: 3
        })
    );
    assert_eq!(
        decode_edited(|b| b[40..104].fill(b'x')),
        Err(SbError::NameNotTerminated)
    );
    assert_eq!(
        decode_edited(|b| b[41] = 0xff),
        Err(SbError::NameNotUtf8 {
            bytes: vec![b'R', 0xff, b'i', b'd', b'0']
        })
    );
    assert_eq!(decode_edited(|b| b[116] = 2), Err(SbError::UnknownLevel { level: 2 }));
    assert_eq!(decode_edited(|b| b[112..116].fill(0)), Err(SbError::ZeroBlockSize));
    assert_eq!(decode_edited(|b| b[24..40].fill(0)), Err(SbError::NullUuid));
    assert_eq!(
        decode_edited(|b| b[352] = 9),
        Err(SbError::UnknownBaseState { index: 1, state: 9 })
    );
    assert_eq!(
        decode_edited(|b| b[360] = 3),
        Err(SbError::SlotOutOfRange {
            index: 1,
            slot: 3,
            num_base_bdevs: 3
        })
    );
    assert_eq!(
        decode_edited(|b| b[424] = 0),
        Err(SbError::DuplicateSlot { index: 2, slot: 0 })
    );
    assert_eq!(
        decode_edited(|b| {
            let first = base_uuid(1);
            b[384..400].copy_from_slice(&first);
            b[416] = 1; // CONFIGURED
        }),
        Err(SbError::DuplicateBaseUuid {
            index: 2,
            uuid: UuidText(base_uuid(1))
        })
    );
    // The same uuid in a MISSING record beside its CONFIGURED one is allowed
    // (a member taken out, then added back in another slot).
    let sb = decode_edited(|b| b[384..400].copy_from_slice(&base_uuid(1))).unwrap();
    assert_eq!(sb.base_bdevs[2].uuid, base_uuid(1));
}

#[test]
fn a_new_raid1_reserves_one_mib_and_takes_the_smallest_base() {
    let bases = [(base_uuid(1), 4096), (base_uuid(2), 3000), (base_uuid(3), 5000)];
    let sb = Superblock::new_raid1(RAID_UUID, "Vol", 512, &bases).unwrap();
    assert_eq!(sb.seq_number, 0);
    assert_eq!((sb.level, sb.strip_size, sb.block_size), (RaidLevel::Raid1, 0, 512));
    assert_eq!(sb.raid_size, 3000 - 2048);
    for (slot, base) in sb.base_bdevs.iter().enumerate() {
        assert_eq!(
            *base,
            SbBaseBdev {
                uuid: base_uuid(slot as u8 + 1),
                data_offset: 2048,
                data_size: 952,
                state: SbBaseState::Configured,
                slot: slot as u8,
            }
        );
    }
    assert_eq!(
        Superblock::new_raid1(RAID_UUID, "Vol", 4096, &[(base_uuid(1), 300), (base_uuid(2), 256)]),
        Err(SbError::BaseTooSmall {
            index: 1,
            num_blocks: 256,
            data_offset: 256
        })
    );
    assert_eq!(
        Superblock::new_raid1(RAID_UUID, "Vol", 512, &[]),
        Err(SbError::NoBaseBdevs)
    );
    assert_eq!(
        Superblock::new_raid1([0; 16], "Vol", 512, &bases),
        Err(SbError::NullUuid)
    );
}

#[test]
fn encode_errors() {
    let e = |edit: &dyn Fn(&mut Superblock)| {
        let mut sb = sample();
        edit(&mut sb);
        sb.encode(512)
    };
    assert_eq!(sample().encode(0), Err(SbError::ZeroBlockSize));
    assert_eq!(e(&|sb| sb.block_size = 0), Err(SbError::ZeroBlockSize));
    assert_eq!(e(&|sb| sb.uuid = [0; 16]), Err(SbError::NullUuid));
    assert_eq!(e(&|sb| sb.name = "x".repeat(64)), Err(SbError::NameTooLong { len: 64 }));
    assert_eq!(e(&|sb| sb.name = "a\0b".into()), Err(SbError::NameHasNul));
    assert_eq!(
        e(&|sb| sb.base_bdevs[0].slot = 3),
        Err(SbError::SlotOutOfRange {
            index: 0,
            slot: 3,
            num_base_bdevs: 3
        })
    );
    assert_eq!(
        e(&|sb| sb.base_bdevs[1].slot = 0),
        Err(SbError::DuplicateSlot { index: 1, slot: 0 })
    );
    assert_eq!(
        e(&|sb| {
            sb.base_bdevs[1].uuid = base_uuid(1);
            sb.base_bdevs[1].state = SbBaseState::Configured;
        }),
        Err(SbError::DuplicateBaseUuid {
            index: 1,
            uuid: UuidText(base_uuid(1))
        })
    );
    assert_eq!(
        e(&|sb| {
            let record = sb.base_bdevs[0].clone();
            sb.base_bdevs = vec![record; 256];
        }),
        Err(SbError::TooManyBaseBdevs { count: 256 })
    );
}

#[test]
fn errors_read_clearly() {
    assert_eq!(
        SbError::BadCrc {
            stored: 1,
            computed: 0xabc
        }
        .to_string(),
        "superblock crc mismatch: stored 0x00000001, computed 0x00000abc"
    );
    assert_eq!(
        SbError::Truncated { needed: 448, have: 256 }.to_string(),
        "superblock truncated: it needs 448 bytes, the buffer has 256"
    );
    assert_eq!(
        SbError::UnsupportedVersion { major: 2, minor: 1 }.to_string(),
        "unsupported superblock version 2.1 (major 1 is supported)"
    );
}

/// xorshift64*: a fixed pseudo-random sequence for the mutation test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn decode_never_panics_on_mutated_superblocks() {
    // Mutations of a valid superblock, half of them with the CRC repaired
    // so decoding gets past it; every outcome is Ok or an error, and an Ok
    // re-encodes to a superblock that decodes the same.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let base = sample_bytes_by_hand(512);
    let mut oks = 0;
    for round in 0..20_000 {
        let mut b = base.clone();
        for _ in 0..=rng.below(4) {
            let at = match rng.below(3) {
                0 => rng.below(b.len()),
                // Favour the header's counts, length and version.
                1 => [8, 12, 13, 14, 15, 136, 255, 116, 40, 103][rng.below(10)],
                _ => 256 + rng.below(192),
            };
            b[at] = rng.next() as u8;
        }
        if round % 2 == 0 {
            let len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
            if (256..=b.len()).contains(&len) {
                refresh_crc(&mut b);
            }
        }
        let cut = if rng.below(8) == 0 {
            rng.below(b.len() + 1)
        } else {
            b.len()
        };
        if let Ok(sb) = Superblock::decode(&b[..cut]) {
            oks += 1;
            assert_eq!(Superblock::decode(&sb.encode(512).unwrap()).unwrap(), sb);
        }
    }
    // Some mutations keep a valid superblock (e.g. a data_size byte).
    assert!(oks > 100, "{oks}");
    // Random bytes with the signature.
    for _ in 0..5_000 {
        let len = rng.below(1200);
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 8 {
            b[..8].copy_from_slice(b"SPDKRAID");
        }
        let _ = Superblock::decode(&b);
    }
}

// ---- assembly ----

fn three_way(seq: u64) -> Superblock {
    Superblock {
        uuid: RAID_UUID,
        name: "Volume0".into(),
        seq_number: seq,
        level: RaidLevel::Raid1,
        strip_size: 0,
        block_size: 4096,
        raid_size: 1000,
        base_bdevs: (0..3)
            .map(|slot| SbBaseBdev {
                uuid: base_uuid(slot + 1),
                data_offset: 256,
                data_size: 1000,
                state: SbBaseState::Configured,
                slot,
            })
            .collect(),
    }
}

fn with_state(mut sb: Superblock, slot: u8, state: SbBaseState) -> Superblock {
    sb.base_bdevs[usize::from(slot)].state = state;
    sb
}

#[test]
fn all_members_fresh() {
    let sb = three_way(4);
    let found = [
        (base_uuid(1), sb.clone()),
        (base_uuid(2), sb.clone()),
        (base_uuid(3), sb.clone()),
    ];
    let a = assemble(&found).unwrap();
    assert_eq!(a.superblock, sb);
    assert_eq!(
        a.in_sync().collect::<Vec<_>>(),
        vec![(0, base_uuid(1)), (1, base_uuid(2)), (2, base_uuid(3))]
    );
    assert_eq!(a.stale().count(), 0);
    assert_eq!(a.missing().count(), 0);
}

#[test]
fn a_member_with_an_older_superblock_is_stale_even_if_recorded_configured() {
    let found = [
        (base_uuid(3), three_way(4)),
        (base_uuid(1), three_way(5)),
        (base_uuid(2), three_way(5)),
    ];
    let a = assemble(&found).unwrap();
    assert_eq!(a.superblock.seq_number, 5);
    assert_eq!(
        a.slots[2],
        SlotState::Stale {
            base_uuid: base_uuid(3),
            reason: StaleReason::OlderSuperblock {
                seq_number: 4,
                newest: 5
            },
        }
    );
    assert_eq!(
        a.in_sync().collect::<Vec<_>>(),
        vec![(0, base_uuid(1)), (1, base_uuid(2))]
    );
}

#[test]
fn the_newest_superblock_on_one_base_only_wins() {
    // An update that reached one member before a crash: the others are
    // suspect (rule 4) and get rebuilt from the one that has it.
    let found = [
        (base_uuid(1), three_way(6)),
        (base_uuid(2), three_way(5)),
        (base_uuid(3), three_way(5)),
    ];
    let a = assemble(&found).unwrap();
    assert_eq!(a.in_sync().collect::<Vec<_>>(), vec![(0, base_uuid(1))]);
    assert_eq!(
        a.stale().collect::<Vec<_>>(),
        vec![(1, base_uuid(2)), (2, base_uuid(3))]
    );
}

#[test]
fn a_member_recorded_failed_or_missing_is_stale() {
    // Slot 2 failed at seq 5 (recorded by the two others); its base comes
    // back with its own seq 4 superblock, which still calls it CONFIGURED.
    let newest = with_state(
        with_state(three_way(5), 2, SbBaseState::Failed),
        1,
        SbBaseState::Missing,
    );
    let found = [
        (base_uuid(1), newest.clone()),
        (base_uuid(2), three_way(3)),
        (base_uuid(3), three_way(4)),
    ];
    let a = assemble(&found).unwrap();
    assert_eq!(a.superblock, newest);
    assert_eq!(
        a.slots[0],
        SlotState::InSync {
            base_uuid: base_uuid(1)
        }
    );
    assert_eq!(
        a.slots[1],
        SlotState::Stale {
            base_uuid: base_uuid(2),
            reason: StaleReason::Recorded(SbBaseState::Missing),
        }
    );
    assert_eq!(
        a.slots[2],
        SlotState::Stale {
            base_uuid: base_uuid(3),
            reason: StaleReason::Recorded(SbBaseState::Failed),
        }
    );
    // Recorded FAILED with the newest superblock on it too (it was written
    // while the base was still reachable): still stale.
    let found = [(base_uuid(1), newest.clone()), (base_uuid(3), newest.clone())];
    let a = assemble(&found).unwrap();
    assert!(matches!(
        a.slots[2],
        SlotState::Stale {
            reason: StaleReason::Recorded(SbBaseState::Failed),
            ..
        }
    ));
}

#[test]
fn absent_members_are_missing_with_their_record() {
    let newest = with_state(three_way(7), 2, SbBaseState::Failed);
    let a = assemble(&[(base_uuid(2), newest.clone())]).unwrap();
    assert_eq!(a.in_sync().collect::<Vec<_>>(), vec![(1, base_uuid(2))]);
    assert_eq!(a.missing().collect::<Vec<_>>(), vec![0, 2]);
    assert_eq!(
        a.slots[0],
        SlotState::Missing {
            record: newest.base_bdevs[0].clone()
        }
    );
    match &a.slots[2] {
        SlotState::Missing { record } => assert_eq!(record.state, SbBaseState::Failed),
        other => panic!("{other:?}"),
    }
}

#[test]
fn records_out_of_slot_order_map_to_their_slots() {
    let mut sb = three_way(2);
    sb.base_bdevs.reverse();
    let a = assemble(&[(base_uuid(3), sb.clone())]).unwrap();
    assert_eq!(
        a.slots[2],
        SlotState::InSync {
            base_uuid: base_uuid(3)
        }
    );
    assert_eq!(
        a.slots
            .iter()
            .map(|s| match s {
                SlotState::Missing { record } => Some(record.slot),
                _ => None,
            })
            .collect::<Vec<_>>(),
        vec![Some(0), Some(1), None]
    );
}

#[test]
fn a_replaced_member_is_not_a_member() {
    // Slot 2's base 3 failed and was replaced by base 4 (seq 9); base 3
    // comes back with its old superblock.
    let mut newest = three_way(9);
    newest.base_bdevs[2].uuid = base_uuid(4);
    let found = [
        (base_uuid(1), newest.clone()),
        (base_uuid(3), three_way(6)),
        (base_uuid(2), newest.clone()),
    ];
    assert_eq!(
        assemble(&found),
        Err(AssembleError::NotAMember {
            base: UuidText(base_uuid(3)),
            raid: UuidText(RAID_UUID),
            seq_number: 9,
        })
    );
    // Without it: base 4 is missing.
    let a = assemble(&[found[0].clone(), found[2].clone()]).unwrap();
    assert_eq!(a.missing().collect::<Vec<_>>(), vec![2]);
}

#[test]
fn a_member_added_back_in_another_slot_matches_its_active_record() {
    // Base 1 was removed from slot 0 (record MISSING, uuid kept) and added
    // back into slot 2, rebuilt: its CONFIGURED record is the one that counts.
    let mut newest = with_state(three_way(8), 0, SbBaseState::Missing);
    newest.base_bdevs[2].uuid = base_uuid(1);
    let found = [(base_uuid(1), newest.clone()), (base_uuid(2), newest.clone())];
    let a = assemble(&found).unwrap();
    assert_eq!(
        a.in_sync().collect::<Vec<_>>(),
        vec![(1, base_uuid(2)), (2, base_uuid(1))]
    );
    assert_eq!(a.missing().collect::<Vec<_>>(), vec![0]);
}

#[test]
fn the_decision_does_not_depend_on_the_order() {
    let newest = with_state(three_way(5), 1, SbBaseState::Failed);
    let found = [
        (base_uuid(1), three_way(4)),
        (base_uuid(2), three_way(4)),
        (base_uuid(3), newest),
    ];
    let expected = assemble(&found).unwrap();
    for order in [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
        let shuffled: Vec<_> = order.iter().map(|&i| found[i].clone()).collect();
        assert_eq!(assemble(&shuffled).unwrap(), expected, "{order:?}");
    }
}

#[test]
fn assemble_errors() {
    assert_eq!(assemble(&[]), Err(AssembleError::Empty));

    let mut other = three_way(5);
    other.uuid[0] ^= 1;
    assert_eq!(
        assemble(&[(base_uuid(1), three_way(5)), (base_uuid(2), other.clone())]),
        Err(AssembleError::MixedRaids {
            expected: UuidText(RAID_UUID),
            found: UuidText(other.uuid),
            base: UuidText(base_uuid(2)),
        })
    );

    let mut renamed = three_way(5);
    renamed.name = "Other".into();
    assert_eq!(
        assemble(&[
            (base_uuid(1), three_way(5)),
            (base_uuid(2), three_way(4)),
            (base_uuid(3), renamed)
        ]),
        Err(AssembleError::ConflictingSuperblocks {
            seq_number: 5,
            first: UuidText(base_uuid(1)),
            second: UuidText(base_uuid(3)),
        })
    );
    // A conflict below the newest seq_number is still two writers.
    let failed = with_state(three_way(4), 0, SbBaseState::Failed);
    assert!(matches!(
        assemble(&[
            (base_uuid(1), three_way(5)),
            (base_uuid(2), three_way(4)),
            (base_uuid(3), failed)
        ]),
        Err(AssembleError::ConflictingSuperblocks { seq_number: 4, .. })
    ));

    assert_eq!(
        assemble(&[(base_uuid(1), three_way(5)), (base_uuid(1), three_way(5))]),
        Err(AssembleError::DuplicateBase {
            base: UuidText(base_uuid(1))
        })
    );
    assert_eq!(assemble(&[([0; 16], three_way(5))]), Err(AssembleError::NullBaseUuid));

    let mut bad = three_way(5);
    bad.base_bdevs[1].slot = 0;
    assert_eq!(
        assemble(&[(base_uuid(1), bad)]),
        Err(AssembleError::InvalidSuperblock {
            base: UuidText(base_uuid(1)),
            error: SbError::DuplicateSlot { index: 1, slot: 0 },
        })
    );

    assert_eq!(
        assemble(&[(base_uuid(9), three_way(5))]),
        Err(AssembleError::NotAMember {
            base: UuidText(base_uuid(9)),
            raid: UuidText(RAID_UUID),
            seq_number: 5,
        })
    );
}

#[test]
fn grouping_by_raid() {
    let mut other = three_way(1);
    other.uuid = [7; 16];
    let groups = group_by_raid(vec![
        (base_uuid(1), three_way(5)),
        (base_uuid(3), other.clone()),
        (base_uuid(2), three_way(4)),
    ]);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].0, RAID_UUID);
    assert_eq!(
        groups[0]
            .1
            .iter()
            .map(|(b, sb)| (*b, sb.seq_number))
            .collect::<Vec<_>>(),
        vec![(base_uuid(1), 5), (base_uuid(2), 4)]
    );
    assert_eq!(groups[1], ([7; 16], vec![(base_uuid(3), other)]));
    for (_, members) in &groups {
        assert!(assemble(members).is_ok());
    }
}
