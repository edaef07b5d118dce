//! lull's initiator (`NvmeController` on a reactor) against lull's own
//! target over loopback: every I/O command, R2T splits at several
//! MAXH2CDATA values, digests, event and timed polling (and changing the
//! period under load), every reactor mode, the target going away (no
//! reconnect, reconnect to a new target on the same port, fast I/O fail)
//! and keep-alive over an idle association.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use common::{HOSTNQN, NS1_BLOCKS, SUBNQN, Tgt, pattern};
use lull_engine::bdev::{Bdev, NullBdev, RamBdev};
use lull_engine::initiator::{CtrlrState, IoError, NvmeController, NvmeOptions, NvmeTrid};
use lull_engine::nvmf::subsystem::Subsystem;
use lull_engine::nvmf::target::Target;
use lull_proto::host_queue::Completion;
use lull_proto::nvme::{Sqe, io_opc, status};
use lull_proto::pdu::Digests;
use lull_proto::target_queue::TargetQueueConfig;
use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};

type Res = Result<Completion, IoError>;

/// The longest any single wait in this file may take.
const WAIT: Duration = Duration::from_secs(10);

/// A target like the common fixture (NS1 64 MiB RAM, NS2 null, in-capsule
/// 4096), with its own queue settings, listening on `addr`.
fn target_with(mode: Mode, cfg: TargetQueueConfig, addr: SocketAddr) -> Tgt {
    let usable = CoreList::usable().unwrap();
    let cores: Vec<usize> = usable.cores().iter().copied().take(2).collect();
    let reactors = Reactors::start(ReactorConfig::new(CoreList::try_from(cores).unwrap()).mode(mode)).unwrap();
    let target = Target::new(cfg);
    let s = Subsystem::new(SUBNQN, "SN0001", "lull test").unwrap();
    s.add_host(HOSTNQN).unwrap();
    let ram: Arc<dyn Bdev> = Arc::new(RamBdev::new("Ram0", NS1_BLOCKS * 512, 512).unwrap());
    let null: Arc<dyn Bdev> = Arc::new(NullBdev::new("Null0", 1 << 20, 512).unwrap());
    s.add_namespace(1, ram).unwrap();
    s.add_namespace(2, null).unwrap();
    target.add_subsystem(s).unwrap();
    let addr = target.listen(&reactors, addr).unwrap();
    Tgt { reactors, target, addr }
}

fn std_cfg() -> TargetQueueConfig {
    TargetQueueConfig {
        io_in_capsule_data: 4096,
        ..Default::default()
    }
}

fn std_target(mode: Mode) -> Tgt {
    target_with(mode, std_cfg(), "127.0.0.1:0".parse().unwrap())
}

/// One reactor for the initiator, on the last usable core.
fn initiator(mode: Mode) -> Reactors {
    let usable = CoreList::usable().unwrap();
    let core = *usable.cores().last().unwrap();
    Reactors::start(ReactorConfig::new(CoreList::try_from(vec![core]).unwrap()).mode(mode)).unwrap()
}

fn attach(addr: SocketAddr, opts: NvmeOptions, r: &Reactors) -> NvmeController {
    NvmeController::attach("Nvme0", NvmeTrid::new(addr, SUBNQN, HOSTNQN), opts, r.handles(), 1)
        .unwrap_or_else(|e| panic!("attach: {e}"))
}

/// Event-driven I/O queue, no reconnect: the plain setting for data tests.
fn quick_opts() -> NvmeOptions {
    NvmeOptions {
        nvme_ioq_poll_period_us: 0,
        nvme_adminq_poll_period_us: 1000,
        ..Default::default()
    }
    .no_reconnect()
}

fn rw_sqe(opc: u8, nsid: u32, slba: u64, nlb: u32) -> Sqe {
    let mut sqe = Sqe([0; 64]);
    sqe.0[0] = opc;
    sqe.0[4..8].copy_from_slice(&nsid.to_le_bytes());
    sqe.set_cdw(10, slba as u32);
    sqe.set_cdw(11, (slba >> 32) as u32);
    sqe.set_cdw(12, nlb.saturating_sub(1));
    sqe
}

/// A command for the I/O helpers: SQE, write data, read length.
struct Cmd {
    sqe: Sqe,
    write: Vec<u8>,
    read_len: u32,
}

