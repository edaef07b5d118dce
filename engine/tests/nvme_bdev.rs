//! The initiator as a bdev: a host writes to target A, whose namespace is
//! an NVMe bdev reaching target B's RAM namespace over NVMe/TCP. What the
//! host wrote must be on B (read back directly from B), and reads through
//! A must return B's data, including transfers split at B's limits.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use lull_engine::bdev::Bdev;
use lull_engine::initiator::{NvmeBdev, NvmeController, NvmeOptions, NvmeTrid};
use lull_engine::nvmf::subsystem::Subsystem;
use lull_engine::nvmf::target::Target;
use lull_proto::nvme::{Sqe, io_opc};
use lull_proto::pdu::Digests;
use lull_proto::target_queue::TargetQueueConfig;
use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};
use lull_transport::host_sync::SyncQueue;

const A_NQN: &str = "nqn.2024-01.test:passthrough";

fn rw(opc: u8, nsid: u32, slba: u64, nlb: u32) -> Sqe {
    let mut sqe = Sqe([0; 64]);
    sqe.0[0] = opc;
    sqe.0[4..8].copy_from_slice(&nsid.to_le_bytes());
    sqe.set_cdw(10, slba as u32);
    sqe.set_cdw(11, (slba >> 32) as u32);
    sqe.set_cdw(12, nlb - 1);
    sqe
}

fn io_queue(addr: std::net::SocketAddr, nqn: &str) -> (SyncQueue, SyncQueue) {
    let (admin, cntlid) = SyncQueue::admin(addr, nqn, HOSTNQN, Digests::default(), 30_000).unwrap();
    let io = SyncQueue::io(addr, nqn, HOSTNQN, cntlid, Digests::default(), 4096).unwrap();
    (admin, io)
}

#[test]
fn a_target_serves_a_remote_namespace_through_the_initiator() {
    for mode in [Mode::Interrupt, Mode::Poll] {
        let b = target(mode);
        let cores: Vec<usize> = CoreList::usable().unwrap().cores().iter().copied().take(2).collect();
        let reactors = Reactors::start(ReactorConfig::new(CoreList::try_from(cores).unwrap()).mode(mode)).unwrap();
        let opts = NvmeOptions {
            nvme_ioq_poll_period_us: 0,
            ..NvmeOptions::default().no_reconnect()
        };
        // One I/O queue per reactor of A, so every connection of A finds one.
        let n = reactors.handles().len() as u16;
        let ctrlr = NvmeController::attach(
            "Nvme0",
            NvmeTrid::new(b.addr, SUBNQN, HOSTNQN),
            opts,
            reactors.handles(),
            n,
        )
        .unwrap();
        let bdev = NvmeBdev::new("Nvme0n1", ctrlr.clone(), 1).unwrap();
        assert_eq!((bdev.info().block_size, bdev.info().num_blocks), (512, NS1_BLOCKS));
        assert!(NvmeBdev::new("Nvme0n9", ctrlr.clone(), 9).is_err());
        let a = Target::new(TargetQueueConfig::default());
        let s = Subsystem::new(A_NQN, "SNPASS", "lull passthrough").unwrap();
        s.set_allow_any_host(true);
        s.add_namespace(1, Arc::new(bdev) as Arc<dyn Bdev>).unwrap();
        a.add_subsystem(s).unwrap();
        let a_addr = a.listen(&reactors, "127.0.0.1:0".parse().unwrap()).unwrap();

        let (_aa, mut host) = io_queue(a_addr, A_NQN);
        // 128 KiB (the MDTS) at LBA 2048: through A's R2T path and on to B.
        let data: Vec<u8> = (0..128 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        host.call("write via A", rw(io_opc::WRITE, 1, 2048, 256), &data, 0)
            .unwrap();
        let (_ba, mut direct) = io_queue(b.addr, SUBNQN);
        let on_b = direct
            .call("read from B", rw(io_opc::READ, 1, 2048, 256), &[], 128 * 1024)
            .unwrap()
            .data;
        assert!(on_b == data, "{mode}: B holds what the host wrote through A");
        let via_a = host
            .call("read via A", rw(io_opc::READ, 1, 2048, 256), &[], 128 * 1024)
            .unwrap()
            .data;
        assert!(via_a == data, "{mode}: A returns B's data");
        // Write Zeroes and Flush pass through.
        host.call("zeroes via A", rw(io_opc::WRITE_ZEROES, 1, 2048, 8), &[], 0)
            .unwrap();
        let z = direct
            .call("read from B", rw(io_opc::READ, 1, 2048, 8), &[], 4096)
            .unwrap()
            .data;
        assert!(z.iter().all(|&x| x == 0));
        let mut flush = Sqe([0; 64]);
        flush.0[0] = io_opc::FLUSH;
        flush.0[4..8].copy_from_slice(&1u32.to_le_bytes());
        host.call("flush via A", flush, &[], 0).unwrap();
        // Out of range on A's side is refused by A (LBA Out of Range), B untouched.
        let e = host
            .call("beyond", rw(io_opc::READ, 1, NS1_BLOCKS, 1), &[], 512)
            .unwrap_err();
        assert!(
            e.to_string().contains("0x80") || e.to_string().to_lowercase().contains("range"),
            "{e}"
        );
        // B going away fails A's I/O with an error status, not a hang.
        // A's counters count reads that succeeded, when they complete.
        let reads_on_a = || {
            (0..reactors.handles().len())
                .map(|i| a.core_io(i).reads.load(std::sync::atomic::Ordering::Relaxed))
                .sum::<u64>()
        };
        let counted = reads_on_a();
        ctrlr.detach();
        let e = host.call("after detach", rw(io_opc::READ, 1, 0, 1), &[], 512);
        assert!(e.is_err(), "{mode}: a read through a detached controller fails");
        assert_eq!(reads_on_a(), counted, "{mode}: a failed read is not counted");
        drop(host);
        std::thread::sleep(Duration::from_millis(50));
        reactors.shutdown().unwrap();
        b.reactors.shutdown().unwrap();
    }
}
