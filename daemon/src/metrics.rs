//! Prometheus metrics (OpenMetrics text, which Prometheus scrapes natively) on `--metrics ADDR`:
//! per-core mode, busy ratio, wakeups, I/O commands and bytes, queues
//! (connections), asynchronous-bdev latency, raid volumes' state and
//! rebuild progress; encoded by `prometheus-client`,
//! the request head parsed by `httparse`, served from a thread of its own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::app::App;
use lull_reactor::Mode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoreLabel {
    core: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoreModeLabel {
    core: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RaidLabel {
    raid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RaidStateLabel {
    raid: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoreDirLabel {
    core: String,
    direction: String,
}

type CounterF = Counter<f64, AtomicU64>;

/// Renders the metrics of `app` now.
///
/// # Errors
/// Only if formatting fails (it writes to a String).
pub fn render(app: &App) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("lull");
    let mode = Family::<CoreModeLabel, Gauge>::default();
    let interrupt = Family::<CoreLabel, Gauge>::default();
    let busy = Family::<CoreLabel, CounterF>::default();
    let cpu = Family::<CoreLabel, CounterF>::default();
    let wakeups = Family::<CoreLabel, Counter>::default();
    let switches = Family::<CoreLabel, Counter>::default();
    let queues = Family::<CoreLabel, Gauge>::default();
    let ios = Family::<CoreDirLabel, Counter>::default();
    let bytes = Family::<CoreDirLabel, Counter>::default();
    let lat_sum = Family::<CoreLabel, CounterF>::default();
    let lat_count = Family::<CoreLabel, Counter>::default();
    let latency = app.async_latency();
    for (i, r) in app.reactor_status().into_iter().enumerate() {
        let core = r.core.to_string();
        let l = CoreLabel { core: core.clone() };
        for m in [Mode::Poll, Mode::Interrupt, Mode::Hybrid] {
            mode.get_or_create(&CoreModeLabel {
                core: core.clone(),
                mode: m.to_string(),
            })
            .set(i64::from(r.mode == m));
        }
        interrupt.get_or_create(&l).set(i64::from(r.mode == Mode::Interrupt));
        busy.get_or_create(&l).inc_by(r.stats.busy_ns as f64 / 1e9);
        cpu.get_or_create(&l).inc_by(r.stats.thread_cpu_ns as f64 / 1e9);
        wakeups.get_or_create(&l).inc_by(r.stats.wakeups);
        switches.get_or_create(&l).inc_by(r.stats.mode_switches);
        queues.get_or_create(&l).set(r.queues as i64);
        for (dir, n, b) in [("read", r.reads, r.bytes_read), ("write", r.writes, r.bytes_written)] {
            let d = CoreDirLabel {
                core: core.clone(),
                direction: dir.to_string(),
            };
            ios.get_or_create(&d).inc_by(n);
            bytes.get_or_create(&d).inc_by(b);
        }
        if let Some(Some((n, ns))) = latency.get(i) {
            lat_count.get_or_create(&l).inc_by(*n);
            lat_sum.get_or_create(&l).inc_by(*ns as f64 / 1e9);
        }
    }
    reg.register("reactor_mode", "1 for the mode each core's reactor is in now", mode);
    reg.register(
        "reactor_interrupt_mode_enabled",
        "1 when the core's reactor sleeps when idle (interrupt mode)",
        interrupt,
    );
    reg.register(
        "reactor_busy_seconds",
        "Time the reactor spent running pollers that did work; its rate is the busy ratio",
        busy,
    );
    reg.register("reactor_cpu_seconds", "CPU time of the reactor's thread", cpu);
    reg.register("reactor_wakeups", "Times the reactor woke from sleep", wakeups);
    reg.register("reactor_mode_switches", "Mode changes of the reactor", switches);
    reg.register(
        "target_queues",
        "NVMe/TCP queues (connections) served by the reactor now",
        queues,
    );
    reg.register("target_io_commands", "I/O commands executed", ios);
    reg.register("target_io_bytes", "Bytes transferred by I/O commands", bytes);
    reg.register(
        "target_async_io_latency_seconds",
        "Total time of asynchronous bdev commands (file, NVMe) from submission to completion; \
         divided by target_async_io_completions it is their mean latency",
        lat_sum,
    );
    reg.register(
        "target_async_io_completions",
        "Asynchronous bdev commands (file, NVMe) completed",
        lat_count,
    );
    let t = app.target();
    let g = |v: usize| {
        let x = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        x.set(v as i64);
        x
    };
    reg.register(
        "target_controllers",
        "Live NVMe-oF controllers",
        g(t.controller_count()),
    );
    reg.register(
        "target_subsystems",
        "NVM subsystems",
        g(t.subsystems().len().saturating_sub(1)),
    );
    reg.register(
        "nvme_controllers",
        "Attached remote NVMe controllers (initiator)",
        g(app.controllers().len()),
    );
    raid_metrics(app, &mut reg);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
}

/// Each raid volume's state, bases and rebuild.
fn raid_metrics(app: &App, reg: &mut Registry) {
    let state = Family::<RaidStateLabel, Gauge>::default();
    let slots = Family::<RaidLabel, Gauge>::default();
    let operational = Family::<RaidLabel, Gauge>::default();
    let rebuilding = Family::<RaidLabel, Gauge>::default();
    let copied = Family::<RaidLabel, Gauge>::default();
    let total = Family::<RaidLabel, Gauge>::default();
    let waited = Family::<RaidLabel, Counter>::default();
    for v in app.raid_volumes() {
        let r = v.status();
        let l = RaidLabel { raid: r.name.clone() };
        for s in ["online", "configuring", "offline"] {
            state
                .get_or_create(&RaidStateLabel {
                    raid: r.name.clone(),
                    state: s.to_string(),
                })
                .set(i64::from(r.state.as_str() == s));
        }
        slots.get_or_create(&l).set(r.num_base_bdevs as i64);
        operational.get_or_create(&l).set(r.num_base_bdevs_operational as i64);
        let p = r.process.as_ref();
        rebuilding.get_or_create(&l).set(i64::from(p.is_some()));
        copied
            .get_or_create(&l)
            .set(p.map_or(0, |p| i64::try_from(p.blocks).unwrap_or(i64::MAX)));
        total
            .get_or_create(&l)
            .set(p.map_or(0, |p| i64::try_from(p.total_blocks).unwrap_or(i64::MAX)));
        waited.get_or_create(&l).inc_by(v.writes_waited());
    }
    reg.register("raid_state", "1 for the state each raid volume is in now", state);
    reg.register("raid_base_bdevs", "Base bdev slots of the raid volume", slots);
    reg.register(
        "raid_base_bdevs_operational",
        "Base bdevs in use by the raid volume (in sync, or being rebuilt)",
        operational,
    );
    reg.register(
        "raid_rebuilding",
        "1 while a rebuild runs on the raid volume",
        rebuilding,
    );
    reg.register(
        "raid_rebuild_blocks",
        "Blocks the running rebuild has copied (0 when none runs)",
        copied,
    );
    reg.register(
        "raid_rebuild_total_blocks",
        "Blocks the running rebuild copies in all (0 when none runs); blocks / total is its progress",
        total,
    );
    reg.register(
        "raid_rebuild_writes_waited",
        "Writes that waited for a rebuild's window to move on",
        waited,
    );
}

/// Most scrapes served at once; more connections are closed at once.
const MAX_SCRAPERS: usize = 16;
/// A scraper must send its request within this time.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Largest request head read, bytes.
const MAX_HEAD: usize = 8192;

/// A running metrics endpoint; stops on drop.
///
/// HTTP/1.1 `GET /metrics` only: the request head is parsed by `httparse`
/// from at most 8 KiB read within 5 s, any body is ignored (never read into
/// memory), at most 16 connections are served at once, and each gets one
/// answer and is closed. The endpoint is unauthenticated: bind it to a
/// management address.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `GET /metrics` (and `/`) on `addr`.
    ///
    /// # Errors
    /// A message naming the address when it cannot be bound.
    pub fn start(app: Arc<App>, addr: SocketAddr) -> Result<MetricsServer, String> {
        let listener = TcpListener::bind(addr).map_err(|e| format!("metrics {addr}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| format!("metrics {addr}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lull-metrics".into())
            .spawn(move || accept_loop(&app, &listener, &stop2))
            .map_err(|e| format!("metrics thread: {e}"))?;
        tracing::info!(%bound, "Prometheus metrics on /metrics");
        Ok(MetricsServer {
            addr: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

// A blocking accept: an idle endpoint costs no wakeups; Drop wakes it by connecting.
fn accept_loop(app: &Arc<App>, listener: &TcpListener, stop: &AtomicBool) {
    let busy = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: keep the endpoint, try again shortly.
                tracing::warn!(error = %e, "metrics accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if busy.load(Ordering::Relaxed) >= MAX_SCRAPERS {
            continue; // dropped: closed at once
        }
        busy.fetch_add(1, Ordering::Relaxed);
        let (app, busy2) = (app.clone(), busy.clone());
        let spawned = std::thread::Builder::new().name("lull-scrape".into()).spawn(move || {
            serve(&app, stream);
            busy2.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn serve(app: &App, mut stream: TcpStream) {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (status, body, content_type) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || head.len() > MAX_HEAD {
            return;
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head) {
            Ok(httparse::Status::Partial) => continue,
            Err(_) => break ("400 Bad Request", "bad request\n".to_string(), "text/plain"),
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
                break if req.method != Some("GET") {
                    ("405 Method Not Allowed", "only GET\n".to_string(), "text/plain")
                } else if path == "/metrics" || path == "/" {
                    match render(app) {
                        Ok(b) => (
                            "200 OK",
                            b,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                        Err(_) => (
                            "500 Internal Server Error",
                            "encoding failed\n".to_string(),
                            "text/plain",
                        ),
                    }
                } else {
                    ("404 Not Found", "not found; try /metrics\n".to_string(), "text/plain")
                };
            }
        }
    };
    let _ = stream.set_write_timeout(Some(REQUEST_DEADLINE));
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
    }
}
