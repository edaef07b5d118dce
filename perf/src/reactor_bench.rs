//! `lull bench reactor`: the reactor's modes side by side in one process.
//!
//! For every configuration (poll; interrupt; hybrid at several `idle_poll_us`;
//! glommio with and without `spin_before_park`; a spinning-atomic and an
//! eventfd+epoll floor) it measures:
//! - the cross-core round trip of a message between two reactors pinned to
//!   two cores (typed channels both ways, one message in flight), in rounds
//!   that alternate the configurations (A B A B) so drift hits all alike;
//! - the wake latency of an fd poller: a thread on the other core stamps the
//!   time and writes an eventfd every `wake_gap`; the poller reads it;
//! - the CPU an idle reactor (or executor) uses over `idle`, all
//!   configurations at once, from each thread's own CPU clock.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lull_reactor::{
    Context, CoreList, FdSource, Interest, Mode, PollStatus, ReactorConfig, ReactorError, ReactorHandle, Reactors,
    Sender,
};
use rustix::event::{EventfdFlags, eventfd};
use serde::Serialize;

use crate::Latency;
use crate::affinity::PinGuard;

/// What to run and for how long.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Two CPUs: the first hosts the measuring side, the second the echo side.
    pub cores: (usize, usize),
    /// Whether the two CPUs are distinct (false on a 1-CPU machine: both on CPU 0, unpinned).
    pub pinned: bool,
    /// Round-trip measuring time per configuration, split over `rounds`.
    pub rtt: Duration,
    /// Rounds of the A B A B alternation.
    pub rounds: u32,
    /// Idle-CPU window (all configurations measured at once).
    pub idle: Duration,
    /// Wake-latency samples per configuration.
    pub wake_samples: u32,
    /// Time between wake samples; longer than every spin window measured, so
    /// that interrupt and hybrid reactors are asleep when the fd fires.
    pub wake_gap: Duration,
    /// Hybrid spin windows to measure, in us.
    pub idle_poll_us: Vec<u64>,
    /// Measure glommio too (when built with the `glommio` feature).
    pub glommio: bool,
}

impl BenchOptions {
    /// Defaults for a machine: the first two usable CPUs (or CPU 0 twice).
    ///
    /// # Errors
    /// When the usable CPUs cannot be read.
    pub fn for_this_machine() -> Result<Self, ReactorError> {
        let usable = CoreList::usable()?;
        let c = usable.cores();
        let (cores, pinned) = if c.len() >= 2 {
            ((c[0], c[1]), true)
        } else {
            ((c[0], c[0]), false)
        };
        Ok(BenchOptions {
            cores,
            pinned,
            rtt: Duration::from_millis(1500),
            rounds: 3,
            idle: Duration::from_secs(10),
            wake_samples: 400,
            wake_gap: Duration::from_millis(2),
            idle_poll_us: vec![10, 50, 200, 1000],
            glommio: cfg!(feature = "glommio"),
        })
    }

    /// Uses the given two CPUs.
    ///
    /// # Errors
    /// When `cores` does not name exactly two usable CPUs.
    pub fn with_cores(mut self, cores: &CoreList) -> Result<Self, ReactorError> {
        cores.validate_online()?;
        match cores.cores() {
            [a, b] => {
                self.cores = (*a, *b);
                self.pinned = true;
                Ok(self)
            }
            _ => Err(ReactorError::InvalidSetting {
                field: "cores",
                value: cores.to_string(),
                allowed: "exactly two CPUs, e.g. 0,1",
            }),
        }
    }
}