fn write_cmd(slba: u64, data: Vec<u8>) -> Cmd {
    Cmd {
        sqe: rw_sqe(io_opc::WRITE, 1, slba, (data.len() / 512) as u32),
        write: data,
        read_len: 0,
    }
}

fn read_cmd(slba: u64, len: u32) -> Cmd {
    Cmd {
        sqe: rw_sqe(io_opc::READ, 1, slba, len / 512),
        write: Vec::new(),
        read_len: len,
    }
}

/// Submits `cmd` on local queue 0 of the controller's first reactor; the
/// result goes to `tx` tagged with `tag`.
fn submit(ctrl: &NvmeController, cmd: Cmd, tag: u64, tx: &Sender<(u64, Res)>) {
    let c = ctrl.clone();
    let tx = tx.clone();
    ctrl.reactors()[0]
        .try_send(move |cx| {
            c.submit(
                cx,
                0,
                cmd.sqe,
                cmd.write,
                cmd.read_len,
                Box::new(move |_cx, r| {
                    let _ = tx.send((tag, r));
                }),
            );
        })
        .expect("the initiator reactor takes the submission");
}

/// Runs one command and waits for it.
fn run1(ctrl: &NvmeController, cmd: Cmd) -> Res {
    let (tx, rx) = mpsc::channel();
    submit(ctrl, cmd, 0, &tx);
    rx.recv_timeout(WAIT).expect("a completion within the wait").1
}

fn write_ok(ctrl: &NvmeController, slba: u64, data: &[u8], what: &str) {
    if let Err(e) = run1(ctrl, write_cmd(slba, data.to_vec())) {
        panic!("{what}: write of {} B at LBA {slba}: {e}", data.len());
    }
}

fn read_ok(ctrl: &NvmeController, slba: u64, len: u32, what: &str) -> Vec<u8> {
    match run1(ctrl, read_cmd(slba, len)) {
        Ok(c) => {
            assert_eq!(c.data.len(), len as usize, "{what}: read length");
            c.data
        }
        Err(e) => panic!("{what}: read of {len} B at LBA {slba}: {e}"),
    }
}

/// Writes `data` at `slba`, reads it back and compares.
fn roundtrip(ctrl: &NvmeController, slba: u64, data: &[u8], what: &str) {
    write_ok(ctrl, slba, data, what);
    let back = read_ok(ctrl, slba, data.len() as u32, what);
    assert!(
        back == data,
        "{what}: {} B at LBA {slba} read back differently",
        data.len()
    );
}

/// Keeps `qd` commands in flight until `total` were issued; `make(tag)`
/// builds command `tag`, `check(tag, result)` judges each completion, and
/// `between(completed)` runs after every completion (on this thread).
/// Asserts that every command completes exactly once.
fn run_qd(
    ctrl: &NvmeController,
    total: u64,
    qd: u64,
    mut make: impl FnMut(u64) -> Cmd,
    mut check: impl FnMut(u64, Res),
    mut between: impl FnMut(u64),
) {
    let (tx, rx) = mpsc::channel();
    let mut issued = 0;
    while issued < qd.min(total) {
        submit(ctrl, make(issued), issued, &tx);
        issued += 1;
    }
    let mut seen = vec![false; total as usize];
    let mut completed = 0;
    while completed < total {
        let (tag, r) = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no completion within {WAIT:?}: {completed} of {total} completed"));
        assert!(!seen[tag as usize], "command {tag} completed twice");
        seen[tag as usize] = true;
        completed += 1;
        check(tag, r);
        between(completed);
        if issued < total {
            submit(ctrl, make(issued), issued, &tx);
            issued += 1;
        }
    }
    // Nothing completes a second time later.
    drop(tx);
    std::thread::sleep(Duration::from_millis(50));
    assert!(rx.try_recv().is_err(), "a completion arrived after all were counted");
}

fn status_of(r: &Res) -> Option<(u8, u8)> {
    match r {
        Err(IoError::Status { status, .. }) => Some((status.sct(), status.sc())),
        _ => None,
    }
}

/// Whether `r` is how our target answers a command that reaches an I/O
/// queue after its controller was torn down (the admin queue closed first
/// while the target's reactors stop): Command Sequence Error, no DNR. Only
/// commands in flight when the target stops may see it.
fn dying_target_answer(r: &Res) -> bool {
    matches!(r, Err(IoError::Status { status: s, .. }) if *s == status::COMMAND_SEQUENCE_ERROR)
}

