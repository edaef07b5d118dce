//! Fuzzes the host queue-pair state machine: arbitrary bytes from the
//! "target", fed in arbitrary segments, after an optional good ICResp.
//! Once the queue is live it has four commands in flight (a read, an
//! in-capsule write, a write whose data waits for R2Ts, a Flush), and what
//! it queues to send is handed to the socket before each segment, as a
//! connection would.
//!
//! Invariants checked: no panic; a fatal error from the target's bytes
//! ends the output with an H2CTermReq, and nothing more is parsed; no
//! H2CTermReq is sent otherwise (a C2HTermReq from the target is never
//! answered with one); every PDU the host emits is well formed (a
//! host-to-controller type, HLEN of its type, PLEN tiling the output);
//! every completion names a command in flight, once; a successful read
//! completes with every byte it asked for, a write or Flush with none.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lull_proto::host_queue::{HostError, HostQueue};
use lull_proto::nvme::cmd::{Flush, Rw};
use lull_proto::nvme::io_opc;
use lull_proto::pdu::{CommonHeader, Digests, IcResp, PduType};

/// The commands submitted once the queue is live: (CID, SQE, write bytes, read bytes).
fn commands(read_len: u32) -> [(u16, lull_proto::nvme::Sqe, usize, u32); 4] {
    let blocks = read_len / 512;
    [
        (1, Rw::new(1, 0, blocks).encode(io_opc::READ), 0, read_len),
        // In capsule: within the 4096-byte limit.
        (2, Rw::new(1, 8, 1).encode(io_opc::WRITE), 512, 0),
        // Over the limit: sent on the target's R2Ts.
        (3, Rw::new(1, 16, 16).encode(io_opc::WRITE), 8192, 0),
        (4, Flush { nsid: 1 }.encode(), 0, 0),
    ]
}

fn check_output(out: &[u8], failed: bool) {
    let mut at = 0;
    let mut last_type = None;
    let mut terms = 0;
    while at < out.len() {
        let ch = CommonHeader::parse(&out[at..]).expect("whole CH");
        let t = PduType::from_u8(ch.pdu_type).expect("known type");
        assert!(t.is_host_to_controller(), "host sent a controller PDU");
        assert_eq!(ch.hlen as usize, t.hlen());
        assert!(ch.plen as usize >= t.hlen());
        at += ch.plen as usize;
        terms += usize::from(t == PduType::H2CTermReq);
        last_type = Some(t);
    }
    assert_eq!(at, out.len(), "PDUs tile the output");
    if failed {
        // A fatal error ends the output with its H2CTermReq.
        assert!(matches!(last_type, Some(PduType::H2CTermReq)));
    } else {
        assert!(terms == 0, "an H2CTermReq without a fatal error");
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (ctl, body) = data.split_at(2);
    let digests = Digests::from_dgst(ctl[0] & 3);
    let read_len = 512 * (1 + u32::from(ctl[1] & 7));
    let mut h = HostQueue::new(digests, 4096);
    if ctl[0] & 0x80 != 0 {
        h.feed(
            &IcResp {
                pfv: 0,
                cpda: 0,
                digests,
                maxh2cdata: 4096 << (ctl[0] >> 4 & 3),
            }
            .encode(),
        );
        h.process().expect("good ICResp");
    }
    // Everything handed to the socket, in order.
    let mut wire = Vec::new();
    let mut submitted = false;
    let mut done = [false; 5];
    let mut failed = false;
    let seg = usize::from(ctl[1] >> 6) * 37 + 1;
    for chunk in body.chunks(seg) {
        if h.is_live() && !submitted {
            for (cid, mut sqe, write, read) in commands(read_len) {
                sqe.set_cid(cid);
                h.submit(sqe, &vec![0x5A; write], read)
                    .expect("a live queue takes the command");
            }
            submitted = true;
        }
        wire.extend_from_slice(h.pending_send());
        let n = h.pending_send().len();
        h.sent(n);
        h.feed(chunk);
        let r = h.process();
        for c in h.take_completions() {
            let cid = usize::from(c.cqe.cid);
            assert!(
                submitted && (1..=4).contains(&cid),
                "completion for CID {cid}, never submitted"
            );
            assert!(!done[cid], "CID {cid} completed twice");
            done[cid] = true;
            if c.cqe.status.is_success() {
                let want = if cid == 1 { read_len as usize } else { 0 };
                assert_eq!(c.data.len(), want, "CID {cid}: a success moves every byte");
            } else {
                assert!(c.data.is_empty(), "no data of a failed command is handed out");
            }
        }
        match r {
            Ok(()) => {}
            Err(HostError::Fatal(_)) => {
                assert!(h.is_terminated());
                failed = true;
                break;
            }
            Err(HostError::Terminated(_)) => {
                assert!(h.is_terminated());
                break;
            }
            Err(HostError::Submit(e)) => panic!("process returned a submit error: {e}"),
        }
    }
    if h.is_terminated() {
        // Nothing more is parsed, whatever follows.
        let before = h.pending_send().len();
        h.feed(body);
        assert!(h.process().is_ok());
        assert!(h.take_completions().is_empty());
        assert_eq!(h.pending_send().len(), before);
    }
    wire.extend_from_slice(h.pending_send());
    check_output(&wire, failed);
});
