//! `lull bench volume` end to end, short: three daemons started as children,
//! one configuration and one load, rows (from `--out`'s file) of the right
//! shape with sane values and the table with the script's columns; and no daemon or scratch directory left behind after a run, an
//! error, a Ctrl-C or the benchmark being killed.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest any of these runs may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// A base port with it and the next two free on 127.0.0.1 (checked by
/// binding them; another process may still take one before the run does).
fn free_port_base() -> u16 {
    for _ in 0..50 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(a) = l.local_addr() else { continue };
        let p = a.port();
        if p > 65_000 {
            continue;
        }
        drop(l);
        let all_free = (0..3).all(|i| TcpListener::bind(("127.0.0.1", p + i)).is_ok());
        if all_free {
            return p;
        }
    }
    panic!("no three free consecutive ports");
}

/// `lull bench volume ARGS` with stderr piped; stdout piped too.
fn bench(args: &[&str], port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lull"))
        .args(["bench", "volume", "--port-base", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Processes other than `bench` whose command line names its scratch
/// directory (`lull-volbench.PID.`), with their state letter.
fn leftovers(bench_pid: u32) -> Vec<(u32, String)> {
    let mark = format!("lull-volbench.{bench_pid}.");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(&mark) {
            let state = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().take(1).collect()))
                .unwrap_or_default();
            out.push((pid, state));
        }
    }
    out
}

/// Whether the scratch directory of `bench_pid` is still there.
fn scratch_left(bench_pid: u32) -> Vec<String> {
    let mark = format!("lull-volbench.{bench_pid}.");
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.starts_with(&mark))
        .collect()
}

/// Waits for `child` to exit within [`DEADLINE`] (killing it and failing
/// otherwise) and returns its stdout and stderr.
fn finish(mut child: Child) -> (std::process::ExitStatus, String, String) {
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        let _ = tx.send(());
        s
    });
    let status = wait_or_kill(&mut child);
    let _ = rx.recv_timeout(Duration::from_secs(5));
    (status, t_out.join().unwrap(), t_err.join().unwrap())
}

fn wait_or_kill(child: &mut Child) -> std::process::ExitStatus {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lull bench volume ran past {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines of the child's stderr, as they come.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for the line saying the daemons are up; returns their pids.
fn daemons_up(lines: &mpsc::Receiver<String>) -> Vec<u32> {
    let until = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while Instant::now() < until {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if line.contains("daemons E (pid") {
            return line
                .split("(pid ")
                .skip(1)
                .filter_map(|s| s.split(')').next()?.parse().ok())
                .collect();
        }
        seen.push(line);
    }
    panic!("the daemons did not come up: {seen:#?}");
}

/// Whether `pid` is gone (or a zombie nobody reaps, as an orphan under an
/// init that does not reap is: it runs nothing).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')),
    }
}

