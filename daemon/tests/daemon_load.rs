//! The daemon under load: reactor modes and the initiator's I/O queue poll
//! period changed live over JSON-RPC while I/O runs through a controller the
//! daemon attached to its own subsystem (no error, no wrong data, I/O goes on
//! in every setting); and a graceful shutdown with writes in flight to a
//! file bdev, after which a new daemon on the same file holds every block
//! the host was told was written.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lull_daemon::app::App;
use lull_daemon::config::Config;
use lull_daemon::rpc::RpcServer;
use lull_engine::initiator::{IoError, NvmeController, NvmeOptions, NvmeTrid};
use lull_proto::host_queue::Completion;
use lull_proto::nvme::{Sqe, io_opc};
use lull_proto::pdu::Digests;
use lull_reactor::{CoreList, Message, Mode, ReactorConfig, Reactors, TrySendError};
use lull_transport::host_sync::SyncQueue;
use serde_json::{Value, json};

const NQN: &str = "nqn.2024-01.io.lull:load0";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000b1";
const BLOCK: usize = 512;

type Res = Result<Completion, IoError>;

/// Up to two usable CPUs.
fn test_cores() -> Vec<usize> {
    CoreList::usable().unwrap().cores().iter().copied().take(2).collect()
}

fn cores_text(cores: &[usize]) -> String {
    cores.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn temp_path(tag: &str, ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lull-load-{}-{tag}.{ext}", std::process::id()))
}

fn rw_sqe(opc: u8, slba: u64, nlb: u32) -> Sqe {
    let mut sqe = Sqe([0; 64]);
    sqe.0[0] = opc;
    sqe.0[4..8].copy_from_slice(&1u32.to_le_bytes());
    sqe.set_cdw(10, slba as u32);
    sqe.set_cdw(11, (slba >> 32) as u32);
    sqe.set_cdw(12, nlb - 1);
    sqe
}

/// One 512-byte block as written at `lba` in generation `generation`.
fn block_pattern(lba: u64, generation: u32) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..8].copy_from_slice(&lba.to_le_bytes());
    b[8..12].copy_from_slice(&generation.to_le_bytes());
    let seed = lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(generation).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    for (i, x) in b[12..].iter_mut().enumerate() {
        *x = (seed.rotate_left((i % 64) as u32) as u8) ^ (i as u8);
    }
    b
}

fn pattern(lba: u64, blocks: usize, generation: u32) -> Vec<u8> {
    (0..blocks as u64)
        .flat_map(|i| block_pattern(lba + i, generation))
        .collect()
}

/// Submits one command on local queue `queue` of reactor `reactor` of `ctrl`;
/// the result goes to `tx` tagged `tag`. False when the reactor has stopped.
#[allow(clippy::too_many_arguments)]
fn submit(
    ctrl: &NvmeController,
    reactor: usize,
    queue: usize,
    sqe: Sqe,
    write: Vec<u8>,
    read_len: u32,
    tag: usize,
    tx: &Sender<(usize, Res)>,
) -> bool {
    let (c, tx) = (ctrl.clone(), tx.clone());
    let mut msg = Message::new(move |cx| {
        c.submit(
            cx,
            queue,
            sqe,
            write,
            read_len,
            Box::new(move |_cx, r| {
                let _ = tx.send((tag, r));
            }),
        );
    });
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        match ctrl.reactors()[reactor].try_send_message(msg) {
            Ok(()) => return true,
            Err(TrySendError::Full(m)) if Instant::now() < give_up => {
                msg = m;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(_) => return false,
        }
    }
}

/// (reactor, local queue) for slot `s`: slots spread over the controller's reactors.
fn place(ctrl: &NvmeController, s: usize) -> (usize, usize) {
    let r = s % ctrl.reactors().len();
    let q = ctrl.queues_on(r);
    assert!(!q.is_empty(), "no I/O queue on reactor {r}");
    (r, q[0])
}

// ---- a tiny JSON-RPC client ----

struct Client {
    s: UnixStream,
    id: u64,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client { s, id: 0 }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let mut req = json!({"jsonrpc": "2.0", "id": self.id, "method": method});
        if !params.is_null() {
            req["params"] = params.clone();
        }
        self.s.write_all(req.to_string().as_bytes()).unwrap();
        let resp: Value = serde_json::Deserializer::from_reader(&self.s)
            .into_iter::<Value>()
            .next()
            .expect("a response")
            .expect("valid JSON");
        assert_eq!(resp["id"], self.id);
        assert!(resp.get("error").is_none(), "{method} {params}: {}", resp["error"]);
        resp["result"].clone()
    }
}