/// One configuration's results. Times in microseconds; CPU in % of one core.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// Configuration name, e.g. `hybrid-200us`.
    pub config: String,
    /// `poll`, `interrupt`, `hybrid`, `glommio` or `baseline`.
    pub mode: String,
    /// Hybrid spin window (or glommio's `spin_before_park`), us.
    pub idle_poll_us: Option<u64>,
    /// Round trips measured.
    pub rtt_samples: u64,
    /// Round trip, median, us.
    pub rtt_p50_us: Option<f64>,
    /// Round trip, 99th percentile, us.
    pub rtt_p99_us: Option<f64>,
    /// Round trip, 99.9th percentile, us.
    pub rtt_p999_us: Option<f64>,
    /// Median round trip divided by poll mode's.
    pub rtt_p50_vs_poll: Option<f64>,
    /// fd poller wake latency, median, us.
    pub wake_p50_us: Option<f64>,
    /// fd poller wake latency, 99th percentile, us.
    pub wake_p99_us: Option<f64>,
    /// Reactor CPU time per wake sample, us (what one sleep/wake cycle costs).
    pub wake_cpu_us: Option<f64>,
    /// CPU an idle reactor uses, % of one core.
    pub idle_cpu_pct: Option<f64>,
    /// Why a measurement is missing, if one is.
    pub note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Subject {
    Spin,
    Epoll,
    Reactor(Mode, u64),
    #[cfg_attr(not(feature = "glommio"), allow(dead_code))]
    Glommio(Option<u64>),
}

impl Subject {
    fn name(self) -> String {
        match self {
            Subject::Spin => "baseline-spin".into(),
            Subject::Epoll => "baseline-epoll".into(),
            Subject::Reactor(Mode::Hybrid, us) => format!("hybrid-{us}us"),
            Subject::Reactor(m, _) => m.to_string(),
            Subject::Glommio(None) => "glommio".into(),
            Subject::Glommio(Some(us)) => format!("glommio-spin-{us}us"),
        }
    }

    fn row(self) -> BenchRow {
        let (mode, idle_poll_us) = match self {
            Subject::Spin | Subject::Epoll => ("baseline".to_string(), None),
            Subject::Reactor(m, us) => (m.to_string(), (m == Mode::Hybrid).then_some(us)),
            Subject::Glommio(us) => ("glommio".to_string(), us),
        };
        BenchRow {
            config: self.name(),
            mode,
            idle_poll_us,
            rtt_samples: 0,
            rtt_p50_us: None,
            rtt_p99_us: None,
            rtt_p999_us: None,
            rtt_p50_vs_poll: None,
            wake_p50_us: None,
            wake_p99_us: None,
            wake_cpu_us: None,
            idle_cpu_pct: None,
            note: None,
        }
    }
}

fn subjects(o: &BenchOptions) -> Vec<Subject> {
    let mut s = vec![Subject::Reactor(Mode::Poll, 0), Subject::Reactor(Mode::Interrupt, 0)];
    s.extend(o.idle_poll_us.iter().map(|&us| Subject::Reactor(Mode::Hybrid, us)));
    if o.glommio && cfg!(feature = "glommio") {
        s.push(Subject::Glommio(None));
        s.push(Subject::Glommio(Some(200)));
    }
    s.push(Subject::Spin);
    s.push(Subject::Epoll);
    s
}

/// Items handled by the measuring reactor's channel.
enum Driver {
    Start {
        until: Instant,
        pings: Sender<Instant>,
        done: mpsc::Sender<Latency>,
    },
    Reply(Instant),
}

/// Two reactors wired for ping-pong.
struct Rig {
    reactors: Reactors,
    driver: Sender<Driver>,
    pings: Sender<Instant>,
}

fn on<R: Send + 'static>(h: &ReactorHandle, f: impl FnOnce(&mut Context) -> R + Send + 'static) -> Result<R, String> {
    let (tx, rx) = mpsc::channel();
    h.try_send(move |cx| {
        let _ = tx.send(f(cx));
    })
    .map_err(|e| e.to_string())?;
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| "reactor did not answer".to_string())
}

