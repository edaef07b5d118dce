//! Each command's SQE against the byte offsets its specification gives:
//! dword `n` is bytes `4n..4n+4`, little-endian, so CDW10 starts at byte
//! 40, CDW11 at 44, CDW12 at 48, CDW13 at 52. The expected SQEs below are
//! written byte by byte from those layouts, not built with the code under test.

use super::*;

/// An expected SQE: zeroes with `bytes` at their offsets.
fn expect(bytes: &[(usize, &[u8])]) -> [u8; 64] {
    let mut e = [0u8; 64];
    for (at, b) in bytes {
        e[*at..*at + b.len()].copy_from_slice(b);
    }
    e
}

#[test]
fn read_puts_slba_in_cdw10_11_and_a_0s_based_nlb_in_cdw12() {
    let s = Rw::new(7, 0x0123_4567_89AB_CDEF, 8).encode(io_opc::READ);
    let e = expect(&[
        (0, &[0x02]),
        (4, &[7, 0, 0, 0]),
        (40, &[0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01]),
        // Eight blocks: NLB 7.
        (48, &[7, 0]),
    ]);
    assert_eq!(s.0, e);
    let w = Rw::new(1, 2, 1).encode(io_opc::WRITE);
    assert_eq!(w.0, expect(&[(0, &[0x01]), (4, &[1, 0, 0, 0]), (40, &[2])]));
}

#[test]
fn rw_reads_nlb_from_cdw12_bits_15_0_only() {
    // NLB FFFFh with LR (bit 31), FUA (bit 30) and bit 16 set around it.
    let s = Sqe(expect(&[
        (0, &[0x02]),
        (4, &[9, 0, 0, 0]),
        (40, &[1, 0, 0, 0, 2, 0, 0, 0]),
        (48, &[0xFF, 0xFF, 0x01, 0xC0]),
    ]));
    let rw = Rw::parse(&s);
    assert_eq!(
        rw,
        Rw {
            nsid: 9,
            slba: 0x2_0000_0001,
            nlb: 0xFFFF
        }
    );
    assert_eq!(rw.blocks(), 65_536);
    assert_eq!(Rw::new(9, 0, Rw::MAX_BLOCKS).nlb, 0xFFFF);
    assert_eq!(Rw::new(9, 0, 1).nlb, 0);
}

#[test]
fn write_zeroes_deac_is_cdw12_bit_25() {
    let wz = WriteZeroes {
        range: Rw::new(1, 0x10, 2),
        deac: true,
    };
    // Bit 25 of CDW12 is bit 1 of byte 48 + 3.
    let e = expect(&[(0, &[0x08]), (4, &[1, 0, 0, 0]), (40, &[0x10]), (48, &[1, 0, 0, 0x02])]);
    assert_eq!(wz.encode().0, e);
    assert_eq!(WriteZeroes::parse(&wz.encode()), wz);
}

#[test]
fn flush_keep_alive_and_aer_carry_an_opcode_and_nsid_only() {
    assert_eq!(
        Flush { nsid: NSID_ALL }.encode().0,
        expect(&[(0, &[0x00]), (4, &[0xFF; 4])])
    );
    assert_eq!(KeepAlive.encode().0, expect(&[(0, &[0x18])]));
    assert_eq!(AsyncEventRequest.encode().0, expect(&[(0, &[0x0C])]));
}

#[test]
fn dataset_management_nr_is_cdw10_bits_7_0_and_deallocate_cdw11_bit_2() {
    let d = DatasetManagement {
        nsid: 3,
        nr: 0,
        ad: true,
        idw: false,
        idr: false,
    };
    assert_eq!(
        d.encode().0,
        expect(&[(0, &[0x09]), (4, &[3, 0, 0, 0]), (44, &[0x04, 0, 0, 0])])
    );
    assert_eq!(d.ranges(), 1);
    let all = DatasetManagement {
        nsid: 3,
        nr: 0xFF,
        ad: true,
        idw: true,
        idr: true,
    };
    assert_eq!(
        all.encode().0,
        expect(&[(0, &[0x09]), (4, &[3, 0, 0, 0]), (40, &[0xFF]), (44, &[0x07])])
    );
    assert_eq!(DatasetManagement::parse(&all.encode()), all);
    assert_eq!(all.ranges(), 256);
}

#[test]
fn a_dsm_range_is_context_attributes_length_and_slba() {
    let r = DsmRange {
        cattr: 0x0102_0304,
        nlb: 8,
        slba: 0x0A0B_0C0D_0E0F_1011,
    };
    let b: [u8; 16] = [4, 3, 2, 1, 8, 0, 0, 0, 0x11, 0x10, 0x0F, 0x0E, 0x0D, 0x0C, 0x0B, 0x0A];
    assert_eq!(r.encode(), b);
    assert_eq!(DsmRange::parse(&b), r);
}