/// Sum of a per-reactor counter in lull_get_status.
fn status_sum(st: &Value, k: &str) -> u64 {
    st["reactors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[k].as_u64().unwrap())
        .sum()
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(3);
    while !f() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- (a) live settings under load ----

/// Slots of verified write-then-read I/O running until told to stop.
struct Verifier {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    thread: JoinHandle<VerifyResult>,
}

#[derive(Debug, Default)]
struct VerifyResult {
    writes: u64,
    reads: u64,
    errors: Vec<String>,
    mismatches: Vec<String>,
}

/// Region size, blocks (16 KiB: larger than the in-capsule limit, so R2T).
const REGION_BLOCKS: u64 = 32;

fn start_verifier(ctrl: NvmeController, slots: usize, regions: u64) -> Verifier {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let (stop2, ops2) = (stop.clone(), ops.clone());
    let thread = std::thread::spawn(move || {
        #[derive(Clone, Copy)]
        struct Slot {
            k: u64,
            writing: bool,
        }
        let (tx, rx) = mpsc::channel::<(usize, Res)>();
        let mut out = VerifyResult::default();
        // Slot s owns regions s, s + slots, ... ; k counts its writes.
        let region_of = |s: usize, k: u64| (s as u64 + k * slots as u64) % regions;
        // Even writes fill the region (R2T), odd ones its first 4 KiB (in-capsule).
        let blocks_of = |k: u64| if k.is_multiple_of(2) { REGION_BLOCKS } else { 8 };
        let io = |s: usize, slot: Slot, tx: &Sender<(usize, Res)>| {
            let lba = region_of(s, slot.k) * REGION_BLOCKS;
            let n = blocks_of(slot.k);
            let (r, q) = place(&ctrl, s);
            let ok = if slot.writing {
                let data = pattern(lba, n as usize, slot.k as u32 + 1);
                submit(&ctrl, r, q, rw_sqe(io_opc::WRITE, lba, n as u32), data, 0, s, tx)
            } else {
                let len = (n as usize * BLOCK) as u32;
                submit(&ctrl, r, q, rw_sqe(io_opc::READ, lba, n as u32), Vec::new(), len, s, tx)
            };
            assert!(ok, "submission refused");
        };
        let mut state = vec![Slot { k: 0, writing: true }; slots];
        for (s, slot) in state.iter().enumerate() {
            io(s, *slot, &tx);
        }
        let mut inflight = slots;
        while inflight > 0 {
            let Ok((s, res)) = rx.recv_timeout(Duration::from_secs(10)) else {
                out.errors
                    .push(format!("{inflight} commands got no completion in 10 s"));
                break;
            };
            inflight -= 1;
            let slot = state[s];
            let lba = region_of(s, slot.k) * REGION_BLOCKS;
            match res {
                Err(e) => {
                    out.errors.push(format!(
                        "slot {s} {} LBA {lba}: {e}",
                        if slot.writing { "write" } else { "read" }
                    ));
                    continue;
                }
                Ok(_) if slot.writing => {
                    out.writes += 1;
                    state[s].writing = false;
                }
                Ok(c) => {
                    out.reads += 1;
                    let want = pattern(lba, blocks_of(slot.k) as usize, slot.k as u32 + 1);
                    if c.data != want {
                        out.mismatches.push(format!("slot {s} LBA {lba} write {}", slot.k));
                    }
                    if stop2.load(Ordering::Relaxed) {
                        continue;
                    }
                    state[s] = Slot {
                        k: slot.k + 1,
                        writing: true,
                    };
                }
            }
            ops2.fetch_add(1, Ordering::Relaxed);
            io(s, state[s], &tx);
            inflight += 1;
        }
        out
    });
    Verifier { stop, ops, thread }
}

/// One step of the live-settings plan: mode policy, one core or all, I/O
/// queue poll period, Longhorn's key for the period, latency_budget_us given
/// with the mode.
type Step = (&'static str, Option<usize>, u64, bool, Option<u64>);

#[test]
fn live_mode_and_poll_period_changes_under_load() {
    let cores = test_cores();
    let sock = temp_path("live", "sock");
    let text = format!(
        r#"
cores = "{}"
rpc_socket = "{}"
log_level = "warn"
[[bdev]]
name = "Malloc0"
type = "malloc"
size = "16MiB"
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
listen = ["127.0.0.1:0"]
namespaces = [{{ bdev = "Malloc0" }}]
"#,
        cores_text(&cores),
        sock.display()
    );
    let settings = Config::from_toml(&text).unwrap().resolve().unwrap();
    let app = App::start(&settings).unwrap();
    let rpc = RpcServer::start(app.clone(), &settings.rpc_socket).unwrap();
    let mut c = Client::connect(&sock);

    let subs = c.call("nvmf_get_subsystems", json!({"nqn": NQN}));
    let port = subs[0]["listen_addresses"][0]["trsvcid"].as_str().unwrap().to_string();
    let names = c.call(
        "bdev_nvme_attach_controller",
        json!({"name": "Nvme0", "trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": port, "subnqn": NQN, "hostnqn": HOSTNQN}),
    );
    assert_eq!(names, json!(["Nvme0n1"]));
    let ctrl = app
        .controllers()
        .into_iter()
        .find(|(n, _, _)| n == "Nvme0")
        .map(|(_, c, _)| c)
        .unwrap();
    let before = c.call("lull_get_status", Value::Null);
    let (r0, w0) = (status_sum(&before, "reads"), status_sum(&before, "writes"));

    let regions = (16 << 20) / (REGION_BLOCKS * BLOCK as u64);
    let v = start_verifier(ctrl.clone(), 16, regions);
    let c0 = cores[0];
    // (mode, one core or all, poll period, Longhorn's key for the period,
    // latency_budget_us given with the mode)
    let plan: [Step; 13] = [
        ("poll", None, 0, false, None),
        ("interrupt", None, 250, true, None),
        ("adaptive", None, 1000, false, None),
        ("budget", None, 0, false, Some(0)),
        ("hybrid", None, 0, true, None),
        ("poll", Some(c0), 1000, false, None),
        ("budget", Some(c0), 0, false, Some(1_000_000)),
        ("interrupt", None, 250, false, None),
        ("budget", None, 100, false, Some(20)),
        ("poll", None, 1000, true, None),
        ("adaptive", None, 0, false, None),
        ("budget", None, 0, false, Some(0)),
        ("interrupt", None, 100, false, None),
    ];
    let started = Instant::now();
    for (mode, core, period, longhorn, budget) in plan {
        let step = Instant::now();
        let ops0 = v.ops.load(Ordering::Relaxed);
        let mut p = json!({"mode": mode});
        if let Some(core) = core {
            p["core"] = json!(core);
        }
        if let Some(b) = budget {
            p["latency_budget_us"] = json!(b);
        }
        assert_eq!(c.call("lull_reactor_set_mode", p), true);
        let key = if longhorn {
            "data-engine-nvme-ioq-poll-period-us"
        } else {
            "nvme_ioq_poll_period_us"
        };
        assert_eq!(c.call("lull_set_options", json!({ key: period })), true);

        // The status shows the mode (fixed policies at once; adaptive's policy).
        eventually(&format!("{mode} on {core:?}"), || {
            let st = c.call("lull_get_status", Value::Null);
            st["reactors"].as_array().unwrap().iter().all(|r| {
                let here = core.is_none_or(|k| r["lcore"] == k);
                let moves = mode == "adaptive" || mode == "budget";
                !here || (r["policy"] == mode && (moves || r["mode"] == mode))
            })
        });
        if mode == "budget" && budget == Some(0) && core.is_none() {
            // A budget of 0 under load: the reactors with I/O poll.
            eventually("budget 0 polls under load", || {
                let st = c.call("lull_get_status", Value::Null);
                st["latency_budget_us"] == 0 && st["reactors"].as_array().unwrap().iter().any(|r| r["mode"] == "poll")
            });
        }
        if core.is_none() {
            assert_eq!(c.call("lull_get_status", Value::Null)["mode_policy"], mode);
        }
        // The attached controller runs with the new period.
        let cr = &c.call("bdev_nvme_get_controllers", json!({"name": "Nvme0"}))[0]["ctrlrs"][0];
        assert_eq!(cr["nvme_ioq_poll_period_us"], period);
        assert_eq!(cr["state"], "enabled");
        assert_eq!(ctrl.options().nvme_ioq_poll_period_us, period);
        assert_eq!(
            c.call("lull_get_options", Value::Null)["nvme_ioq_poll_period_us"],
            period
        );

        while step.elapsed() < Duration::from_millis(330) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let done = v.ops.load(Ordering::Relaxed) - ops0;
        assert!(done > 0, "I/O stalled in {mode}/{core:?} with period {period}");
        println!("{mode:>9} core {core:?} period {period:>4} us budget {budget:?}: {done} I/Os");
    }
    v.stop.store(true, Ordering::Relaxed);
    let res = v.thread.join().unwrap();
    println!("{res:?} in {:?}", started.elapsed());
    assert!(res.errors.is_empty(), "I/O errors: {:?}", res.errors);
    assert!(res.mismatches.is_empty(), "wrong data: {:?}", res.mismatches);
    assert!(res.writes >= 50 && res.reads >= 50, "{res:?}");

    // The target counted them (and nothing failed over or reconnected).
    let after = c.call("lull_get_status", Value::Null);
    assert!(status_sum(&after, "writes") - w0 >= res.writes, "{after}");
    assert!(status_sum(&after, "reads") - r0 >= res.reads, "{after}");
    assert!(status_sum(&after, "bytes_written") >= res.writes * 4096);
    let cr = &c.call("bdev_nvme_get_controllers", json!({"name": "Nvme0"}))[0]["ctrlrs"][0];
    assert_eq!(
        (cr["state"].clone(), cr["resets"].clone()),
        (json!("enabled"), json!(0))
    );
    assert_eq!(c.call("bdev_nvme_detach_controller", json!({"name": "Nvme0"})), true);
    drop(c);
    drop(rpc);
    app.shutdown();
}

// ---- (b) graceful shutdown with writes in flight ----

/// Per 4 KiB region: the last generation whose write completed successfully,
/// and the generation of a write that failed (the last one of its slot).
#[derive(Default, Clone, Copy, Debug)]
struct RegionLog {
    ok: Option<u32>,
    failed: Option<u32>,
}

struct WriteLoad {
    written: Arc<AtomicU64>,
    thread: JoinHandle<(Vec<RegionLog>, Vec<IoError>)>,
}

const W_REGION_BLOCKS: u64 = 8;

fn start_writes(ctrl: NvmeController, slots: usize, regions: u64) -> WriteLoad {
    let written = Arc::new(AtomicU64::new(0));
    let w2 = written.clone();
    let thread = std::thread::spawn(move || {
        let (tx, rx) = mpsc::channel::<(usize, Res)>();
        let mut log = vec![RegionLog::default(); regions as usize];
        let mut errors = Vec::new();
        let per_slot = regions / slots as u64;
        let at = |s: usize, k: u64| -> (u64, u32) {
            // Slot s owns regions s, s + slots, ...; each pass over them is a generation.
            let region = s as u64 + (k % per_slot) * slots as u64;
            (region, (k / per_slot) as u32 + 1)
        };
        let io = |s: usize, k: u64, tx: &Sender<(usize, Res)>| -> bool {
            let (region, generation) = at(s, k);
            let lba = region * W_REGION_BLOCKS;
            let (r, q) = place(&ctrl, s);
            let data = pattern(lba, W_REGION_BLOCKS as usize, generation);
            submit(
                &ctrl,
                r,
                q,
                rw_sqe(io_opc::WRITE, lba, W_REGION_BLOCKS as u32),
                data,
                0,
                s,
                tx,
            )
        };
        let mut ks = vec![0u64; slots];
        let mut inflight = 0;
        for s in 0..slots {
            assert!(io(s, 0, &tx));
            inflight += 1;
        }
        while inflight > 0 {
            let Ok((s, res)) = rx.recv_timeout(Duration::from_secs(15)) else {
                panic!("{inflight} writes got no completion in 15 s");
            };
            inflight -= 1;
            let (region, generation) = at(s, ks[s]);
            match res {
                Ok(_) => {
                    log[region as usize].ok = Some(generation);
                    w2.fetch_add(1, Ordering::Relaxed);
                    ks[s] += 1;
                    if io(s, ks[s], &tx) {
                        inflight += 1;
                    }
                }
                Err(e) => {
                    // The slot stops at its first failure: this write's data may or may not be there.
                    log[region as usize].failed = Some(generation);
                    errors.push(e);
                }
            }
        }
        (log, errors)
    });
    WriteLoad { written, thread }
}

fn uring_settings(file: &Path, cores: &[usize]) -> lull_daemon::config::Settings {
    let text = format!(
        r#"
cores = "{}"
log_level = "warn"
rpc_socket = "/nonexistent/unused.sock"
[[bdev]]
name = "File0"
type = "uring"
filename = "{}"
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
listen = ["127.0.0.1:0"]
namespaces = [{{ bdev = "File0" }}]
"#,
        cores_text(cores),
        file.display()
    );
    Config::from_toml(&text).unwrap().resolve().unwrap()
}

fn listener(app: &App) -> SocketAddr {
    let l = app.target().listeners();
    assert_eq!(l.len(), 1, "{l:?}");
    l[0]
}

#[test]
fn graceful_shutdown_under_load_keeps_acknowledged_writes() {
    let cores = test_cores();
    let file = temp_path("shutdown", "img");
    let regions: u64 = 8192; // 32 MiB of 4 KiB regions
    std::fs::File::create(&file)
        .unwrap()
        .set_len(regions * W_REGION_BLOCKS * BLOCK as u64)
        .unwrap();
    let app = App::start(&uring_settings(&file, &cores)).unwrap();
    let addr = listener(&app);

    // The host: its own reactors in this process.
    let host =
        Reactors::start(ReactorConfig::new(CoreList::try_from(cores.clone()).unwrap()).mode(Mode::Interrupt)).unwrap();
    let opts = NvmeOptions {
        nvme_ioq_poll_period_us: 0,
        ..NvmeOptions::default()
    }
    .no_reconnect();
    let n = host.handles().len() as u16;
    let ctrl = NvmeController::attach("Host0", NvmeTrid::new(addr, NQN, HOSTNQN), opts, host.handles(), n).unwrap();
    let slots = 32;
    let load = start_writes(ctrl.clone(), slots, regions);

    // Let writes run, then shut the daemon down under them.
    eventually("writes completing", || load.written.load(Ordering::Relaxed) >= 200);
    std::thread::sleep(Duration::from_millis(300));
    let at_shutdown = load.written.load(Ordering::Relaxed);
    let t = Instant::now();
    app.shutdown();
    let took = t.elapsed();
    println!("shutdown took {took:?} with {at_shutdown} writes done before it");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    app.shutdown(); // idempotent

    let (log, errors) = load.thread.join().unwrap();
    // Every slot ended with exactly one failure, and only a lost connection.
    assert_eq!(errors.len(), slots, "{errors:?}");
    for e in &errors {
        assert!(
            matches!(
                e,
                IoError::ControllerLost(_) | IoError::Detached | IoError::Aborted | IoError::FastFail(_)
            ),
            "not a disconnect outcome: {e:?}"
        );
    }
    let acked = log.iter().filter(|r| r.ok.is_some()).count();
    println!(
        "{acked} regions acknowledged, {} writes in flight at shutdown",
        errors.len()
    );
    assert!(acked >= 200);
    ctrl.detach();
    host.shutdown().unwrap();
    drop(app);

    // A new daemon on the same file: every acknowledged block is there.
    let app = App::start(&uring_settings(&file, &cores)).unwrap();
    let addr = listener(&app);
    let (_admin, cntlid) = SyncQueue::admin(addr, NQN, HOSTNQN, Digests::default(), 30_000).unwrap();
    let mut io = SyncQueue::io(addr, NQN, HOSTNQN, cntlid, Digests::default(), 8192).unwrap();
    let chunk_blocks: u64 = 256; // 128 KiB, the MDTS
    let total_blocks = regions * W_REGION_BLOCKS;
    let zero = [0u8; BLOCK];
    let (mut checked, mut torn_or_new) = (0u64, 0u64);
    let mut wrong = Vec::new();
    for start in (0..total_blocks).step_by(chunk_blocks as usize) {
        let data = io
            .call(
                "read back",
                rw_sqe(io_opc::READ, start, chunk_blocks as u32),
                &[],
                (chunk_blocks as usize * BLOCK) as u32,
            )
            .unwrap()
            .data;
        for (i, got) in data.chunks(BLOCK).enumerate() {
            let lba = start + i as u64;
            let r = log[(lba / W_REGION_BLOCKS) as usize];
            let is = |g: Option<u32>| g.is_some_and(|g| got == block_pattern(lba, g));
            let fine = match (r.ok, r.failed) {
                (None, None) => got == zero,
                // Acknowledged: that generation, or the failed later one over it.
                (Some(_), f) => {
                    if is(f) {
                        torn_or_new += 1;
                    }
                    is(r.ok) || is(f)
                }
                // Never acknowledged: old (zeroes) or the new data, per block.
                (None, f) => got == zero || is(f),
            };
            if r.ok.is_some() {
                checked += 1;
            }
            if !fine && wrong.len() < 10 {
                wrong.push(format!("LBA {lba} ({r:?}): starts {:02x?}", &got[..16]));
            }
        }
    }
    assert!(wrong.is_empty(), "wrong data after restart: {wrong:?}");
    assert_eq!(checked, acked as u64 * W_REGION_BLOCKS);
    println!("{checked} acknowledged blocks intact; {torn_or_new} hold an unacknowledged later write");
    drop((io, _admin));
    app.shutdown();
    std::fs::remove_file(&file).unwrap();
}