impl Rig {
    fn start(o: &BenchOptions) -> Result<Rig, String> {
        let cores = if o.pinned {
            vec![o.cores.0, o.cores.1]
        } else {
            vec![0, 1]
        };
        let mut config = ReactorConfig::new(CoreList::try_from(cores).map_err(|e| e.to_string())?);
        config.pin = o.pinned;
        let reactors = Reactors::start(config).map_err(|e| e.to_string())?;
        let (a, b) = (reactors.handles()[0].clone(), reactors.handles()[1].clone());
        let driver = on(&a, |cx| {
            let mut run: Option<(Instant, Sender<Instant>, mpsc::Sender<Latency>, Latency)> = None;
            cx.channel(16, move |_: &mut Context, item: Driver| match item {
                Driver::Start { until, pings, done } => {
                    let _ = pings.try_send(Instant::now());
                    run = Some((until, pings, done, Latency::new()));
                }
                Driver::Reply(sent) => {
                    let now = Instant::now();
                    if let Some((until, pings, _, lat)) = run.as_mut() {
                        lat.record_ns(now.duration_since(sent).as_nanos() as u64);
                        if now < *until {
                            let _ = pings.try_send(Instant::now());
                            return;
                        }
                    }
                    if let Some((_, _, done, lat)) = run.take() {
                        let _ = done.send(lat);
                    }
                }
            })
        })?;
        let back = driver.clone();
        let pings = on(&b, move |cx| {
            cx.channel(16, move |_: &mut Context, sent: Instant| {
                let _ = back.try_send(Driver::Reply(sent));
            })
        })?;
        Ok(Rig {
            reactors,
            driver,
            pings,
        })
    }

    fn set(&self, mode: Mode, idle_poll: Duration) -> Result<(), String> {
        for h in self.reactors.handles() {
            h.set_idle_poll(idle_poll).map_err(|e| e.to_string())?;
            h.set_mode(mode);
        }
        Ok(())
    }

    fn rtt(&self, mode: Mode, idle_poll: Duration, run: Duration) -> Result<Latency, String> {
        self.set(mode, idle_poll)?;
        std::thread::sleep(Duration::from_millis(20));
        let (done, rx) = mpsc::channel();
        self.driver
            .try_send(Driver::Start {
                until: Instant::now() + run,
                pings: self.pings.clone(),
                done,
            })
            .map_err(|e| e.to_string())?;
        rx.recv_timeout(run + Duration::from_secs(30))
            .map_err(|_| "round trips stalled".to_string())
    }

    /// Wake latency of an fd poller on the first reactor, woken from the second core.
    fn wake(&self, o: &BenchOptions, mode: Mode, idle_poll: Duration) -> Result<(Latency, f64), String> {
        let (a, b) = (&self.reactors.handles()[0], &self.reactors.handles()[1]);
        a.set_idle_poll(idle_poll).map_err(|e| e.to_string())?;
        a.set_mode(mode);
        b.set_mode(Mode::Interrupt);
        let efd: OwnedFd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).map_err(|e| e.to_string())?;
        let poller_fd = efd.try_clone().map_err(|e| e.to_string())?;
        let base = Instant::now();
        let stamp = Arc::new(AtomicU64::new(0));
        let st = stamp.clone();
        let (tx, rx) = mpsc::channel::<u64>();
        let id = on(a, move |cx| {
            let p = FdSource::new(poller_fd, move |_: &mut Context, fd: &mut OwnedFd, _| {
                let now = base.elapsed().as_nanos() as u64;
                let mut buf = [0u8; 8];
                if rustix::io::read(&*fd, &mut buf).is_err() {
                    return PollStatus::Idle;
                }
                let _ = tx.send(now.saturating_sub(st.load(Ordering::Acquire)));
                PollStatus::Busy
            });
            cx.register_fd(p, Interest::READABLE)
        })?
        .map_err(|e| e.to_string())?;
        let pin = PinGuard::pin(o.pinned.then_some(o.cores.1));
        std::thread::sleep(Duration::from_millis(20));
        let mut lat = Latency::new();
        let cpu0 = a.stats().thread_cpu_ns;
        // The gap must outlast the spin window, or a hybrid reactor is still
        // spinning when the fd fires and the sample is no wakeup at all.
        let gap = o.wake_gap.max(idle_poll * 2);
        for _ in 0..o.wake_samples {
            std::thread::sleep(gap);
            stamp.store(base.elapsed().as_nanos() as u64, Ordering::Release);
            let _ = rustix::io::write(&efd, &1u64.to_ne_bytes());
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(ns) => lat.record_ns(ns),
                Err(_) => return Err("fd poller did not run".into()),
            }
        }
        let cpu = a.stats().thread_cpu_ns.saturating_sub(cpu0) as f64 / f64::from(o.wake_samples.max(1)) / 1000.0;
        drop(pin);
        on(a, move |cx| cx.unregister(id))?.map_err(|e| e.to_string())?;
        Ok((lat, cpu))
    }
}

