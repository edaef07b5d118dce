//! A closed output pipe ends `lull` quietly with status 141 (as SIGPIPE
//! would), never with a panic: `lull rpc ... | grep -q`, `lull status | head`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_closed_stdout_ends_the_process_with_141_and_no_panic() {
    let dir = std::env::temp_dir().join(format!("lull-closed-stdout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("rpc.sock");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_lull"))
        .args(["target", "--cores", "0", "-r"])
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The reader is gone before the answer is printed.
    let mut rpc = Command::new(env!("CARGO_BIN_EXE_lull"))
        .args(["rpc", "rpc_get_methods", "-r"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(rpc.stdout.take());
    let out = rpc.wait_with_output().unwrap();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}
