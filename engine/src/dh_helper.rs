//! The `lull-dhchap` helper thread: DH-HMAC-CHAP work (a modular
//! exponentiation, 26 ms for ffdhe8192 in a release build: `dh_cost` in
//! `lull-proto`) runs here rather than on a reactor, for the target's
//! queues (`nvmf::auth_queue`) and the initiator's re-authentications
//! (`initiator::reauth`). One thread per process: the work is rare, and
//! one thread bounds what a host sending Negotiates in a loop can take.

use std::sync::{OnceLock, mpsc};

/// Work for the helper thread; it answers through a reactor channel.
pub type Job = Box<dyn FnOnce() + Send>;

fn inbox() -> Option<&'static mpsc::Sender<Job>> {
    static HELPER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    HELPER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let started = std::thread::Builder::new()
                .name("lull-dhchap".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                });
            match started {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the DH-HMAC-CHAP helper thread: DH work runs on the reactors");
                    None
                }
            }
        })
        .as_ref()
}

/// Whether the helper thread runs (it is started on first use).
pub fn available() -> bool {
    inbox().is_some()
}

/// Hands `job` to the helper thread.
///
/// # Errors
/// The job back when there is no helper thread: the caller runs it itself.
pub fn run(job: Job) -> Result<(), Job> {
    match inbox() {
        Some(tx) => tx.send(job).map_err(|mpsc::SendError(j)| j),
        None => Err(job),
    }
}
