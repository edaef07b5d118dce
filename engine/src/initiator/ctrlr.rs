//! A remote NVMe/TCP controller attached to a set of reactors: the admin
//! queue (keep-alive, AER) on the first reactor, I/O queues spread over all
//! of them, and the reset path that reconnects after the association is
//! lost (SPDK bdev_nvme's `reconnect_delay_sec`, `ctrlr_loss_timeout_sec`,
//! `fast_io_fail_timeout_sec`).
//!
//! Data path: each reactor keeps its queues in a thread-local table, so a
//! submission touches no lock. Control path (attach, reconnect) runs on a
//! plain thread with blocking sockets and bounded waits and hands finished
//! queues to the reactors by message.
//!
//! While the controller resets, commands that were in flight and commands
//! submitted meanwhile are held on their reactor and resubmitted in order on
//! the new association; once `fast_io_fail_timeout_sec` has passed they fail
//! with [`IoError::FastFail`] instead, and once the controller is lost with
//! [`IoError::ControllerLost`].

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use lull_proto::host_queue::Completion;
use lull_proto::nvme::cmd::{
    AsyncEvent, AsyncEventRequest, GetLogPage, Identify, KeepAlive, NSID_ALL, cns, event_type, lid, notice,
};
use lull_proto::nvme::{Cqe, Sqe, Status, admin_opc};
use lull_reactor::{Context, ReactorHandle, TimerId};
use lull_transport::host_conn::{Failed, HostConn, QueueError, QueueOptions};
use lull_transport::host_sync::SyncError;

use super::associate::{Association, CtrlrInfo, HostDhchapKeys, NvmeTrid, associate};
use super::options::NvmeOptions;
use super::reauth;
use lull_proto::auth::AuthConfig;

/// Why an I/O failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The controller completed it with an error status.
    // Status's Display names it and gives SCT, SC and DNR already.
    #[error("NVMe status {status}")]
    Status {
        /// The status.
        status: Status,
        /// The whole CQE.
        cqe: Cqe,
    },
    /// The path failed and `fast_io_fail_timeout_sec` passed while reconnecting.
    #[error("the controller is reconnecting and fast_io_fail_timeout_sec has passed (path lost: {0})")]
    FastFail(String),
    /// The controller was lost (reconnect gave up or is disabled).
    #[error("the controller is lost: {0}")]
    ControllerLost(String),
    /// The queue index does not exist on this reactor.
    #[error("no I/O queue {0} of this controller on this reactor")]
    NoQueue(usize),
    /// The controller was detached.
    #[error("the controller was detached")]
    Detached,
    /// A held command was failed by [`NvmeController::abort_held`].
    #[error("aborted while waiting for the controller to reconnect")]
    Aborted,
}

/// Runs once per command on the reactor it was submitted on.
pub type IoDone = Box<dyn FnOnce(&mut Context, Result<Completion, IoError>)>;

/// Why attach or a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// Bringing up the association failed.
    #[error("attaching to {addr} {subnqn}: {source}")]
    Associate {
        /// Target address.
        addr: std::net::SocketAddr,
        /// Subsystem.
        subnqn: String,
        /// The failed step.
        source: SyncError,
    },
    /// A reactor did not take its queues.
    #[error("reactor on core {core}: {reason}")]
    Reactor {
        /// Its core.
        core: usize,
        /// What went wrong.
        reason: String,
    },
}

/// Where the controller stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtrlrState {
    /// Serving I/O.
    Live,
    /// Lost its association and trying to get one back.
    Resetting {
        /// Why.
        reason: String,
        /// Since when.
        since: Instant,
    },
    /// Gave up; every I/O fails.
    Lost(String),
    /// Detached by its owner.
    Detached,
}

struct Shared {
    id: u64,
    name: String,
    /// Where and who; its keys change with `bdev_nvme_set_keys`.
    trid: Mutex<NvmeTrid>,
    /// The next DH-HMAC-CHAP transaction identifier of a re-authentication.
    next_t_id: AtomicU16,
    opts: Mutex<NvmeOptions>,
    reactors: Vec<ReactorHandle>,
    want_queues: u16,
    info: Mutex<CtrlrInfo>,
    state: Mutex<(CtrlrState, u64)>,
    resets: AtomicU64,
    /// Told the new namespace list after a Namespace Attribute Changed notice
    /// and after every reconnect.
    ns_listener: Mutex<Option<NamespaceListener>>,
    /// Told once when the controller is lost (not when detached).
    lost_listener: Mutex<Option<LostListener>>,
}

/// Called (on the admin queue's reactor) with the namespace list re-read
/// after the controller reported a namespace change.
pub type NamespaceListener = Arc<dyn Fn(Vec<crate::initiator::NsInfo>) + Send + Sync>;

/// Called (on the reset thread, which may block) once the controller is lost:
/// no reconnect within `ctrlr_loss_timeout_sec`, or none tried because it is
/// 0. The argument says why.
pub type LostListener = Arc<dyn Fn(&str) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A command waiting for a queue.
struct Req {
    sqe: Sqe,
    write: Vec<u8>,
    read_len: u32,
    done: IoDone,
    /// Times it was retried after a status without DNR.
    retries: u32,
}

struct LocalQueue {
    conn: Option<HostConn>,
    held: VecDeque<Req>,
}