/// Idle CPU of one reactor per configuration, all measured at the same time.
fn idle_cpu(o: &BenchOptions, subjects: &[Subject]) -> Vec<(Subject, Result<f64, String>)> {
    let mut sets = Vec::new();
    let mut results = Vec::new();
    let mut glommio_threads = Vec::new();
    for &s in subjects {
        match s {
            Subject::Reactor(mode, us) => {
                // The spinning reactor gets the second CPU; sleepers share the first.
                let core = if mode == Mode::Poll { o.cores.1 } else { o.cores.0 };
                let mut config = ReactorConfig::new(CoreList::try_from(vec![core]).expect("one valid core"))
                    .mode(mode)
                    .idle_poll(Duration::from_micros(us));
                config.pin = o.pinned;
                match Reactors::start(config) {
                    Ok(r) => sets.push((s, r)),
                    Err(e) => results.push((s, Err(e.to_string()))),
                }
            }
            #[cfg(feature = "glommio")]
            Subject::Glommio(spin) => {
                let (core, window) = (o.cores.0, o.idle);
                glommio_threads.push((
                    s,
                    std::thread::spawn(move || {
                        crate::glommio_ref::idle_cpu(core, spin.map(Duration::from_micros), window)
                    }),
                ));
            }
            _ => {}
        }
    }
    let glommio_threads: Vec<(Subject, std::thread::JoinHandle<Result<f64, String>>)> =
        std::mem::take(&mut glommio_threads);
    // Let every reactor settle (hybrid windows expire) before the window opens.
    let longest = o.idle_poll_us.iter().copied().max().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(100).max(Duration::from_micros(longest * 2)));
    let before: Vec<_> = sets.iter().map(|(_, r)| r.handles()[0].stats()).collect();
    std::thread::sleep(o.idle);
    for ((s, r), a) in sets.into_iter().zip(before) {
        let b = r.handles()[0].stats();
        let share = b.thread_cpu_ns.saturating_sub(a.thread_cpu_ns) as f64 / b.wall_ns_since(&a).max(1) as f64;
        results.push((s, Ok(share)));
        let _ = r.shutdown();
    }
    for (s, t) in glommio_threads {
        results.push((
            s,
            t.join().unwrap_or_else(|_| Err("glommio idle thread panicked".into())),
        ));
    }
    results
}

