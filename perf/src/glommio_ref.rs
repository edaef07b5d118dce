//! glommio 0.9 as the reference: two executors pinned like our reactors,
//! ping-ponging over a `shared_channel`, with and without `spin_before_park`.

use std::time::{Duration, Instant};

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

use crate::Latency;

fn builder(core: usize, spin: Option<Duration>) -> LocalExecutorBuilder {
    let b = LocalExecutorBuilder::new(Placement::Fixed(core));
    match spin {
        Some(d) => b.spin_before_park(d),
        None => b,
    }
}

/// Round trips between executors on `cores`; `Err` says why glommio could not run.
pub(crate) fn rtt(cores: (usize, usize), spin: Option<Duration>, run: Duration) -> Result<Latency, String> {
    let (ping_tx, ping_rx) = shared_channel::new_bounded::<Instant>(16);
    let (pong_tx, pong_rx) = shared_channel::new_bounded::<Instant>(16);
    let echo = builder(cores.1, spin)
        .name("glommio-echo")
        .spawn(move || async move {
            let rx = ping_rx.connect().await;
            let tx = pong_tx.connect().await;
            while let Some(t) = rx.recv().await {
                if tx.send(t).await.is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("glommio executor on CPU {}: {e}", cores.1))?;
    let driver = builder(cores.0, spin)
        .name("glommio-driver")
        .spawn(move || async move {
            let tx = ping_tx.connect().await;
            let rx = pong_rx.connect().await;
            let mut lat = Latency::new();
            let end = Instant::now() + run;
            while Instant::now() < end {
                if tx.send(Instant::now()).await.is_err() {
                    break;
                }
                match rx.recv().await {
                    Some(t) => lat.record_ns(t.elapsed().as_nanos() as u64),
                    None => break,
                }
            }
            lat
        })
        .map_err(|e| format!("glommio executor on CPU {}: {e}", cores.0))?;
    let lat = driver.join().map_err(|e| format!("glommio driver: {e}"))?;
    echo.join().map_err(|e| format!("glommio echo: {e}"))?;
    Ok(lat)
}

/// CPU share (of one core) an idle executor uses over `window`.
pub(crate) fn idle_cpu(core: usize, spin: Option<Duration>, window: Duration) -> Result<f64, String> {
    let ex = builder(core, spin)
        .name("glommio-idle")
        .spawn(move || async move {
            let c0 = thread_cpu_ns();
            let t0 = Instant::now();
            glommio::timer::sleep(window).await;
            (thread_cpu_ns() - c0) as f64 / t0.elapsed().as_nanos() as f64
        })
        .map_err(|e| format!("glommio executor on CPU {core}: {e}"))?;
    ex.join().map_err(|e| format!("glommio idle: {e}"))
}

fn thread_cpu_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