struct Admin {
    conn: HostConn,
    keep_alive: Option<TimerId>,
}

/// One controller's state on one reactor.
struct Local {
    shared: Arc<Shared>,
    generation: u64,
    queues: Vec<LocalQueue>,
    admin: Option<Admin>,
    fail_fast: Option<IoError>,
}

thread_local! {
    static LOCAL: RefCell<HashMap<u64, Local>> = RefCell::new(HashMap::new());
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A remote controller attached to reactors. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct NvmeController {
    shared: Arc<Shared>,
}

/// One reactor's share of a new association.
struct Install {
    generation: u64,
    io: Vec<(usize, lull_transport::tls::Wire, lull_proto::host_queue::HostQueue)>,
    admin: Option<(lull_transport::tls::Wire, lull_proto::host_queue::HostQueue)>,
}

impl NvmeController {
    /// Attaches: brings up the association on this thread (blocking, each
    /// step bounded by 10 s), then starts the admin queue on `reactors[0]`
    /// and `io_queues` I/O queues spread round-robin over `reactors` (queue
    /// `i` lives on `reactors[i % reactors.len()]` as that reactor's local
    /// queue `i / reactors.len()`).
    ///
    /// # Errors
    /// Invalid options, the failed bring-up step, or a reactor that did not
    /// take its queues.
    pub fn attach(
        name: &str,
        trid: NvmeTrid,
        opts: NvmeOptions,
        reactors: &[ReactorHandle],
        io_queues: u16,
    ) -> Result<NvmeController, NvmeError> {
        opts.validate().map_err(NvmeError::Options)?;
        if reactors.is_empty() {
            return Err(NvmeError::Options("attach needs at least one reactor".into()));
        }
        let deadline = Instant::now() + super::associate::ATTACH_TIMEOUT;
        let assoc = associate(&trid, &opts, io_queues.max(1), deadline).map_err(|source| NvmeError::Associate {
            addr: trid.addr,
            subnqn: trid.subnqn.clone(),
            source,
        })?;
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            trid: Mutex::new(trid),
            next_t_id: AtomicU16::new(0x100),
            opts: Mutex::new(opts),
            reactors: reactors.to_vec(),
            want_queues: io_queues.max(1),
            info: Mutex::new(assoc.info.clone()),
            state: Mutex::new((CtrlrState::Live, 1)),
            resets: AtomicU64::new(0),
            ns_listener: Mutex::new(None),
            lost_listener: Mutex::new(None),
        });
        install(&shared, assoc, 1)?;
        tracing::info!(name, cntlid = lock(&shared.info).cntlid, "NVMe controller attached");
        Ok(NvmeController { shared })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its transport ID, with the keys in force.
    pub fn trid(&self) -> NvmeTrid {
        lock(&self.shared.trid).clone()
    }

    /// What the current association reported.
    pub fn info(&self) -> CtrlrInfo {
        lock(&self.shared.info).clone()
    }

    /// Calls `f` with the re-read namespace list whenever the controller
    /// reports a namespace change (AER Namespace Attribute Changed) and after
    /// every reconnect (a notice sent while the association was down is
    /// lost with it, so the new association's list is the answer); `f` runs
    /// on a reactor and must not block.
    pub fn on_namespaces_changed(&self, f: NamespaceListener) {
        *lock(&self.shared.ns_listener) = Some(f);
    }

    /// Calls `f` once when the controller is lost ([`CtrlrState::Lost`]: the
    /// reconnects gave up after `ctrlr_loss_timeout_sec`), so its owner can
    /// delete it as SPDK's bdev_nvme does. `f` runs on the reset thread, off
    /// the reactors, and may block; not called for a detach.
    pub fn on_lost(&self, f: LostListener) {
        *lock(&self.shared.lost_listener) = Some(f);
    }

    /// Where it stands.
    pub fn state(&self) -> CtrlrState {
        lock(&self.shared.state).0.clone()
    }

    /// Completed resets (reconnects).
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::Relaxed)
    }

    /// The options in force.
    pub fn options(&self) -> NvmeOptions {
        lock(&self.shared.opts).clone()
    }

    /// The reactors it runs on.
    pub fn reactors(&self) -> &[ReactorHandle] {
        &self.shared.reactors
    }

    /// Local queue indices on reactor `reactor` (an index into [`reactors`](Self::reactors)).
    pub fn queues_on(&self, reactor: usize) -> Vec<usize> {
        let n = lock(&self.shared.info).io_queues as usize;
        let r = self.shared.reactors.len();
        (0..n).filter(|q| q % r == reactor).map(|q| q / r).collect()
    }

    /// Changes the poll periods (us; `None` keeps one) on every queue, without
    /// reconnecting; later reconnects use them too.
    ///
    /// # Errors
    /// An out-of-range value, naming the field.
    pub fn set_poll_periods(&self, ioq_us: Option<u64>, adminq_us: Option<u64>) -> Result<(), String> {
        let opts = {
            let mut o = lock(&self.shared.opts);
            let mut next = o.clone();
            if let Some(v) = ioq_us {
                next.nvme_ioq_poll_period_us = v;
            }
            if let Some(v) = adminq_us {
                next.nvme_adminq_poll_period_us = v;
            }
            next.validate()?;
            *o = next.clone();
            next
        };
        let id = self.shared.id;
        for r in &self.shared.reactors {
            let (io, admin) = (opts.ioq_polling(), opts.adminq_polling());
            let sent = r.try_send(move |cx| {
                let (conns, admin_conn) = with_local(id, |l| {
                    let conns: Vec<HostConn> = l.queues.iter().filter_map(|q| q.conn.clone()).collect();
                    (conns, l.admin.as_ref().map(|a| a.conn.clone()))
                })
                .unwrap_or_default();
                for c in conns {
                    let _ = c.set_polling(cx, io);
                }
                if let Some(a) = admin_conn {
                    let _ = a.set_polling(cx, admin);
                }
            });
            if sent.is_err() {
                return Err(format!("reactor on core {} is not accepting messages", r.core()));
            }
        }
        Ok(())
    }

    /// Submits a command on local queue `queue` of the calling reactor. The
    /// SQE's CID and SGL are filled in by the queue; `done` runs on this
    /// reactor with the completion (status success) or the error.
    pub fn submit(&self, cx: &mut Context, queue: usize, sqe: Sqe, write: Vec<u8>, read_len: u32, done: IoDone) {
        submit_local(
            cx,
            self.shared.id,
            queue,
            Req {
                sqe,
                write,
                read_len,
                done,
                retries: 0,
            },
        );
    }

    /// SPDK's `bdev_nvme_set_keys`: the keys this controller authenticates
    /// with from now on (reconnects included); `None` clears them, so new
    /// queues do not authenticate. With keys, the admin queue and then
    /// every I/O queue re-authenticate on the live association, their
    /// Authentication Send and Receive going out between the queues' other
    /// commands: I/O keeps flowing and no queue reconnects. Blocks until
    /// every queue is done or `limit` passes. A controller not live now
    /// (resetting) uses the keys at its reconnect.
    ///
    /// # Errors
    /// A message naming the queue whose re-authentication failed, or that
    /// did not finish within `limit`. The controller is then reset (as the
    /// target closing that queue would make it, SPDK's after its
    /// AUTH_Failure1): it reconnects with the new keys, or is lost after
    /// `ctrlr_loss_timeout_sec` when they keep failing. Other controllers
    /// are not touched.
    pub fn set_keys(&self, keys: Option<HostDhchapKeys>, limit: Duration) -> Result<(), String> {
        let trid = {
            let mut t = lock(&self.shared.trid);
            t.dhchap = keys;
            t.clone()
        };
        let Some(keys) = &trid.dhchap else {
            return Ok(());
        };
        let generation = {
            let st = lock(&self.shared.state);
            if st.0 != CtrlrState::Live {
                return Ok(());
            }
            st.1
        };
        let cfg = Arc::new(keys.config(&trid.hostnqn, &trid.subnqn));
        let deadline = Instant::now() + limit;
        let mut result = reauthenticate_admin(&self.shared, &cfg, deadline);
        if result.is_ok() {
            result = reauthenticate_io(&self.shared, &cfg, deadline);
        }
        if let Err(why) = &result {
            tracing::warn!(name = %self.shared.name, "DH-HMAC-CHAP re-authentication failed: {why}; resetting the controller");
            start_reset(
                &self.shared,
                generation,
                format!("DH-HMAC-CHAP re-authentication failed: {why}"),
            );
        } else {
            tracing::info!(name = %self.shared.name, "every queue re-authenticated with the new DH-HMAC-CHAP keys");
        }
        result
    }

    /// Fails every command held for a reconnect with [`IoError::Aborted`]
    /// (commands in flight on live queues are not touched); later ones are
    /// held again. For a caller that must stop waiting (a benchmark ending,
    /// Ctrl-C). Blocks until every reactor has done so (5 s at most each).
    pub fn abort_held(&self) {
        broadcast(&self.shared, |cx, id| fail_held(cx, id, IoError::Aborted, false));
    }

    /// Detaches: closes every queue; held commands fail with [`IoError::Detached`].
    /// Blocks until every reactor has done so (bounded by 5 s).
    pub fn detach(&self) {
        {
            let mut st = lock(&self.shared.state);
            st.0 = CtrlrState::Detached;
            st.1 += 1;
        }
        broadcast(&self.shared, |cx, id| {
            teardown(cx, id, u64::MAX);
            fail_held(cx, id, IoError::Detached, false);
            LOCAL.with(|t| t.borrow_mut().remove(&id));
        });
    }
}