#[test]
fn identify_cns_is_cdw10_bits_7_0_and_cntid_bits_31_16() {
    let id = Identify {
        cns: cns::ACTIVE_NAMESPACES,
        cntid: 0x1234,
        nsid: 5,
    };
    assert_eq!(
        id.encode().0,
        expect(&[(0, &[0x06]), (4, &[5, 0, 0, 0]), (40, &[0x02, 0, 0x34, 0x12])])
    );
    assert_eq!(Identify::parse(&id.encode()), id);
    assert_eq!(
        (cns::NAMESPACE, cns::CONTROLLER, cns::NAMESPACE_DESCRIPTORS),
        (0x00, 0x01, 0x03)
    );
}

#[test]
fn get_log_page_splits_numd_over_cdw10_and_cdw11() {
    // 4 KiB of the Changed Namespace List: NUMD 1023 (3FFh) in NUMDL.
    let g = GetLogPage::new(NSID_ALL, lid::CHANGED_NS, 4096);
    assert_eq!(
        g.encode().0,
        expect(&[(0, &[0x02]), (4, &[0xFF; 4]), (40, &[0x04, 0x00, 0xFF, 0x03])])
    );
    assert_eq!(g.len(), 4096);
    // Every field: NUMD 0001_0002h (NUMDU 1, NUMDL 2), LSP 7Fh (bits 14:08),
    // RAE (bit 15), LPO 1_0000_0010h.
    let big = GetLogPage {
        nsid: 1,
        lid: lid::SMART,
        lsp: 0x7F,
        rae: true,
        numd: 0x0001_0002,
        lpo: 0x1_0000_0010,
    };
    let e = expect(&[
        (0, &[0x02]),
        (4, &[1, 0, 0, 0]),
        (40, &[0x02, 0xFF, 0x02, 0x00]),
        (44, &[0x01, 0x00, 0x00, 0x00]),
        (48, &[0x10, 0, 0, 0, 0x01, 0, 0, 0]),
    ]);
    assert_eq!(big.encode().0, e);
    assert_eq!(GetLogPage::parse(&Sqe(e)), big);
    assert_eq!(big.len(), (0x0001_0002 + 1) * 4);
}

#[test]
fn set_features_fid_sv_and_cdw11() {
    let q = NumberOfQueues { nsq: 3, ncq: 5 };
    let f = Features::set(fid::NUMBER_OF_QUEUES, q.dword());
    // FID 07h in CDW10 bits 07:00; NSQR in CDW11 bits 15:00, NCQR in 31:16.
    let e = expect(&[(0, &[0x09]), (40, &[0x07]), (44, &[3, 0, 5, 0])]);
    assert_eq!(f.encode(admin_opc::SET_FEATURES).0, e);
    assert_eq!(NumberOfQueues::from_dword(Features::parse(&Sqe(e)).cdw11), q);
    // Save is bit 31 of CDW10: bit 7 of byte 43.
    let saved = Features { sv: true, ..f };
    assert_eq!(saved.encode(admin_opc::SET_FEATURES).0[40..44], [0x07, 0, 0, 0x80]);
    assert_eq!(Features::parse(&saved.encode(admin_opc::SET_FEATURES)), saved);
}

#[test]
fn get_features_sel_is_cdw10_bits_10_8() {
    let f = Features {
        sel: 3,
        ..Features::get(fid::KEEP_ALIVE_TIMER)
    };
    assert_eq!(
        f.encode(admin_opc::GET_FEATURES).0,
        expect(&[(0, &[0x0A]), (40, &[0x0F, 0x03])])
    );
    assert_eq!(Features::parse(&f.encode(admin_opc::GET_FEATURES)), f);
    assert_eq!(fid::ASYNC_EVENT_CONFIGURATION, 0x0B);
}

#[test]
fn aec_and_async_event_values_are_the_specifications() {
    // Bit 8 of the Asynchronous Event Configuration: Namespace Attribute Notices.
    assert_eq!(aec::NAMESPACE_ATTRIBUTE, 0x0000_0100);
    assert_eq!(aec::DISCOVERY_LOG_PAGE_CHANGE, 0x8000_0000);
    // Namespace Attribute Changed: type Notice (2h), information 00h, log page 04h.
    let e = AsyncEvent {
        kind: event_type::NOTICE,
        info: notice::NAMESPACE_ATTRIBUTE_CHANGED,
        lid: lid::CHANGED_NS,
    };
    assert_eq!(e.dw0(), 0x0004_0002);
    assert_eq!(AsyncEvent::from_dw0(0x0004_0002), e);
    assert_eq!(
        AsyncEvent::from_dw0(0x0070_F002),
        AsyncEvent {
            kind: event_type::NOTICE,
            info: notice::DISCOVERY_LOG_PAGE_CHANGE,
            lid: lid::DISCOVERY
        }
    );
}

#[test]
fn abort_sqid_is_cdw10_bits_15_0_and_cid_bits_31_16() {
    let a = Abort { sqid: 1, cid: 0xBEEF };
    assert_eq!(a.encode().0, expect(&[(0, &[0x08]), (40, &[0x01, 0x00, 0xEF, 0xBE])]));
    assert_eq!(Abort::parse(&a.encode()), a);
}