/// Runs the whole benchmark; `progress` gets one line per step.
///
/// # Errors
/// When the two reactors cannot be started at all.
pub fn run(o: &BenchOptions, mut progress: impl FnMut(&str)) -> Result<Vec<BenchRow>, String> {
    let subjects = subjects(o);
    let mut rows: Vec<BenchRow> = subjects.iter().map(|s| s.row()).collect();
    let mut rtts: Vec<Latency> = subjects.iter().map(|_| Latency::new()).collect();
    let rig = Rig::start(o)?;
    let slice = o.rtt / o.rounds.max(1);
    for round in 0..o.rounds.max(1) {
        for (i, &s) in subjects.iter().enumerate() {
            progress(&format!(
                "round trip, round {}/{}: {}",
                round + 1,
                o.rounds.max(1),
                s.name()
            ));
            let r = match s {
                Subject::Reactor(mode, us) => rig.rtt(mode, Duration::from_micros(us), slice),
                // The references run on the same CPUs: park our reactors first.
                Subject::Spin => rig
                    .set(Mode::Interrupt, Duration::ZERO)
                    .map(|()| crate::baseline::spin_rtt(o.cores, slice)),
                Subject::Epoll => rig
                    .set(Mode::Interrupt, Duration::ZERO)
                    .and_then(|()| crate::baseline::epoll_rtt(o.cores, slice).map_err(|e| e.to_string())),
                #[cfg(feature = "glommio")]
                Subject::Glommio(spin) => rig
                    .set(Mode::Interrupt, Duration::ZERO)
                    .and_then(|()| crate::glommio_ref::rtt(o.cores, spin.map(Duration::from_micros), slice)),
                #[cfg(not(feature = "glommio"))]
                Subject::Glommio(_) => Err("built without the glommio feature".into()),
            };
            match r {
                Ok(l) => rtts[i].merge(&l),
                Err(e) => rows[i].note = Some(e),
            }
        }
    }
    for (row, lat) in rows.iter_mut().zip(&rtts) {
        row.rtt_samples = lat.count();
        row.rtt_p50_us = lat.quantile_us(0.5);
        row.rtt_p99_us = lat.quantile_us(0.99);
        row.rtt_p999_us = lat.quantile_us(0.999);
    }
    let poll_p50 = rows.first().and_then(|r| r.rtt_p50_us);
    for row in &mut rows {
        row.rtt_p50_vs_poll = match (row.rtt_p50_us, poll_p50) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
    }
    for (i, &s) in subjects.iter().enumerate() {
        if let Subject::Reactor(mode, us) = s {
            progress(&format!("fd wake latency: {}", s.name()));
            match rig.wake(o, mode, Duration::from_micros(us)) {
                Ok((lat, cpu)) => {
                    rows[i].wake_p50_us = lat.quantile_us(0.5);
                    rows[i].wake_p99_us = lat.quantile_us(0.99);
                    rows[i].wake_cpu_us = (mode != Mode::Poll).then_some(cpu);
                }
                Err(e) => rows[i].note = Some(e),
            }
        }
    }
    rig.reactors.shutdown().map_err(|e| e.to_string())?;
    progress(&format!("idle CPU, all configurations at once, {:?}", o.idle));
    for (s, r) in idle_cpu(o, &subjects) {
        if let Some(i) = subjects.iter().position(|x| *x == s) {
            match r {
                Ok(share) => rows[i].idle_cpu_pct = Some(share * 100.0),
                Err(e) => rows[i].note = Some(e),
            }
        }
    }
    for r in &mut rows {
        for v in [
            &mut r.rtt_p50_us,
            &mut r.rtt_p99_us,
            &mut r.rtt_p999_us,
            &mut r.rtt_p50_vs_poll,
            &mut r.wake_p50_us,
            &mut r.wake_p99_us,
            &mut r.wake_cpu_us,
        ] {
            *v = v.map(|x| (x * 1000.0).round() / 1000.0);
        }
        r.idle_cpu_pct = r.idle_cpu_pct.map(|x| (x * 10_000.0).round() / 10_000.0);
    }
    Ok(rows)
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.decimals$}"))
}

/// The results as an aligned text table.
pub fn table(rows: &[BenchRow]) -> String {
    let head = [
        "config",
        "rtt p50 us",
        "rtt p99 us",
        "rtt p99.9 us",
        "p50 vs poll",
        "wake p50 us",
        "wake p99 us",
        "cpu/wake us",
        "idle cpu %",
    ];
    let mut lines: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        lines.push(vec![
            r.config.clone(),
            cell(r.rtt_p50_us, 2),
            cell(r.rtt_p99_us, 2),
            cell(r.rtt_p999_us, 2),
            r.rtt_p50_vs_poll.map_or_else(|| "-".into(), |x| format!("{x:.2}x")),
            cell(r.wake_p50_us, 2),
            cell(r.wake_p99_us, 2),
            cell(r.wake_cpu_us, 2),
            cell(r.idle_cpu_pct, 4),
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c == 0 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if n == 0 {
            out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
            out.push('\n');
        }
    }
    for r in rows.iter().filter(|r| r.note.is_some()) {
        out.push_str(&format!("note: {}: {}\n", r.config, r.note.as_deref().unwrap_or("")));
    }
    out
}