/// The admin queue's re-authentication, on its reactor; waits for it.
fn reauthenticate_admin(shared: &Arc<Shared>, cfg: &Arc<AuthConfig>, deadline: Instant) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let (id, cfg) = (shared.id, cfg.clone());
    let t_id = shared.next_t_id.fetch_add(1, Ordering::Relaxed);
    let sent = shared.reactors[0].try_send(move |cx| {
        let Some(conn) = with_local(id, |l| l.admin.as_ref().map(|a| a.conn.clone())).flatten() else {
            let _ = tx.send(Err("the admin queue is not connected".into()));
            return;
        };
        reauth::authenticate_live(
            cx,
            &conn,
            cfg,
            t_id,
            Box::new(move |_cx, r| {
                let _ = tx.send(r);
            }),
        );
    });
    if sent.is_err() {
        return Err("the admin queue's reactor is not accepting messages".into());
    }
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(r) => r.map_err(|e| format!("admin queue: {e}")),
        Err(_) => Err("admin queue: the re-authentication did not finish in time".into()),
    }
}

/// Every I/O queue's re-authentication, all at once, each on its reactor;
/// waits for them all. The first failure found is the answer.
fn reauthenticate_io(shared: &Arc<Shared>, cfg: &Arc<AuthConfig>, deadline: Instant) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<(u16, Result<(), String>)>();
    let r = shared.reactors.len();
    let mut expected = 0usize;
    // Which queues each reactor has now: the same table the data path uses.
    let n = lock(&shared.info).io_queues as usize;
    for (ri, handle) in shared.reactors.iter().enumerate() {
        let locals: Vec<usize> = (0..n).filter(|q| q % r == ri).map(|q| q / r).collect();
        if locals.is_empty() {
            continue;
        }
        expected += locals.len();
        let (id, cfg, tx) = (shared.id, cfg.clone(), tx.clone());
        let base = shared.next_t_id.fetch_add(locals.len() as u16, Ordering::Relaxed);
        let sent = handle.try_send(move |cx| {
            for (k, local) in locals.into_iter().enumerate() {
                let qid = (local * r + ri + 1) as u16;
                let conn = with_local(id, |l| l.queues.get(local).and_then(|q| q.conn.clone())).flatten();
                let Some(conn) = conn else {
                    let _ = tx.send((qid, Err("not connected".into())));
                    continue;
                };
                let tx = tx.clone();
                reauth::authenticate_live(
                    cx,
                    &conn,
                    cfg.clone(),
                    base.wrapping_add(k as u16),
                    Box::new(move |_cx, r| {
                        let _ = tx.send((qid, r));
                    }),
                );
            }
        });
        if sent.is_err() {
            return Err(format!("reactor on core {} is not accepting messages", handle.core()));
        }
    }
    drop(tx);
    let mut first_error = None;
    for _ in 0..expected {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((_, Ok(()))) => {}
            Ok((qid, Err(e))) => {
                first_error.get_or_insert(format!("I/O queue {qid}: {e}"));
            }
            Err(_) => {
                first_error.get_or_insert("an I/O queue's re-authentication did not finish in time".to_string());
                break;
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn with_local<R>(id: u64, f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    LOCAL.with(|t| t.borrow_mut().get_mut(&id).map(f))
}

/// Sends each reactor its queues of `assoc` and waits until all took them.
/// Returns how many held commands were resubmitted on them.
fn install(shared: &Arc<Shared>, assoc: Association, generation: u64) -> Result<usize, NvmeError> {
    let Association { admin, io, info } = assoc;
    *lock(&shared.info) = info;
    let r = shared.reactors.len();
    let mut per: Vec<Install> = (0..r)
        .map(|_| Install {
            generation,
            io: Vec::new(),
            admin: None,
        })
        .collect();
    per[0].admin = Some(admin.into_parts());
    for (i, q) in io.into_iter().enumerate() {
        let (s, hq) = q.into_parts();
        per[i % r].io.push((i / r, s, hq));
    }
    let (tx, rx) = mpsc::channel::<Result<usize, String>>();
    for (handle, inst) in shared.reactors.iter().zip(per) {
        let sh = shared.clone();
        let tx = tx.clone();
        handle
            .try_send(move |cx| {
                let _ = tx.send(install_local(cx, sh, inst));
            })
            .map_err(|_| NvmeError::Reactor {
                core: handle.core(),
                reason: "not accepting messages".into(),
            })?;
    }
    let mut resubmitted = 0;
    for h in &shared.reactors {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(n)) => resubmitted += n,
            Ok(Err(reason)) => return Err(NvmeError::Reactor { core: h.core(), reason }),
            Err(_) => {
                return Err(NvmeError::Reactor {
                    core: h.core(),
                    reason: "did not answer within 5 s".into(),
                });
            }
        }
    }
    Ok(resubmitted)
}