fn all_dead_soon(pids: &[u32]) -> bool {
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        if pids.iter().all(|&p| dead(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The table printed: the script's columns, a line per namespace, the
/// idle line and the ratios.
fn check_table(stdout: &str) {
    let head: Vec<&str> = stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        [
            "config",
            "load",
            "ns",
            "iops",
            "mean_us",
            "p99_us",
            "E%",
            "R1%",
            "R2%",
            "all%",
            "cpu_us/io",
            "host%",
            "+host_us/io"
        ]
    );
    for ns in ["vol0", "plain"] {
        let l = stdout
            .lines()
            .find(|l| l.starts_with("interrupt:0") && l.contains("randwrite:4k:8") && l.contains(ns))
            .unwrap_or_else(|| panic!("no {ns} line: {stdout}"));
        assert_eq!(l.split_whitespace().count(), head.len(), "{l}");
    }
    assert!(stdout.contains("idle(1 IOPS)"), "{stdout}");
    let ratios = stdout
        .split("volume / plain")
        .nth(1)
        .unwrap_or_else(|| panic!("no ratios: {stdout}"));
    assert!(
        ratios
            .lines()
            .any(|l| l.starts_with("interrupt:0") && l.contains("randwrite:4k:8")),
        "{stdout}"
    );
}

#[test]
fn one_configuration_and_load_give_rows_for_both_namespaces_and_idle() {
    let port = free_port_base();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-volume-{}", std::process::id()));
    let child = bench(
        &[
            "--configs",
            "interrupt:0",
            "--loads",
            "randwrite:4k:8",
            "--time",
            "1",
            "--ramp-ms",
            "200",
            "--idle-secs",
            "1",
            "--engine-core",
            "0",
            "--out",
            out.to_str().unwrap(),
        ],
        port,
    );
    let pid = child.id();
    let (status, stdout, stderr) = finish(child);
    assert!(status.success(), "{stderr}");
    let rows: Vec<Value> = serde_json::from_slice(&std::fs::read(out.join("volume.json")).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    check_table(&stdout);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}"));
    for r in &rows {
        assert_eq!(r["config"], "interrupt:0", "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        for k in [
            "engine_cpu_pct",
            "r1_cpu_pct",
            "r2_cpu_pct",
            "host_cpu_pct",
            "host_reactor_cpu_pct",
        ] {
            assert!((0.0..=200.0).contains(&f(r, k)), "{k}: {r}");
        }
        let sum = f(r, "engine_cpu_pct") + f(r, "r1_cpu_pct") + f(r, "r2_cpu_pct");
        assert!((f(r, "daemons_cpu_pct") - sum).abs() < 1e-6, "{r}");
        assert!(f(r, "secs") > 0.5, "{r}");
    }
    let row = |ns: &str, load: &str| {
        rows.iter()
            .find(|r| r["ns"] == ns && r["load"] == load)
            .unwrap_or_else(|| panic!("no {ns} row for {load}: {rows:#?}"))
    };
    let (vol, plain, idle) = (
        row("vol0", "randwrite:4k:8"),
        row("plain", "randwrite:4k:8"),
        row("vol0", "idle"),
    );
    for r in [vol, plain] {
        let iops = f(r, "iops");
        assert!(iops > 0.0, "{r}");
        assert!(f(r, "p99_us") >= f(r, "mean_us") * 0.5, "{r}");
        // The engine and the host did the work.
        assert!(f(r, "engine_cpu_pct") > 0.0 && f(r, "host_cpu_pct") > 0.0, "{r}");
        let per_io = f(r, "daemons_cpu_pct") * 1e4 / iops;
        assert!(
            (f(r, "daemons_us_per_io") - per_io).abs() < 1e-6 * per_io.max(1.0),
            "{r}"
        );
        let all = (f(r, "daemons_cpu_pct") + f(r, "host_cpu_pct")) * 1e4 / iops;
        assert!((f(r, "all_us_per_io") - all).abs() < 1e-6 * all.max(1.0), "{r}");
    }
    // Writes on the raid1 go to both remote replicas.
    assert!(f(vol, "r1_cpu_pct") > 0.0 && f(vol, "r2_cpu_pct") > 0.0, "{vol}");
    let ratio = f(vol, "iops") / f(plain, "iops");
    assert!((f(vol, "iops_vs_plain") - ratio).abs() < 1e-9, "{vol}");
    assert!(f(vol, "daemons_us_per_io_vs_plain") > 0.0 && f(vol, "all_us_per_io_vs_plain") > 0.0);
    assert!(plain["iops_vs_plain"].is_null(), "{plain}");
    // The idle row: about 1 I/O per second, no per-I/O CPU.
    assert!(f(idle, "iops") <= 3.0, "{idle}");
    assert!(
        idle["daemons_us_per_io"].is_null() && idle["all_us_per_io"].is_null(),
        "{idle}"
    );
    assert_eq!(leftovers(pid), Vec::new(), "daemons left running");
    assert_eq!(scratch_left(pid), Vec::<String>::new(), "scratch directory left");
}

#[test]
fn bad_flags_name_the_flag_and_what_is_allowed() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lull"))
            .args(["bench", "volume"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--configs", "poll nap"]);
    assert!(e.contains("--configs") && e.contains("poll, interrupt, hybrid"), "{e}");
    let e = run(&["--loads", "randread:4k"]);
    assert!(e.contains("--loads") && e.contains("RW:BS:QD"), "{e}");
    let e = run(&["--time", "0"]);
    assert!(e.contains("--time") && e.contains("1 to 3600"), "{e}");
    let e = run(&["--port-base", "65534"]);
    assert!(e.contains("--port-base") && e.contains("1 to 65533"), "{e}");
    let e = run(&["--host-core", "4095"]);
    assert!(e.contains("--host-core 4095") && e.contains("usable CPUs are"), "{e}");
}

#[test]
fn a_daemon_that_cannot_start_fails_the_run_and_leaves_nothing_behind() {
    let port = free_port_base();
    // The engine's port is taken: E cannot listen.
    let _taken = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let child = bench(
        &[
            "--configs",
            "interrupt:0",
            "--loads",
            "randread:4k:1",
            "--time",
            "1",
            "--idle-secs",
            "1",
            "--json",
        ],
        port,
    );
    let pid = child.id();
    let (status, stdout, stderr) = finish(child);
    assert!(!status.success(), "{stderr}");
    // --json prints what was measured before the error: nothing here.
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(rows.is_empty(), "{rows:?}");
    assert!(stderr.contains("configuration interrupt:0"), "{stderr}");
    assert_eq!(leftovers(pid), Vec::new(), "daemons left running: {stderr}");
    assert_eq!(scratch_left(pid), Vec::<String>::new());
}

#[test]
fn ctrl_c_stops_the_daemons_and_removes_the_scratch_directory() {
    let port = free_port_base();
    let mut child = bench(
        &["--configs", "interrupt:0", "--loads", "randread:4k:1", "--time", "60"],
        port,
    );
    let lines = stderr_lines(&mut child);
    let pids = daemons_up(&lines);
    assert_eq!(pids.len(), 3, "{pids:?}");
    std::thread::sleep(Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = wait_or_kill(&mut child);
    assert!(status.success(), "{status}");
    // The reader ends at the pipe's end: the benchmark has exited.
    let rest: Vec<String> = lines.iter().collect();
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:#?}");
    assert!(all_dead_soon(&pids), "daemons left running: {pids:?}");
    assert_eq!(leftovers(child.id()), Vec::new());
    assert_eq!(scratch_left(child.id()), Vec::<String>::new());
}

#[test]
fn a_killed_benchmark_takes_its_daemons_with_it() {
    let port = free_port_base();
    let mut child = bench(
        &["--configs", "interrupt:0", "--loads", "randread:4k:1", "--time", "60"],
        port,
    );
    let lines = stderr_lines(&mut child);
    let pids = daemons_up(&lines);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(all_dead_soon(&pids), "daemons outlived the benchmark: {pids:?}");
    // Killed, it could not remove its scratch directory: the test does.
    for d in scratch_left(child.id()) {
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(d));
    }
}

#[test]
fn a_reader_that_goes_away_stops_the_run_cleanly_with_141() {
    let port = free_port_base();
    let mut child = bench(
        &[
            "--configs",
            "interrupt:0",
            "--loads",
            "randread:4k:1",
            "--time",
            "1",
            "--ramp-ms",
            "100",
            "--idle-secs",
            "30",
        ],
        port,
    );
    let lines = stderr_lines(&mut child);
    // The header, then the reader goes: the first row's line finds no
    // reader, after the daemons have started.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut header = String::new();
    out.read_line(&mut header).unwrap();
    assert!(header.starts_with("config"), "{header}");
    drop(out);
    let pids = daemons_up(&lines);
    let status = wait_or_kill(&mut child);
    assert_eq!(status.code(), Some(141), "{status}");
    assert!(all_dead_soon(&pids), "daemons left running: {pids:?}");
    assert_eq!(leftovers(child.id()), Vec::new());
    assert_eq!(scratch_left(child.id()), Vec::<String>::new());
}
