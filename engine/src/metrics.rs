//! Prometheus metrics (OpenMetrics text, which Prometheus scrapes natively) on `--metrics ADDR`:
//! per-core mode, busy ratio, wakeups, I/O commands and bytes, queues
//! (connections), asynchronous-bdev latency; encoded by `prometheus-client`,
//! served by `tiny_http` on a thread of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

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
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
}

/// A running metrics endpoint; stops on drop.
pub struct MetricsServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `GET /metrics` (and `/`) on `addr`.
    ///
    /// # Errors
    /// A message naming the address when it cannot be bound.
    pub fn start(app: Arc<App>, addr: SocketAddr) -> Result<MetricsServer, String> {
        let server = tiny_http::Server::http(addr).map_err(|e| format!("metrics {addr}: {e}"))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| format!("metrics {addr}: not an IP listener"))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, srv) = (stop.clone(), server.clone());
        let thread = std::thread::Builder::new()
            .name("lull-metrics".into())
            .spawn(move || {
                let content_type = tiny_http::Header::from_bytes(
                    &b"Content-Type"[..],
                    &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
                )
                .ok();
                // Blocks until a request or `unblock` (no periodic wakeup while idle).
                while !stop2.load(Ordering::Relaxed) {
                    let Ok(req) = srv.recv() else { break };
                    let path = req.url().split('?').next().unwrap_or("");
                    let resp = if req.method() != &tiny_http::Method::Get {
                        tiny_http::Response::from_string("only GET\n").with_status_code(405)
                    } else if path == "/metrics" || path == "/" {
                        match (render(&app), content_type.clone()) {
                            (Ok(body), Some(h)) => tiny_http::Response::from_string(body).with_header(h),
                            (Ok(body), None) => tiny_http::Response::from_string(body),
                            (Err(_), _) => tiny_http::Response::from_string("encoding failed\n").with_status_code(500),
                        }
                    } else {
                        tiny_http::Response::from_string("not found; try /metrics\n").with_status_code(404)
                    };
                    let _ = req.respond(resp);
                }
            })
            .map_err(|e| format!("metrics thread: {e}"))?;
        tracing::info!(%bound, "Prometheus metrics on /metrics");
        Ok(MetricsServer {
            addr: bound,
            server,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