/// On a reactor: starts its queues of a new association and resubmits what was held.
/// Returns how many held commands it resubmitted.
fn install_local(cx: &mut Context, shared: Arc<Shared>, inst: Install) -> Result<usize, String> {
    let id = shared.id;
    let opts = lock(&shared.opts).clone();
    let depth = lock(&shared.info).io_queue_size;
    let qopts = QueueOptions {
        polling: opts.ioq_polling(),
        depth,
        command_timeout: opts.command_timeout(),
        supervised: true,
    };
    let generation = inst.generation;
    let mut conns: Vec<(usize, HostConn)> = Vec::new();
    // Queues started before a failure are closed again: a half-installed
    // association must not keep sockets on this reactor.
    let abandon = |cx: &mut Context, conns: &[(usize, HostConn)], why: String| {
        for (_, c) in conns {
            c.close(cx);
        }
        why
    };
    for (local, sock, hq) in inst.io {
        match HostConn::start(cx, sock, hq, qopts) {
            Ok(conn) => {
                let sh = shared.clone();
                conn.on_fail(Box::new(move |_cx, e| path_lost(&sh, generation, e)));
                conns.push((local, conn));
            }
            Err(e) => return Err(abandon(cx, &conns, format!("starting I/O queue {local}: {e}"))),
        }
    }
    let admin = match inst.admin {
        Some((sock, hq)) => {
            let aopts = QueueOptions {
                polling: opts.adminq_polling(),
                depth: 32,
                command_timeout: opts.command_timeout(),
                supervised: false,
            };
            match HostConn::start(cx, sock, hq, aopts) {
                Ok(conn) => {
                    let sh = shared.clone();
                    conn.on_fail(Box::new(move |_cx, e| path_lost(&sh, generation, e)));
                    Some(conn)
                }
                Err(e) => return Err(abandon(cx, &conns, format!("starting the admin queue: {e}"))),
            }
        }
        None => None,
    };
    let mut replaced = Vec::new();
    let resubmit = LOCAL.with(|t| {
        let mut t = t.borrow_mut();
        let l = t.entry(id).or_insert_with(|| Local {
            shared: shared.clone(),
            generation,
            queues: Vec::new(),
            admin: None,
            fail_fast: None,
        });
        l.generation = generation;
        l.fail_fast = None;
        let mut resubmit = Vec::new();
        for (local, conn) in conns {
            while l.queues.len() <= local {
                l.queues.push(LocalQueue {
                    conn: None,
                    held: VecDeque::new(),
                });
            }
            replaced.extend(l.queues[local].conn.replace(conn));
            resubmit.extend(l.queues[local].held.drain(..).map(|r| (local, r)));
        }
        // Queues this association did not bring back (fewer granted): their
        // held commands move to queue 0.
        for q in l.queues.iter_mut().filter(|q| q.conn.is_none()) {
            resubmit.extend(q.held.drain(..).map(|r| (0, r)));
        }
        if let Some(conn) = admin.clone() {
            l.admin = Some(Admin { conn, keep_alive: None });
        }
        resubmit
    });
    if let Some(conn) = admin {
        start_admin(cx, id, &conn, &opts);
    }
    let n = resubmit.len();
    for (local, r) in resubmit {
        submit_local(cx, id, local, r);
    }
    Ok(n)
}

