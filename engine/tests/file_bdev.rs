//! The io_uring file bdev behind the target: every I/O command, data on
//! disk afterwards, and a reactor that sleeps between completions.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use lull_engine::bdev::{Bdev, FileBdev};
use lull_engine::nvmf::subsystem::Subsystem;
use lull_engine::nvmf::target::Target;
use lull_proto::nvme::{sgl_id, status};
use lull_proto::target_queue::TargetQueueConfig;
use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};

const BLOCKS: u64 = 32 * 2048;

fn file_target(mode: Mode, path: &std::path::Path) -> Tgt {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(BLOCKS * 512).unwrap();
    drop(f);
    let usable = CoreList::usable().unwrap();
    let reactors =
        Reactors::start(ReactorConfig::new(CoreList::try_from(vec![usable.cores()[0]]).unwrap()).mode(mode)).unwrap();
    let target = Target::new(TargetQueueConfig {
        io_in_capsule_data: 4096,
        ..Default::default()
    });
    let s = Subsystem::new(SUBNQN, "SNFILE", "lull file").unwrap();
    s.add_host(HOSTNQN).unwrap();
    let bdev: Arc<dyn Bdev> = Arc::new(FileBdev::open("File0", path, 512).unwrap());
    assert_eq!(bdev.info().product_name, "URING bdev");
    s.add_namespace(1, bdev).unwrap();
    target.add_subsystem(s).unwrap();
    let addr = target.listen(&reactors, "127.0.0.1:0".parse().unwrap()).unwrap();
    Tgt { reactors, target, addr }
}

#[test]
fn io_through_io_uring_reaches_the_file() {
    for mode in [Mode::Interrupt, Mode::Poll] {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("file-bdev-{mode}.img"));
        let t = file_target(mode, &path);
        let (_a, cntlid) = Host::admin(t.addr, 0, SUBNQN, 0);
        let mut io = Host::io(t.addr, 3, cntlid);
        for (lba, len, seed) in [(0u64, 4096usize, 1u8), (64, 8192, 2), (1024, 131072, 3)] {
            let data = pattern(len, seed);
            assert!(io.write(lba, &data).status.is_success(), "{mode}: write {len}");
            let (back, c) = io.read(lba, (len / 512) as u32);
            assert!(c.status.is_success() && back == data, "{mode}: read back {len}");
        }
        let cmp = Host::rw_sqe(0x05, 1, 0, 8, 4096, sgl_id::DATA_BLOCK_OFFSET);
        assert!(io.command(cmp, &pattern(4096, 1)).1.status.is_success());
        let cmp = Host::rw_sqe(0x05, 1, 0, 8, 4096, sgl_id::DATA_BLOCK_OFFSET);
        assert_eq!(
            io.command(cmp, &[0u8; 4096]).1.status,
            status::COMPARE_FAILURE.with_dnr()
        );
        assert!(
            io.command(Host::rw_sqe(0x00, 1, 0, 1, 0, 0), &[]).1.status.is_success(),
            "{mode}: flush"
        );
        assert!(
            io.command(Host::rw_sqe(0x00, 0xFFFF_FFFF, 0, 1, 0, 0), &[])
                .1
                .status
                .is_success()
        );
        // Write Zeroes over the second write, DSM deallocate over the third.
        assert!(
            io.command(Host::rw_sqe(0x08, 1, 64, 16, 0, 0), &[])
                .1
                .status
                .is_success()
        );
        let mut dsm = Host::rw_sqe(0x09, 1, 0, 1, 16, sgl_id::DATA_BLOCK_OFFSET);
        dsm.set_cdw(10, 0);
        dsm.set_cdw(11, 1 << 2);
        dsm.set_cdw(12, 0);
        let mut range = vec![0u8; 16];
        range[4..8].copy_from_slice(&256u32.to_le_bytes());
        range[8..16].copy_from_slice(&1024u64.to_le_bytes());
        assert!(io.command(dsm, &range).1.status.is_success(), "{mode}: deallocate");
        assert!(io.read(64, 16).0.iter().all(|&b| b == 0));
        assert!(io.read(1024, 256).0.iter().all(|&b| b == 0));
        assert_eq!(io.read(BLOCKS - 1, 2).1.status, status::LBA_OUT_OF_RANGE.with_dnr());
        // The file itself holds what was written.
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[..4096], &pattern(4096, 1)[..]);
        assert!(on_disk[64 * 512..80 * 512].iter().all(|&b| b == 0));
        if mode == Mode::Interrupt {
            // Between completions the reactor sleeps: the ring's eventfd wakes it.
            let h = &t.reactors.handles()[0];
            std::thread::sleep(Duration::from_millis(100));
            let a = h.stats();
            std::thread::sleep(Duration::from_millis(500));
            let b = h.stats();
            let share = (b.thread_cpu_ns - a.thread_cpu_ns) as f64 / b.wall_ns_since(&a) as f64;
            assert!(
                share < 0.05,
                "idle reactor with a file bdev used {:.1} %",
                share * 100.0
            );
        }
        drop(io);
        t.reactors.shutdown().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
