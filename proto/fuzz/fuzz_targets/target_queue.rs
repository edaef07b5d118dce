//! Fuzzes the target queue-pair state machine: arbitrary bytes, fed in
//! arbitrary segments as a connection reads them (straight into a
//! transfer's buffer while the queue offers one, else as much as it asks
//! for), after an optional good handshake, with commands completed (with
//! data in a buffer, copied from a read source (a range it holds, or one
//! past its end), without, or not at all) as the engine would, and the
//! output sent in writes of arbitrary sizes (`send_with`).
//!
//! Invariants checked: no panic; after a fatal error a C2HTermReq ends the
//! output and nothing more is parsed; the receive buffer never holds
//! more than was fed; every PDU the target emits is well formed (PLEN covers
//! it, HLEN matches its type).

#![no_main]

use libfuzzer_sys::fuzz_target;
use lull_proto::nvme::Cqe;
use lull_proto::pdu::{CommonHeader, PduType};
use lull_proto::read_source::{ReadSource, SourceRange, SourceRangeError};
use lull_proto::target_queue::{QueueParams, Response, TargetQueue, TargetQueueConfig};

/// A 256 KiB source of 5Ah bytes, as a memory bdev, which lends (as
/// copies: the trait's default) so that reads of 4 KiB and more are queued
/// as lent ranges and sent through `send_with`.
struct Memory;

const MEMORY: u64 = 256 * 1024;

impl ReadSource for Memory {
    fn copy_to(&self, at: u64, dst: &mut [u8]) -> Result<(), SourceRangeError> {
        if at.checked_add(dst.len() as u64).is_none_or(|end| end > MEMORY) {
            return Err(SourceRangeError {
                at,
                len: dst.len(),
                size: MEMORY,
            });
        }
        dst.fill(0x5A);
        Ok(())
    }

    fn size(&self) -> u64 {
        MEMORY
    }

    fn lends(&self) -> bool {
        true
    }
}

fn check_output(out: &[u8], failed: bool) {
    let mut at = 0;
    let mut last_type = None;
    while at < out.len() {
        let ch = CommonHeader::parse(&out[at..]).expect("whole CH");
        let t = PduType::from_u8(ch.pdu_type).expect("known type");
        assert!(!t.is_host_to_controller(), "target sent a host PDU");
        assert_eq!(ch.hlen as usize, t.hlen());
        assert!(ch.plen as usize >= t.hlen());
        at += ch.plen as usize;
        last_type = Some(t);
    }
    assert_eq!(at, out.len(), "PDUs tile the output");
    if failed {
        // A fatal error ends the output with its C2HTermReq.
        assert!(matches!(last_type, Some(PduType::C2HTermReq)));
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (ctl, body) = data.split_at(2);
    let mut q = TargetQueue::new(TargetQueueConfig {
        io_in_capsule_data: 4096,
        ..Default::default()
    });
    if ctl[0] & 0x80 != 0 {
        // Start from a live queue with the digests the first byte names.
        let mut ic = [0u8; 128];
        ic[..8].copy_from_slice(&[0, 0, 0x80, 0, 0x80, 0, 0, 0]);
        ic[11] = ctl[0] & 3;
        q.feed(&ic);
        q.process().expect("good ICReq");
        // What a Connect establishes (CID 0xFFFF: no command to complete).
        q.respond(Response::ok(0xFFFF).with_connected(QueueParams {
            qid: 1,
            sq_entries: 16 + u32::from(ctl[1] & 0x3F),
            sq_flow_control_disabled: ctl[0] & 0x40 != 0,
        }));
    }
    let seg = usize::from(ctl[1] >> 6) * 37 + 1;
    let mut fed = 0;
    let mut failed = false;
    for chunk in body.chunks(seg) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let n = match q.direct_buffer() {
                Some(room) => {
                    let n = room.fill_from(rest);
                    q.direct_received(n);
                    n
                }
                None => {
                    let n = q.recv_want(rest.len()).clamp(1, rest.len());
                    q.feed(&rest[..n]);
                    n
                }
            };
            rest = &rest[n..];
        }
        fed += chunk.len();
        let r = q.process();
        for (i, cmd) in q.take_requests().into_iter().enumerate() {
            let cqe = Cqe {
                cid: cmd.sqe.cid(),
                ..Default::default()
            };
            match (i + usize::from(ctl[0])) % 4 {
                0 => {
                    q.respond(cqe.into());
                }
                1 => {
                    let len = (cmd.c2h_len as usize).min(300_000);
                    q.respond(Response::with_data(cqe, vec![0xA5; len]));
                    let _ = q.take_spent_buffers();
                }
                2 => {
                    // From the source: within it, or (a long transfer) past its end,
                    // which must fail the command with nothing of it queued.
                    let len = (cmd.c2h_len as usize).min(300_000);
                    let at = u64::from(cmd.sqe.cdw(10)) % MEMORY;
                    q.respond(Response::with_source(
                        cqe,
                        SourceRange::new(std::sync::Arc::new(Memory), at, len),
                    ));
                }
                _ => {}
            }
        }
        let _ = q.take_events();
        assert!(q.buffered() <= fed);
        if r.is_err() {
            assert!(q.is_terminated());
            failed = true;
            break;
        }
        if q.is_terminated() {
            // The host's H2CTermReq ended it: nothing more is parsed.
            break;
        }
    }
    // Sent as the connection sends, in writes of a size the input picks.
    let step = usize::from(ctl[1]) * 97 + 1;
    let mut out = Vec::new();
    while q.wants_send() {
        let sent = q.send_with(|slices| {
            let mut took = 0;
            for s in slices {
                let k = s.len().min(step - took);
                out.extend_from_slice(&s[..k]);
                took += k;
                if took == step {
                    break;
                }
            }
            Ok(took)
        });
        assert!(matches!(sent, Ok(n) if n > 0), "a send that moved nothing: {sent:?}");
    }
    check_output(&out, failed);
});
