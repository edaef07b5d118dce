//! `lull bench load` end to end, in-process and short: the rows come out
//! one per configuration and load with sane values, and every file is written.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_short_load_sweep_writes_rows_verdict_and_plots() {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_lull"))
        .args([
            "bench",
            "load",
            "--loads",
            "0,200,max",
            "--workloads",
            "randread",
            "--queues",
            "1",
            "--periods",
            "0",
            "--spin-us",
            "50",
            "--budgets",
            "50",
            "--skip",
            "adaptive",
            "--time",
            "1",
            "--ramp-ms",
            "100",
            "--idle-secs",
            "1",
            "--json",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let rows: Vec<Value> = serde_json::from_slice(&run.stdout).unwrap();
    let configs = ["poll", "event-driven", "hybrid-spin50", "budget50"];
    assert_eq!(rows.len(), configs.len() * 3, "{rows:#?}");
    for c in configs {
        for load in ["idle", "200", "max"] {
            let r = rows
                .iter()
                .find(|r| r["config"] == c && r["load"] == load)
                .unwrap_or_else(|| panic!("no row for {c} at {load}"));
            let f = |k: &str| r[k].as_f64();
            let achieved = f("achieved_iops").unwrap();
            assert_eq!(r["errors"], 0, "{r}");
            assert!(
                f("initiator_cpu_pct").unwrap() >= 0.0 && f("target_cpu_pct").unwrap() >= 0.0,
                "{r}"
            );
            for k in ["target_wakeups_s", "initiator_wakeups_s"] {
                assert!(f(k).is_some(), "{k}: {r}");
            }
            match load {
                "idle" => {
                    assert_eq!((achieved, f("offered_iops")), (0.0, Some(0.0)), "{r}");
                    assert!(r["lat_p99_us"].is_null());
                }
                "200" => {
                    let offered = f("offered_iops").unwrap();
                    assert!((150.0..=250.0).contains(&offered), "{r}");
                    assert!(achieved <= offered * 1.2 && achieved >= offered * 0.5, "{r}");
                    let (p50, p99, p999) = (
                        f("lat_p50_us").unwrap(),
                        f("lat_p99_us").unwrap(),
                        f("lat_p999_us").unwrap(),
                    );
                    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{r}");
                    // CPU per I/O is (target + initiator CPU) over the I/Os.
                    let per_io = (f("target_cpu_pct").unwrap() + f("initiator_cpu_pct").unwrap()) * 1e4 / achieved;
                    assert!(
                        (f("cpu_us_per_io").unwrap() - per_io).abs() < 1e-6 * per_io.max(1.0),
                        "{r}"
                    );
                }
                _ => {
                    assert!(r["offered_iops"].is_null());
                    assert!(achieved > 200.0, "closed loop at QD 32 outruns 200 IOPS: {r}");
                }
            }
        }
    }
    for f in [
        "load.csv",
        "load.json",
        "load_table.txt",
        "verdict.txt",
        "load_cpu_vs_iops.svg",
        "load_p99_vs_iops.svg",
    ] {
        let p = out.join(f);
        let body = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(!body.is_empty(), "{f}");
    }
    let verdict = std::fs::read_to_string(out.join("verdict.txt")).unwrap();
    assert!(verdict.contains("p99 within +50 us of poll:"), "{verdict}");
    let csv = std::fs::read_to_string(out.join("load.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + rows.len());
    assert!(
        std::fs::read_to_string(out.join("load_cpu_vs_iops.svg"))
            .unwrap()
            .contains(">idle</text>")
    );
    let _ = std::fs::remove_dir_all(&out);
}
