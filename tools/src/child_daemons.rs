//! `lull target` daemons run as children of this process (for `lull bench
//! volume`): started from this executable, reached over their JSON-RPC
//! sockets in a scratch directory, and always stopped: on drop (so on every
//! error path and after Ctrl-C), and by the kernel when this process dies
//! without dropping them (a parent-death signal), so no daemon outlives the
//! benchmark.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ctl_cmd::Client;

/// How long a daemon may take to answer on its RPC socket after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a daemon may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A directory of its own under the temporary directory, removed (with what
/// is in it) on drop.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `$TMPDIR/PREFIX.PID.N`, a name no other run uses.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn new(prefix: &str) -> Result<ScratchDir, String> {
        let base = std::env::temp_dir();
        let pid = std::process::id();
        let mut last = String::new();
        for n in 0..1000 {
            let path = base.join(format!("{prefix}.{pid}.{n}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = e.to_string(),
                Err(e) => return Err(format!("creating {}: {e}", path.display())),
            }
        }
        Err(format!("no free scratch directory under {}: {last}", base.display()))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One `lull target` child process with its socket and log file.
pub struct Daemon {
    name: String,
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `lull target -r DIR/NAME.sock ARGS...` from this executable,
    /// its output going to `DIR/NAME.log`; [`wait_ready`](Self::wait_ready)
    /// then waits until its RPC socket answers (several daemons can start
    /// at once, then be waited for).
    ///
    /// The child gets a process group of its own, so a Ctrl-C at the
    /// terminal reaches this process only, which then stops the daemons
    /// itself after reporting what it measured; and SIGTERM when this process
    /// dies, so a killed benchmark leaves no daemon behind.
    ///
    /// # Errors
    /// The executable cannot be started or its log file created.
    pub fn spawn(name: &str, dir: &Path, args: &[String]) -> Result<Daemon, String> {
        let exe = std::env::current_exe().map_err(|e| format!("this executable's path: {e}"))?;
        let socket = dir.join(format!("{name}.sock"));
        // A socket left by the previous configuration's daemon would look
        // ready before this one is.
        let _ = std::fs::remove_file(&socket);
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("opening {} twice: {e}", log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("target")
            .arg("-r")
            .arg(&socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        detach_from_terminal_signals(&mut cmd);
        die_with_this_process(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("starting daemon {name}: {e}"))?;
        Ok(Daemon {
            name: name.to_string(),
            child,
            socket,
            log,
        })
    }

    /// Its name (E, R1, R2).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Calls `method` on its RPC socket.
    ///
    /// # Errors
    /// The daemon's error or the transport's, prefixed with its name.
    pub fn rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        Client::connect(&self.socket)
            .and_then(|mut c| c.call(method, params))
            .map_err(|e| format!("daemon {}: {e}", self.name))
    }

    /// The last `lines` lines of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Whether it is still running (not exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until its RPC socket answers.
    ///
    /// # Errors
    /// The daemon exited or did not answer within 15 s (the message carries
    /// its log's last lines).
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let until = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "daemon {} exited ({status}) before its RPC socket answered; its log ends:\n{}",
                    self.name,
                    self.log_tail(5)
                ));
            }
            // The socket file appears at bind(), before listen(): a call
            // that is answered is the sign the daemon is up.
            if self.socket.exists()
                && Client::connect(&self.socket)
                    .and_then(|mut c| c.call("spdk_get_version", Value::Null))
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "daemon {} did not answer on {} within {} s; its log ends:\n{}",
                    self.name,
                    self.socket.display(),
                    READY_TIMEOUT.as_secs(),
                    self.log_tail(5)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (the daemon's graceful stop), then SIGKILL if it has not
    /// exited within [`STOP_GRACE`]; reaps it either way.
    fn stop(&mut self) {
        if !self.running() {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of the file at `path` (at most its last 64 KiB).
fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("({} cannot be read)", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 << 10)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    let shown = all[from..].join("\n");
    if shown.is_empty() { "(empty)".into() } else { shown }
}

/// A process group of the child's own: a terminal's Ctrl-C goes to the
/// foreground group, which is this process's, not the daemons'.
fn detach_from_terminal_signals(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
}

/// Has the kernel send SIGTERM to the child when this process dies (the
/// thread that forked it, which is the main thread here), also when it is
/// killed without a chance to clean up.
fn die_with_this_process(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec; it makes
    // two system calls (prctl and getppid), which are async-signal-safe,
    // and allocates nothing (an Errno converts to io::Error without
    // allocating).
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            // The parent died before the prctl: no signal would come.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dirs_are_distinct_and_removed_with_their_files() {
        let a = ScratchDir::new("lull-child-daemons-test").unwrap();
        let b = ScratchDir::new("lull-child-daemons-test").unwrap();
        assert_ne!(a.path(), b.path());
        std::fs::write(a.path().join("x.log"), "x").unwrap();
        let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
        drop(a);
        drop(b);
        assert!(!pa.exists() && !pb.exists());
    }

    #[test]
    fn tail_gives_the_last_lines() {
        // Its own prefix: the test above checks that its directories'
        // names are gone, which this one's would otherwise take again.
        let d = ScratchDir::new("lull-child-daemons-tail-test").unwrap();
        let p = d.path().join("t.log");
        std::fs::write(&p, "one\ntwo\nthree\nfour\n").unwrap();
        assert_eq!(tail(&p, 2), "three\nfour");
        assert_eq!(tail(&p, 10), "one\ntwo\nthree\nfour");
        std::fs::write(&p, "").unwrap();
        assert_eq!(tail(&p, 3), "(empty)");
        assert!(tail(&d.path().join("none"), 3).contains("cannot be read"));
    }
}