fn shutdown(c: NvmeController, r: Reactors) {
    c.detach();
    r.shutdown().unwrap();
}

#[test]
fn every_io_command_against_our_target() {
    let t = std_target(Mode::Interrupt);
    let r = initiator(Mode::Interrupt);
    let c = attach(t.addr, quick_opts(), &r);
    let info = c.info();
    assert_eq!(info.io_queues, 1);
    assert_eq!(info.in_capsule_bytes, 4096);
    assert_eq!(info.namespaces.len(), 2);
    assert_eq!((info.namespaces[0].nsid, info.namespaces[0].block_size), (1, 512));
    assert_eq!(info.namespaces[0].num_blocks, NS1_BLOCKS);
    assert_eq!(c.queues_on(0), vec![0]);

    // Write then read back: in-capsule (4 KiB) and by R2T (64 KiB).
    roundtrip(&c, 0, &pattern(4096, 1), "in-capsule");
    roundtrip(&c, 100, &pattern(65536, 2), "R2T");
    // The last blocks of the namespace.
    roundtrip(&c, NS1_BLOCKS - 8, &pattern(4096, 3), "last blocks");

    // Flush (NSID 1) succeeds.
    let flush = Cmd {
        sqe: rw_sqe(io_opc::FLUSH, 1, 0, 0),
        write: Vec::new(),
        read_len: 0,
    };
    assert!(run1(&c, flush).is_ok(), "Flush");

    // Write Zeroes over the middle of the 64 KiB: zeros there, the rest intact.
    let wz = Cmd {
        sqe: rw_sqe(io_opc::WRITE_ZEROES, 1, 110, 20),
        write: Vec::new(),
        read_len: 0,
    };
    assert!(run1(&c, wz).is_ok(), "Write Zeroes");
    let back = read_ok(&c, 100, 65536, "after Write Zeroes");
    let mut want = pattern(65536, 2);
    want[10 * 512..30 * 512].fill(0);
    assert!(back == want, "Write Zeroes cleared exactly LBA 110..130");

    // Dataset Management, deallocate two ranges: the RAM bdev unmaps to zeros.
    let mut ranges = vec![0u8; 32];
    for (i, (lba, n)) in [(0u64, 4u32), (NS1_BLOCKS - 8, 8)].into_iter().enumerate() {
        ranges[i * 16 + 4..i * 16 + 8].copy_from_slice(&n.to_le_bytes());
        ranges[i * 16 + 8..i * 16 + 16].copy_from_slice(&lba.to_le_bytes());
    }
    let mut sqe = rw_sqe(io_opc::DATASET_MANAGEMENT, 1, 0, 0);
    sqe.set_cdw(10, 1); // two ranges, 0's based
    sqe.set_cdw(11, 1 << 2); // AD: deallocate
    sqe.set_cdw(12, 0);
    let dsm = Cmd {
        sqe,
        write: ranges,
        read_len: 0,
    };
    assert!(run1(&c, dsm).is_ok(), "Dataset Management");
    let back = read_ok(&c, 0, 4096, "after DSM");
    let mut want = pattern(4096, 1);
    want[..4 * 512].fill(0);
    assert!(back == want, "DSM deallocated exactly LBA 0..4");
    let back = read_ok(&c, NS1_BLOCKS - 8, 4096, "after DSM");
    assert!(back.iter().all(|&b| b == 0), "DSM deallocated the last 8 blocks");

    // Out of range: one block past the end.
    let res = run1(&c, read_cmd(NS1_BLOCKS - 4, 4096));
    assert_eq!(status_of(&res), Some((0, 0x80)), "LBA Out of Range, got {res:?}");
    let res = run1(&c, write_cmd(NS1_BLOCKS, pattern(512, 4)));
    assert_eq!(status_of(&res), Some((0, 0x80)), "LBA Out of Range, got {res:?}");
    if let Err(IoError::Status { status: s, .. }) = &res {
        assert_eq!(*s, status::LBA_OUT_OF_RANGE.with_dnr());
    }
    // An NSID that does not exist.
    let mut cmd = read_cmd(0, 512);
    cmd.sqe.0[4..8].copy_from_slice(&7u32.to_le_bytes());
    let res = run1(&c, cmd);
    assert_eq!(status_of(&res), Some((0, 0x0B)), "Invalid Namespace, got {res:?}");
    // The queue is still fine after the errors.
    roundtrip(&c, 2000, &pattern(8192, 5), "after the errors");
    // The null namespace: writes succeed, reads come back as zeros.
    let mut cmd = write_cmd(0, pattern(4096, 6));
    cmd.sqe.0[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert!(run1(&c, cmd).is_ok());
    assert_eq!(c.state(), CtrlrState::Live);
    shutdown(c, r);
}

#[test]
fn r2t_writes_are_split_at_every_maxh2cdata() {
    for maxh2cdata in [4096u32, 8192, 65536] {
        let cfg = TargetQueueConfig {
            maxh2cdata,
            ..std_cfg()
        };
        let t = target_with(Mode::Interrupt, cfg, "127.0.0.1:0".parse().unwrap());
        let r = initiator(Mode::Interrupt);
        let c = attach(t.addr, quick_opts(), &r);
        assert_eq!(c.info().maxh2cdata, maxh2cdata);
        let what = format!("MAXH2CDATA {maxh2cdata}");
        // The target's MDTS is 128 KiB and the initiator does not split
        // commands: 256 KiB goes as two 128 KiB R2T writes in flight together.
        let mdts = c.info().max_transfer_bytes.expect("MDTS reported") as usize;
        assert_eq!(mdts, 131_072);
        let big = pattern(262_144, 10);
        run_qd(
            &c,
            2,
            2,
            |tag| write_cmd(tag * 256, big[tag as usize * mdts..][..mdts].to_vec()),
            |tag, r| assert!(r.is_ok(), "{what}: 128 KiB write {tag}: {:?}", r.err()),
            |_| {},
        );
        let mut back = read_ok(&c, 0, 131_072, &what);
        back.extend(read_ok(&c, 256, 131_072, &what));
        assert!(back == big, "{what}: 256 KiB read back differently");
        // More than MDTS in one command is refused cleanly; the queue goes on.
        let res = run1(&c, write_cmd(1024, pattern(262_144, 11)));
        assert_eq!(status_of(&res), Some((0, 0x0F)), "{what}: beyond MDTS: {res:?}");
        // An odd-sized R2T write, and in-capsule sizes.
        for (i, len) in [4608usize, 4096, 512, 2048].into_iter().enumerate() {
            let slba = 2048 + i as u64 * 1024;
            roundtrip(&c, slba, &pattern(len, i as u8 + 20), &format!("{what}, {len} B"));
        }
        shutdown(c, r);
        drop(t);
    }
}

#[test]
fn digests_on_and_off() {
    let t = std_target(Mode::Interrupt);
    let r = initiator(Mode::Interrupt);
    for (hdgst, ddgst) in [(false, false), (true, false), (false, true), (true, true)] {
        let opts = NvmeOptions {
            hdgst,
            ddgst,
            ..quick_opts()
        };
        let c = attach(t.addr, opts, &r);
        assert_eq!(
            c.info().digests,
            Digests {
                header: hdgst,
                data: ddgst
            },
            "negotiated digests"
        );
        let what = format!("hdgst {hdgst} ddgst {ddgst}");
        let seed = u8::from(hdgst) * 2 + u8::from(ddgst);
        roundtrip(&c, 0, &pattern(4096, seed), &what);
        roundtrip(&c, 1000, &pattern(131_072, seed + 1), &what);
        c.detach();
    }
    r.shutdown().unwrap();
}

#[test]
fn event_and_timed_polling_complete_io() {
    let t = std_target(Mode::Interrupt);
    for period in [0u64, 1000] {
        let r = initiator(Mode::Interrupt);
        let opts = NvmeOptions {
            nvme_ioq_poll_period_us: period,
            ..quick_opts()
        };
        let c = attach(t.addr, opts, &r);
        let what = format!("nvme_ioq_poll_period_us {period}");
        let start = Instant::now();
        for i in 0..20u64 {
            roundtrip(
                &c,
                i * 256,
                &pattern(if i % 2 == 0 { 4096 } else { 65536 }, i as u8),
                &what,
            );
        }
        println!("{what}: 20 write+read pairs in {:?}", start.elapsed());
        shutdown(c, r);
    }
}

#[test]
fn changing_the_poll_period_under_load_loses_nothing() {
    let t = std_target(Mode::Interrupt);
    let r = initiator(Mode::Interrupt);
    let c = attach(t.addr, quick_opts(), &r);
    const N: u64 = 2000;
    let periods = [0u64, 100, 1000];
    let mut switches = 0;
    let mut switch = |done: u64| {
        if done.is_multiple_of(125) {
            switches += 1;
            c.set_poll_periods(Some(periods[switches % 3]), None).unwrap();
        }
    };
    let start = Instant::now();
    // Writes of distinct data to distinct LBAs, then reads of every one.
    run_qd(
        &c,
        N,
        8,
        |tag| write_cmd(tag * 8, pattern(4096, tag as u8 ^ (tag >> 8) as u8)),
        |tag, r| assert!(r.is_ok(), "write {tag}: {:?}", r.err()),
        &mut switch,
    );
    run_qd(
        &c,
        N,
        8,
        |tag| read_cmd(tag * 8, 4096),
        |tag, r| match r {
            Ok(done) => assert!(
                done.data == pattern(4096, tag as u8 ^ (tag >> 8) as u8),
                "read {tag} returned other data"
            ),
            Err(e) => panic!("read {tag}: {e}"),
        },
        &mut switch,
    );
    println!("{} I/Os with {switches} period changes in {:?}", 2 * N, start.elapsed());
    assert!(switches >= 30);
    assert_eq!(c.state(), CtrlrState::Live);
    assert_eq!(c.resets(), 0);
    shutdown(c, r);
}

#[test]
fn io_runs_in_every_initiator_reactor_mode() {
    let t = std_target(Mode::Interrupt);
    for mode in [Mode::Poll, Mode::Interrupt, Mode::Hybrid] {
        for period in [0u64, 100] {
            let r = initiator(mode);
            let opts = NvmeOptions {
                nvme_ioq_poll_period_us: period,
                ..quick_opts()
            };
            let c = attach(t.addr, opts, &r);
            let base = 10_000 + period * 10;
            let start = Instant::now();
            // Distinct data to distinct LBAs, then every one read back.
            run_qd(
                &c,
                200,
                4,
                |tag| write_cmd(base + tag * 8, pattern(4096, tag as u8)),
                |tag, r| assert!(r.is_ok(), "{mode} period {period}: write {tag}: {:?}", r.err()),
                |_| {},
            );
            run_qd(
                &c,
                200,
                4,
                |tag| read_cmd(base + tag * 8, 4096),
                |tag, r| match r {
                    Ok(done) => assert!(done.data == pattern(4096, tag as u8), "{mode}: read {tag}"),
                    Err(e) => panic!("{mode} period {period}: read {tag}: {e}"),
                },
                |_| {},
            );
            println!("{mode} period {period}: 400 I/Os in {:?}", start.elapsed());
            shutdown(c, r);
        }
    }
}

/// What [`load_and_kill`] leaves: the tags still outstanding, completions
/// already received after the kill started (to judge like later ones), the
/// channel, a sender for more, and when the kill started.
struct Killed {
    outstanding: HashMap<u64, ()>,
    early: Vec<(u64, Res)>,
    rx: Receiver<(u64, Res)>,
    tx: Sender<(u64, Res)>,
    t0: Instant,
}

impl Killed {
    /// The next completion (early ones first), checked to be outstanding once.
    fn next(&mut self, within: Duration) -> (u64, Res) {
        let (tag, r) = match self.early.pop() {
            Some(x) => x,
            None => self
                .rx
                .recv_timeout(within)
                .unwrap_or_else(|_| panic!("{} commands hung after the target went away", self.outstanding.len())),
        };
        assert!(self.outstanding.remove(&tag).is_some(), "command {tag} completed twice");
        (tag, r)
    }
}

/// Keeps `qd` 4 KiB writes in flight; after `before` completions, stops the
/// target's reactors from another thread while the writes go on (refilling
/// on each success until the first error or until the target is gone).
fn load_and_kill(ctrl: &NvmeController, qd: u64, before: u64, target: Reactors) -> Killed {
    let (tx, rx) = mpsc::channel();
    let mut outstanding = HashMap::new();
    let mut issued = 0u64;
    let cmd = |tag: u64| write_cmd(tag % 512 * 8, pattern(4096, tag as u8));
    let mut issue = |outstanding: &mut HashMap<u64, ()>| {
        submit(ctrl, cmd(issued), issued, &tx);
        outstanding.insert(issued, ());
        issued += 1;
    };
    for _ in 0..qd {
        issue(&mut outstanding);
    }
    for _ in 0..before {
        let (tag, r) = rx.recv_timeout(WAIT).expect("completions before the target goes away");
        assert!(r.is_ok(), "write {tag} before the target went away: {:?}", r.err());
        assert!(outstanding.remove(&tag).is_some(), "write {tag} completed twice");
        issue(&mut outstanding);
    }
    let t0 = Instant::now();
    let killer = std::thread::spawn(move || target.shutdown().unwrap());
    let mut early = Vec::new();
    while !killer.is_finished() {
        if let Ok((tag, r)) = rx.recv_timeout(Duration::from_millis(1)) {
            assert!(outstanding.remove(&tag).is_some(), "write {tag} completed twice");
            let ok = r.is_ok();
            early.push((tag, r));
            if ok && early.iter().all(|(_, r)| r.is_ok()) {
                issue(&mut outstanding);
            }
        }
    }
    killer.join().unwrap();
    // Judged again by `next`: put them back as outstanding.
    for (tag, _) in &early {
        outstanding.insert(*tag, ());
    }
    early.reverse();
    println!(
        "target stopped in {:?} with {} writes outstanding ({} completed meanwhile)",
        t0.elapsed(),
        outstanding.len(),
        early.len()
    );
    Killed {
        outstanding,
        early,
        rx,
        tx,
        t0,
    }
}

#[test]
fn target_gone_without_reconnect_fails_every_outstanding_command() {
    let Tgt {
        reactors: tr,
        target: _target,
        addr,
    } = std_target(Mode::Interrupt);
    let r = initiator(Mode::Interrupt);
    let c = attach(addr, quick_opts(), &r);
    let mut k = load_and_kill(&c, 8, 300, tr);
    // Submitted after the target went away, before or after the initiator noticed.
    for tag in 1_000_000..1_000_008u64 {
        submit(&c, write_cmd(0, pattern(512, 1)), tag, &k.tx);
        k.outstanding.insert(tag, ());
    }
    let (mut lost, mut ok) = (0, 0);
    while !k.outstanding.is_empty() {
        match k.next(Duration::from_secs(5)) {
            (_, Err(IoError::ControllerLost(_))) => lost += 1,
            // Completed by the target just before it stopped.
            (tag, Ok(_)) if tag < 1_000_000 => ok += 1,
            (tag, r) if tag < 1_000_000 && dying_target_answer(&r) => ok += 1,
            (tag, other) => panic!("command {tag}: expected ControllerLost, got {other:?}"),
        }
    }
    let took = k.t0.elapsed();
    println!("{lost} commands failed with ControllerLost ({ok} completed) within {took:?}");
    assert!(lost >= 8);
    assert!(took < Duration::from_secs(5));
    assert!(matches!(c.state(), CtrlrState::Lost(_)), "state {:?}", c.state());
    // A new submission fails at once.
    let r0 = run1(&c, read_cmd(0, 512));
    assert!(matches!(r0, Err(IoError::ControllerLost(_))), "{r0:?}");
    assert_eq!(c.resets(), 0);
    shutdown(c, r);
}

#[test]
fn target_restarted_on_the_same_port_gets_the_held_commands() {
    let Tgt {
        reactors: tr,
        target: _old,
        addr,
    } = std_target(Mode::Interrupt);
    let r = initiator(Mode::Interrupt);
    let opts = NvmeOptions {
        reconnect_delay_sec: 1,
        ctrlr_loss_timeout_sec: 10,
        fast_io_fail_timeout_sec: 0,
        ..quick_opts()
    };
    let c = attach(addr, opts, &r);
    let mut k = load_and_kill(&c, 8, 300, tr);
    // Held while the controller resets: writes of known data to fresh LBAs.
    let held: Vec<u64> = (1_000_000..1_000_008u64).collect();
    for &tag in &held {
        submit(
            &c,
            write_cmd(20_000 + (tag - 1_000_000) * 8, pattern(4096, tag as u8)),
            tag,
            &k.tx,
        );
        k.outstanding.insert(tag, ());
    }
    // Nothing fails, and nothing submitted after the loss completes before the new target is up.
    std::thread::sleep(Duration::from_millis(500));
    while let Some((tag, r)) = k.early.pop().or_else(|| k.rx.try_recv().ok()) {
        assert!(
            tag < 1_000_000,
            "held command {tag} completed before the target came back: {r:?}"
        );
        assert!(
            r.is_ok() || dying_target_answer(&r),
            "command {tag} in flight at the loss failed: {r:?}"
        );
        assert!(k.outstanding.remove(&tag).is_some(), "command {tag} completed twice");
    }
    assert!(
        matches!(c.state(), CtrlrState::Resetting { .. }),
        "state {:?}",
        c.state()
    );
    let still = k.outstanding.len();
    let new = target_with(Mode::Interrupt, std_cfg(), addr);
    assert_eq!(new.addr, addr);
    let t_new = k.t0.elapsed();
    while !k.outstanding.is_empty() {
        let (tag, r) = k.next(WAIT);
        let in_flight_answered = tag < 1_000_000 && dying_target_answer(&r);
        assert!(
            r.is_ok() || in_flight_answered,
            "command {tag} after the reconnect: {r:?}"
        );
    }
    println!(
        "new target after {t_new:?}; all {still} held commands completed {:?} after the loss",
        k.t0.elapsed()
    );
    assert_eq!(c.state(), CtrlrState::Live);
    assert_eq!(c.resets(), 1);
    // The held writes reached the new target.
    for &tag in &held {
        let back = read_ok(&c, 20_000 + (tag - 1_000_000) * 8, 4096, "held write");
        assert!(
            back == pattern(4096, tag as u8),
            "held write {tag} read back differently"
        );
    }
    roundtrip(&c, 0, &pattern(65536, 9), "after the reconnect");
    shutdown(c, r);
    drop(new);
}

#[test]
fn fast_io_fail_fails_held_commands_while_reconnecting() {
    let Tgt {
        reactors: tr,
        target: _old,
        addr,
    } = std_target(Mode::Interrupt);
    let r = initiator(Mode::Interrupt);
    let opts = NvmeOptions {
        reconnect_delay_sec: 1,
        ctrlr_loss_timeout_sec: 10,
        fast_io_fail_timeout_sec: 1,
        ..quick_opts()
    };
    let c = attach(addr, opts, &r);
    let mut k = load_and_kill(&c, 8, 200, tr);
    for tag in 1_000_000..1_000_008u64 {
        submit(&c, write_cmd(0, pattern(512, 1)), tag, &k.tx);
        k.outstanding.insert(tag, ());
    }
    let mut fast = Vec::new();
    while !k.outstanding.is_empty() {
        match k.next(WAIT) {
            (_, Err(IoError::FastFail(_))) => fast.push(k.t0.elapsed()),
            (tag, Ok(_)) if tag < 1_000_000 => {}
            (tag, r) if tag < 1_000_000 && dying_target_answer(&r) => {}
            (tag, other) => panic!("command {tag}: expected FastFail, got {other:?}"),
        }
    }
    println!(
        "{} commands failed fast after {:?}..{:?}",
        fast.len(),
        fast.first(),
        fast.last()
    );
    assert!(fast.len() >= 8);
    for at in &fast {
        assert!(
            (Duration::from_millis(500)..Duration::from_secs(5)).contains(at),
            "failed fast after {at:?}"
        );
    }
    assert!(matches!(c.state(), CtrlrState::Resetting { .. }), "{:?}", c.state());
    // New submissions fail at once now.
    let t1 = Instant::now();
    let r1 = run1(&c, read_cmd(0, 512));
    assert!(matches!(r1, Err(IoError::FastFail(_))), "{r1:?}");
    assert!(t1.elapsed() < Duration::from_millis(500));
    shutdown(c, r);
}

#[test]
fn keep_alive_holds_an_idle_association() {
    let t = std_target(Mode::Interrupt);
    let r = initiator(Mode::Interrupt);
    let opts = NvmeOptions {
        keep_alive_timeout_ms: 2000,
        nvme_adminq_poll_period_us: 10_000,
        ..quick_opts()
    };
    let c = attach(t.addr, opts, &r);
    roundtrip(&c, 0, &pattern(4096, 1), "before idling");
    // Well past KATO: the target drops a controller that misses Keep Alive for 2 s.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(c.state(), CtrlrState::Live);
    assert_eq!(c.resets(), 0);
    roundtrip(&c, 8, &pattern(65536, 2), "after 5 s idle");
    assert_eq!(t.target.controller_count(), 1);
    shutdown(c, r);
}

#[test]
fn a_polling_reactor_does_not_wait_for_the_poll_period() {
    // With a 1 s period, a queue that waited for its ticks would need about
    // a second per command; on a polling reactor it is checked on every loop
    // iteration. Back in interrupt mode the queue still completes commands.
    let t = std_target(Mode::Interrupt);
    let r = initiator(Mode::Interrupt);
    let opts = NvmeOptions {
        nvme_ioq_poll_period_us: 1_000_000,
        ..quick_opts()
    };
    let c = attach(t.addr, opts, &r);
    let h = r.handles()[0].clone();
    read_ok(&c, 0, 4096, "interrupt mode, 1 s period");
    h.set_mode(Mode::Poll);
    while h.mode() != Mode::Poll {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The first command after the switch may wait for one tick (the queue
    // learns of the new mode at its next run); the rest must not.
    read_ok(&c, 0, 4096, "first read in poll mode");
    let t1 = Instant::now();
    for i in 0..20 {
        read_ok(&c, i * 8, 4096, "poll mode");
    }
    let polled = t1.elapsed();
    assert!(
        polled < Duration::from_millis(900),
        "20 reads on a polling reactor: {polled:?}"
    );
    h.set_mode(Mode::Interrupt);
    while h.mode() != Mode::Interrupt {
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 0..3 {
        read_ok(&c, i * 8, 4096, "interrupt mode again");
    }
    shutdown(c, r);
    t.reactors.shutdown().unwrap();
}

/// A UUID's 16 bytes in the order of its text (as SPDK's `spdk_uuid_parse` stores them).
fn uuid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, x) in b.iter_mut().enumerate() {
        *x = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    b
}

#[test]
fn a_volume_keeps_its_uuid_over_nvme_tcp() {
    let text = "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab";
    let uuid = uuid_bytes(text);
    let usable = CoreList::usable().unwrap();
    let cores: Vec<usize> = usable.cores().iter().copied().take(1).collect();
    let reactors =
        Reactors::start(ReactorConfig::new(CoreList::try_from(cores).unwrap()).mode(Mode::Interrupt)).unwrap();
    let target = Target::new(std_cfg());
    let s = Subsystem::new(SUBNQN, "SN0001", "lull test").unwrap();
    s.add_host(HOSTNQN).unwrap();
    let ram: Arc<dyn Bdev> = Arc::new(RamBdev::new("Ram0", 1 << 20, 512).unwrap().with_uuid(uuid));
    s.add_namespace(1, ram).unwrap();
    target.add_subsystem(s).unwrap();
    let addr = target.listen(&reactors, "127.0.0.1:0".parse().unwrap()).unwrap();

    // What SPDK's target writes for a namespace added without nguid/eui64/uuid:
    // NGUID = UUID = the bdev's UUID bytes, no EUI64; the descriptor list
    // holds NGUID (NIDT 2h) then UUID (NIDT 3h), 16 bytes each, then zeroes.
    let (mut h, _) = common::Host::admin(addr, 0, SUBNQN, 0);
    let identify = |h: &mut common::Host, cns: u32| {
        let mut sqe = common::Host::rw_sqe(0x06, 1, 0, 1, 4096, lull_proto::nvme::sgl_id::TRANSPORT_DATA_BLOCK);
        sqe.set_cdw(10, cns);
        sqe.set_cdw(11, 0);
        sqe.set_cdw(12, 0);
        let (data, cqe) = h.command(sqe, &[]);
        assert!(cqe.status.is_success(), "Identify CNS {cns}: {}", cqe.status);
        data
    };
    let ns = identify(&mut h, 0x00);
    assert_eq!(&ns[104..120], &uuid, "NGUID");
    assert_eq!(&ns[120..128], &[0u8; 8], "EUI64");
    let list = identify(&mut h, 0x03);
    let mut expected = vec![0u8; 4096];
    expected[0..4].copy_from_slice(&[2, 16, 0, 0]);
    expected[4..20].copy_from_slice(&uuid);
    expected[20..24].copy_from_slice(&[3, 16, 0, 0]);
    expected[24..40].copy_from_slice(&uuid);
    assert_eq!(list, expected, "Namespace Identification Descriptor list");
    drop(h);

    // lull's initiator names its bdev by the remote namespace's identity.
    let init = initiator(Mode::Interrupt);
    let ctrl = attach(addr, quick_opts(), &init);
    let bdev = lull_engine::initiator::NvmeBdev::new("Nvme0n1", ctrl.clone(), 1).unwrap();
    assert_eq!(
        bdev.info().uuid,
        uuid,
        "the initiator's bdev has the target bdev's UUID {text}"
    );
    drop(bdev);
    shutdown(ctrl, init);
    reactors.shutdown().unwrap();
}