/// Keep Alive every KATO/2 on its own timer, and one outstanding AER.
/// Each Keep Alive must complete within KATO, whatever the command timeout
/// (as the Linux host times its keep-alive request): a controller that
/// silently stopped answering (no FIN, no RST) resets the association then,
/// in every reactor mode (the limit is a reactor timer, not a poll).
fn start_admin(cx: &mut Context, id: u64, conn: &HostConn, opts: &NvmeOptions) {
    if opts.keep_alive_timeout_ms > 0 {
        let kato = Duration::from_millis(u64::from(opts.keep_alive_timeout_ms));
        let every = (kato / 2).max(Duration::from_millis(1));
        let c = conn.clone();
        let timer = cx.timer_periodic(every, move |cx| {
            let r = c.submit_within(
                cx,
                KeepAlive.encode(),
                Vec::new(),
                0,
                kato,
                Box::new(|_cx, r| {
                    if let Ok(c) = r
                        && !c.cqe.status.is_success()
                    {
                        tracing::warn!(status = %c.cqe.status, "Keep Alive failed");
                    }
                }),
            );
            // A failed queue reports itself through its failure hook.
            drop(r);
        });
        match timer {
            Ok(timer) => {
                with_local(id, |l| {
                    if let Some(a) = l.admin.as_mut() {
                        a.keep_alive = Some(timer);
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot start the Keep Alive timer"),
        }
    }
    submit_aer(cx, id, conn.clone());
}

/// One Asynchronous Event Request; on an event, read the log page it names
/// (which re-arms that event type) and send the next request. A Namespace
/// Attribute Changed notice also re-reads the namespaces.
fn submit_aer(cx: &mut Context, id: u64, conn: HostConn) {
    let c2 = conn.clone();
    let _ = conn.submit_untimed(
        cx,
        AsyncEventRequest.encode(),
        Vec::new(),
        0,
        Box::new(move |cx, r| {
            let Ok(done) = r else { return };
            if !done.cqe.status.is_success() {
                tracing::debug!(status = %done.cqe.status, "AER completed with an error; not re-armed");
                return;
            }
            let event = AsyncEvent::from_dw0(done.cqe.dw0);
            let AsyncEvent { kind, info, lid: page } = event;
            tracing::info!(kind, info, log_page = page, "asynchronous event from the controller");
            let len: u32 = if page == lid::CHANGED_NS { 4096 } else { 512 };
            let sqe = GetLogPage::new(NSID_ALL, page, len).encode();
            let _ = c2.submit(cx, sqe, Vec::new(), len, Box::new(|_cx, _r| {}));
            if kind == event_type::NOTICE && info == notice::NAMESPACE_ATTRIBUTE_CHANGED {
                rescan(cx, id, c2.clone());
            }
            submit_aer(cx, id, c2.clone());
        }),
    );
}

/// Identify with CNS `cns` on the admin queue, then `then` with the data, or
/// with `None` when the controller answered with an error status (logged). A
/// failed admin queue calls nothing: the reset that follows reads again.
fn identify_async(
    cx: &mut Context,
    conn: &HostConn,
    cns: u8,
    nsid: u32,
    then: impl FnOnce(&mut Context, Option<Vec<u8>>) + 'static,
) {
    let r = conn.submit(
        cx,
        Identify { cns, cntid: 0, nsid }.encode(),
        Vec::new(),
        4096,
        Box::new(move |cx, r| match r {
            Ok(c) if c.cqe.status.is_success() => then(cx, Some(c.data)),
            Ok(c) => {
                tracing::debug!(cns, nsid, status = %c.cqe.status, "namespace rescan: Identify failed");
                then(cx, None)
            }
            Err(_) => tracing::debug!(
                cns,
                nsid,
                "namespace rescan: admin queue failed (a reset reads them again)"
            ),
        }),
    );
    if r.is_err() {
        tracing::debug!("namespace rescan: admin queue refused the Identify");
    }
}

/// Re-reads the active namespace list and each namespace on the admin
/// queue (no blocking on the reactor), then updates the controller's info and
/// tells its listener.
fn rescan(cx: &mut Context, id: u64, conn: HostConn) {
    let c2 = conn.clone();
    identify_async(cx, &conn, cns::ACTIVE_NAMESPACES, 0, move |cx, list| {
        let Some(list) = list else {
            tracing::warn!("namespace rescan: the active namespace list was refused");
            return;
        };
        let nsids: Vec<u32> = list
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .take_while(|&n| n != 0)
            .collect();
        read_namespaces(cx, id, c2, nsids, Vec::new());
    });
}

fn read_namespaces(
    cx: &mut Context,
    id: u64,
    conn: HostConn,
    mut left: Vec<u32>,
    mut found: Vec<crate::initiator::NsInfo>,
) {
    if left.is_empty() {
        let Some(shared) = with_local(id, |l| l.shared.clone()) else {
            return;
        };
        lock(&shared.info).namespaces = found.clone();
        tracing::info!(name = %shared.name, namespaces = found.len(), "namespaces re-read after a change notice");
        let listener = lock(&shared.ns_listener).clone();
        if let Some(f) = listener {
            f(found);
        }
        return;
    }
    let nsid = left.remove(0);
    let c2 = conn.clone();
    identify_async(cx, &conn, cns::NAMESPACE, nsid, move |cx, d| {
        let Some(mut ns) = d.and_then(|d| super::associate::parse_namespace(nsid, &d)) else {
            read_namespaces(cx, id, c2, left, found);
            return;
        };
        // The descriptor list names the bdev as at attach (NGUID, else UUID
        // descriptor); a controller that refuses CNS 03h is known by Identify
        // Namespace alone, as at attach.
        let c3 = c2.clone();
        identify_async(cx, &c2, cns::NAMESPACE_DESCRIPTORS, nsid, move |cx, list| {
            if let Some(list) = list {
                ns.ids = super::associate::parse_descriptors(&list);
            }
            found.push(ns);
            read_namespaces(cx, id, c3, left, found);
        });
    });
}

/// A queue of association `generation` failed: start a reset, once.
fn path_lost(shared: &Arc<Shared>, generation: u64, e: &QueueError) {
    let reason = match e {
        QueueError::Timeout { opc, after, .. } if *opc == admin_opc::KEEP_ALIVE => {
            format!("no Keep Alive completion within KATO ({after:?}): the controller stopped answering")
        }
        e => e.to_string(),
    };
    start_reset(shared, generation, reason);
}

/// Starts a reset of association `generation`, once (later calls, and
/// calls for an older association, do nothing).
fn start_reset(shared: &Arc<Shared>, generation: u64, reason: String) {
    {
        let mut st = lock(&shared.state);
        if st.1 != generation || st.0 != CtrlrState::Live {
            return;
        }
        st.0 = CtrlrState::Resetting {
            reason: reason.clone(),
            since: Instant::now(),
        };
    }
    tracing::warn!(name = %shared.name, %reason, "NVMe controller lost its association; resetting");
    let sh = shared.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("lull-reset-{}", shared.name))
        .spawn(move || reset(sh, generation, reason));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the reset thread; the controller is lost");
        lock(&shared.state).0 = CtrlrState::Lost(format!("cannot start the reset thread: {e}"));
    }
}

/// Tells the namespace listener the list the new association read: a
/// namespace added or removed while the association was down (its notice
/// lost with the association) appears or disappears now.
fn notify_namespaces(shared: &Arc<Shared>) {
    let Some(f) = lock(&shared.ns_listener).clone() else {
        return;
    };
    let list = lock(&shared.info).namespaces.clone();
    tracing::info!(name = %shared.name, namespaces = list.len(), "namespaces re-read after a reconnect");
    let f2 = f.clone();
    let list2 = list.clone();
    if shared.reactors[0].try_send(move |_cx| f2(list2)).is_err() {
        f(list);
    }
}

/// Runs `f` on every reactor of the controller and waits (5 s at most each) until all did.
fn broadcast(shared: &Arc<Shared>, f: impl Fn(&mut Context, u64) + Clone + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let mut sent = 0;
    for r in &shared.reactors {
        let (f, tx, id) = (f.clone(), tx.clone(), shared.id);
        if r.try_send(move |cx| {
            f(cx, id);
            let _ = tx.send(());
        })
        .is_ok()
        {
            sent += 1;
        }
    }
    for _ in 0..sent {
        if rx.recv_timeout(Duration::from_secs(5)).is_err() {
            break;
        }
    }
}

/// The reset thread: tear the old association down, then reconnect every
/// `reconnect_delay_sec` until it works or `ctrlr_loss_timeout_sec` passes.
fn reset(shared: Arc<Shared>, generation: u64, reason: String) {
    let since = Instant::now();
    broadcast(&shared, move |cx, id| teardown(cx, id, generation));
    let opts = lock(&shared.opts).clone();
    let lost = |why: String| {
        tracing::error!(name = %shared.name, %why, "NVMe controller lost");
        {
            let mut st = lock(&shared.state);
            if st.0 == CtrlrState::Detached {
                return;
            }
            st.0 = CtrlrState::Lost(why.clone());
        }
        let held = why.clone();
        broadcast(&shared, move |cx, id| {
            fail_held(cx, id, IoError::ControllerLost(held.clone()), true)
        });
        let listener = lock(&shared.lost_listener).clone();
        if let Some(f) = listener {
            f(&why);
        }
    };
    if opts.ctrlr_loss_timeout_sec == 0 {
        lost(format!("{reason} (ctrlr_loss_timeout_sec = 0: no reconnect)"));
        return;
    }
    let loss = u64::try_from(opts.ctrlr_loss_timeout_sec).ok().map(Duration::from_secs);
    let fast =
        (opts.fast_io_fail_timeout_sec > 0).then(|| Duration::from_secs(u64::from(opts.fast_io_fail_timeout_sec)));
    let delay = Duration::from_secs(u64::from(opts.reconnect_delay_sec));
    let mut fast_failed = false;
    let mut attempt = 0u32;
    loop {
        let next = Instant::now() + delay;
        while Instant::now() < next {
            if lock(&shared.state).0 == CtrlrState::Detached {
                return;
            }
            if !fast_failed && fast.is_some_and(|f| since.elapsed() >= f) {
                fast_failed = true;
                let why = reason.clone();
                broadcast(&shared, move |cx, id| {
                    fail_held(cx, id, IoError::FastFail(why.clone()), true)
                });
            }
            std::thread::sleep(Duration::from_millis(20).min(next.saturating_duration_since(Instant::now())));
        }
        attempt += 1;
        let opts = lock(&shared.opts).clone();
        // An attempt ends in time for the next deadline that matters: the
        // fast-fail and loss clocks keep running while it waits.
        let mut until = Instant::now() + super::associate::ATTACH_TIMEOUT;
        if !fast_failed && let Some(f) = fast {
            until = until.min(since + f);
        }
        if let Some(l) = loss {
            until = until.min(since + l);
        }
        let until = until.max(Instant::now() + Duration::from_secs(1));
        let trid = lock(&shared.trid).clone();
        match associate(&trid, &opts, shared.want_queues, until) {
            Ok(assoc) => {
                let new_gen = generation + u64::from(attempt);
                {
                    let mut st = lock(&shared.state);
                    if st.0 == CtrlrState::Detached {
                        return;
                    }
                    // Live before the queues start: a queue of the new
                    // association that fails while it is being installed
                    // must start the next reset (path_lost ignores failures
                    // while the state is not Live).
                    st.0 = CtrlrState::Live;
                    st.1 = new_gen;
                }
                shared.resets.fetch_add(1, Ordering::Relaxed);
                match install(&shared, assoc, new_gen) {
                    Ok(resubmitted) => {
                        let after = since.elapsed().as_secs_f64();
                        // Its own target, so a tool logging only warnings
                        // (lull perf) can still show it.
                        tracing::info!(
                            target: "lull_engine::initiator::reconnect",
                            name = %shared.name,
                            attempt,
                            resubmitted,
                            "NVMe controller {} reconnected after {after:.1} s, {resubmitted} commands resubmitted",
                            shared.name
                        );
                        notify_namespaces(&shared);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(name = %shared.name, attempt, error = %e, "installing the new association failed");
                        shared.resets.fetch_sub(1, Ordering::Relaxed);
                        let mut st = lock(&shared.state);
                        if st.1 != new_gen || st.0 != CtrlrState::Live {
                            // Detached, or a queue of it failed and a new reset took over.
                            return;
                        }
                        st.0 = CtrlrState::Resetting {
                            reason: reason.clone(),
                            since,
                        };
                    }
                }
            }
            Err(e) => tracing::warn!(name = %shared.name, attempt, error = %e, "reconnect attempt failed"),
        }
        if loss.is_some_and(|l| since.elapsed() >= l) {
            lost(format!(
                "{reason}; no reconnect within ctrlr_loss_timeout_sec = {}",
                opts.ctrlr_loss_timeout_sec
            ));
            return;
        }
    }
}

/// On a reactor: closes this controller's queues of `generation` (or all,
/// with `u64::MAX`); their outstanding commands come back as held ones.
fn teardown(cx: &mut Context, id: u64, generation: u64) {
    let taken = with_local(id, |l| {
        if generation != u64::MAX && l.generation != generation {
            return (Vec::new(), None);
        }
        let conns: Vec<HostConn> = l.queues.iter_mut().filter_map(|q| q.conn.take()).collect();
        (conns, l.admin.take())
    });
    let Some((conns, admin)) = taken else { return };
    if let Some(a) = admin {
        if let Some(t) = a.keep_alive {
            cx.cancel_timer(t);
        }
        a.conn.close(cx);
    }
    for c in conns {
        c.close(cx);
    }
}

/// On a reactor: fails every held command with `e`; with `sticky`, later
/// submissions fail at once too (until a new association is installed).
fn fail_held(cx: &mut Context, id: u64, e: IoError, sticky: bool) {
    let held = with_local(id, |l| {
        if sticky {
            l.fail_fast = Some(e.clone());
        }
        l.queues.iter_mut().flat_map(|q| q.held.drain(..)).collect::<Vec<_>>()
    })
    .unwrap_or_default();
    for r in held {
        (r.done)(cx, Err(e.clone()));
    }
}

/// Submits on the local queue, or holds/fails the command when the queue is down.
fn submit_local(cx: &mut Context, id: u64, queue: usize, r: Req) {
    enum Route {
        Send(HostConn, Req),
        Fail(Req, IoError),
        Held,
    }
    let route = LOCAL.with(|t| {
        let mut t = t.borrow_mut();
        let Some(l) = t.get_mut(&id) else {
            return Route::Fail(r, IoError::NoQueue(queue));
        };
        if let Some(e) = &l.fail_fast {
            return Route::Fail(r, e.clone());
        }
        let Some(q) = l.queues.get_mut(queue) else {
            return Route::Fail(r, IoError::NoQueue(queue));
        };
        // The data path: a live queue and nothing held before this command.
        if let Some(c) = &q.conn
            && c.error().is_none()
            && q.held.is_empty()
        {
            return Route::Send(c.clone(), r);
        }
        // The queue is down: the controller's state (a lock, off the data path) decides.
        let state = lock(&l.shared.state).0.clone();
        match state {
            CtrlrState::Lost(why) => Route::Fail(r, IoError::ControllerLost(why)),
            CtrlrState::Detached => Route::Fail(r, IoError::Detached),
            _ => {
                q.held.push_back(r);
                Route::Held
            }
        }
    });
    match route {
        Route::Held => {}
        Route::Fail(r, e) => (r.done)(cx, Err(e)),
        Route::Send(conn, r) => {
            let Req {
                sqe,
                write,
                read_len,
                done,
                retries,
            } = r;
            let cb = Box::new(move |cx: &mut Context, res: Result<Completion, Failed>| match res {
                Ok(c) if c.cqe.status.is_success() => done(cx, Ok(c)),
                Ok(c) if !c.cqe.status.dnr() && retries < retry_limit(id) => {
                    retry(cx, id, queue, sqe, c.write, read_len, done, retries + 1)
                }
                Ok(c) => done(
                    cx,
                    Err(IoError::Status {
                        status: c.cqe.status,
                        cqe: c.cqe,
                    }),
                ),
                Err(f) => hold(cx, id, queue, f, done, retries),
            });
            if let Err(rejected) = conn.submit(cx, sqe, write, read_len, cb) {
                // The queue failed since we looked: the callback holds it.
                (rejected.cb)(cx, Err(rejected.failed));
            }
        }
    }
}

/// A command came back from a failed queue: hold it for the next association.
fn hold(cx: &mut Context, id: u64, queue: usize, f: Failed, done: IoDone, retries: u32) {
    let mut sqe = f.sqe;
    sqe.set_cid(0);
    submit_local(
        cx,
        id,
        queue,
        Req {
            sqe,
            write: f.write,
            read_len: f.read_len,
            done,
            retries,
        },
    );
}

/// `bdev_retry_count` of controller `id`, read on its reactor.
fn retry_limit(id: u64) -> u32 {
    with_local(id, |l| lock(&l.shared.opts).bdev_retry_count).unwrap_or(0)
}

/// Resubmits a command that completed with a status without DNR, after
/// 1 ms x 2^(retry - 1): a controller that is going away answers with such
/// statuses (Command Sequence Error while it shuts down), and an immediate
/// retry would only meet the same answer.
#[allow(clippy::too_many_arguments)]
fn retry(
    cx: &mut Context,
    id: u64,
    queue: usize,
    mut sqe: Sqe,
    write: Vec<u8>,
    read_len: u32,
    done: IoDone,
    retries: u32,
) {
    sqe.set_cid(0);
    let req = Req {
        sqe,
        write,
        read_len,
        done,
        retries,
    };
    let delay = Duration::from_millis(1 << (retries - 1).min(10));
    cx.timer_once(delay, move |cx| submit_local(cx, id, queue, req));
}

#[cfg(test)]
mod tests {
    use super::*;
    use lull_proto::nvme::status;

    #[test]
    fn a_status_error_names_the_status_once() {
        let e = IoError::Status {
            status: status::INVALID_FIELD.with_dnr(),
            cqe: Cqe::default(),
        };
        let shown = e.to_string();
        assert_eq!(shown.matches("SCT").count(), 1, "{shown}");
        assert_eq!(
            shown,
            format!("NVMe status {}", status::INVALID_FIELD.with_dnr()),
            "{shown}"
        );
        assert!(shown.ends_with("(SCT 0x0, SC 0x02, DNR)"), "{shown}");
    }
}
