//! JSON-RPC 2.0 on a Unix socket, with SPDK's method names, parameters,
//! result shapes and error codes, so SPDK's `rpc.py` and its Python client
//! drive lull unchanged.
//!
//! Framing is SPDK's: requests and responses are JSON texts back to back on
//! the stream, with no length prefix (whitespace between them is allowed).
//! Each connection is served by its own thread (the control plane never runs
//! on a reactor); a request is answered before the next is read.

mod bdev;
mod compat;
pub mod config_json;
pub mod duplicates;
mod framework;
mod keyring;
mod live;
mod lull;
mod nvme;
pub use nvme::default_hostnqn;
mod nvmf;
mod params;
mod raid;
mod stats;
mod tuning;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

use crate::app::{App, AppError};

/// JSON-RPC 2.0 and SPDK error codes.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i32 = -32700;
    /// Not a valid request object.
    pub const INVALID_REQUEST: i32 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// Bad parameters.
    pub const INVALID_PARAMS: i32 = -32602;
    /// Failed while being carried out.
    pub const INTERNAL_ERROR: i32 = -32603;
    /// -EPERM: not allowed now.
    pub const EPERM: i32 = -1;
    /// -ENODEV: no such device (bdev, controller, subsystem).
    pub const ENODEV: i32 = -19;
    /// -EEXIST: already exists.
    pub const EEXIST: i32 = -17;
    /// -ENOMEM: not enough memory.
    pub const ENOMEM: i32 = -12;
    /// -EBUSY: in use.
    pub const EBUSY: i32 = -16;
    /// -EINVAL: a value the operation cannot take.
    pub const EINVAL: i32 = -22;
    /// -EACCES: refused by the peer (a DH-HMAC-CHAP re-authentication).
    pub const EACCES: i32 = -13;
    /// -ENOKEY: a key name the keyring does not hold (SPDK's
    /// `bdev_nvme_set_keys`).
    pub const ENOKEY: i32 = -126;
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// Error code ([`code`]).
    pub code: i32,
    /// Message.
    pub message: String,
}

impl RpcError {
    /// Invalid parameters, with a message naming the parameter.
    pub fn invalid(message: impl Into<String>) -> Self {
        RpcError {
            code: code::INVALID_PARAMS,
            message: message.into(),
        }
    }
}

impl From<AppError> for RpcError {
    fn from(e: AppError) -> Self {
        let code = match &e {
            AppError::InvalidParams(_) => code::INVALID_PARAMS,
            AppError::NotFound(_) => code::ENODEV,
            AppError::Exists(_) => code::EEXIST,
            AppError::NotPermitted(_) => code::EPERM,
            AppError::NoMemory(_) => code::ENOMEM,
            AppError::Busy(_) => code::EBUSY,
            AppError::Rejected(_) => code::EINVAL,
            AppError::Failed(_) => code::INTERNAL_ERROR,
        };
        RpcError {
            code,
            message: e.to_string(),
        }
    }
}

type Handler = fn(&App, Value) -> Result<Value, RpcError>;

/// Every method, SPDK's first, then lull's own.
pub(crate) const METHODS: &[(&str, Handler)] = &[
    ("spdk_get_version", framework::spdk_get_version),
    ("rpc_get_methods", framework::rpc_get_methods),
    ("framework_get_reactors", framework::framework_get_reactors),
    ("keyring_file_add_key", keyring::keyring_file_add_key),
    ("keyring_file_remove_key", keyring::keyring_file_remove_key),
    ("keyring_get_keys", keyring::keyring_get_keys),
    ("bdev_malloc_create", bdev::bdev_malloc_create),
    ("bdev_malloc_delete", bdev::bdev_malloc_delete),
    ("bdev_null_create", bdev::bdev_null_create),
    ("bdev_null_delete", bdev::bdev_null_delete),
    ("bdev_uring_create", bdev::bdev_uring_create),
    ("bdev_uring_delete", bdev::bdev_uring_delete),
    ("bdev_get_bdevs", bdev::bdev_get_bdevs),
    ("bdev_raid_create", raid::bdev_raid_create),
    ("bdev_raid_get_bdevs", raid::bdev_raid_get_bdevs),
    ("bdev_raid_delete", raid::bdev_raid_delete),
    ("bdev_raid_remove_base_bdev", raid::bdev_raid_remove_base_bdev),
    ("bdev_raid_add_base_bdev", raid::bdev_raid_add_base_bdev),
    ("bdev_raid_set_options", raid::bdev_raid_set_options),
    ("nvmf_create_transport", nvmf::nvmf_create_transport),
    ("nvmf_get_transports", nvmf::nvmf_get_transports),
    ("nvmf_create_subsystem", nvmf::nvmf_create_subsystem),
    ("nvmf_delete_subsystem", nvmf::nvmf_delete_subsystem),
    ("nvmf_subsystem_add_ns", nvmf::nvmf_subsystem_add_ns),
    ("nvmf_subsystem_remove_ns", nvmf::nvmf_subsystem_remove_ns),
    ("nvmf_subsystem_add_listener", nvmf::nvmf_subsystem_add_listener),
    ("nvmf_subsystem_remove_listener", nvmf::nvmf_subsystem_remove_listener),
    ("nvmf_subsystem_add_host", nvmf::nvmf_subsystem_add_host),
    ("nvmf_subsystem_remove_host", nvmf::nvmf_subsystem_remove_host),
    ("nvmf_subsystem_set_keys", nvmf::nvmf_subsystem_set_keys),
    ("nvmf_subsystem_allow_any_host", nvmf::nvmf_subsystem_allow_any_host),
    ("nvmf_get_subsystems", nvmf::nvmf_get_subsystems),
    ("bdev_nvme_set_options", nvme::bdev_nvme_set_options),
    ("bdev_nvme_get_options", nvme::bdev_nvme_get_options),
    ("bdev_nvme_attach_controller", nvme::bdev_nvme_attach_controller),
    ("bdev_nvme_detach_controller", nvme::bdev_nvme_detach_controller),
    ("bdev_nvme_set_keys", nvme::bdev_nvme_set_keys),
    ("bdev_nvme_get_controllers", nvme::bdev_nvme_get_controllers),
    ("bdev_get_iostat", stats::bdev_get_iostat),
    ("nvmf_get_stats", stats::nvmf_get_stats),
    ("nvmf_subsystem_get_controllers", stats::nvmf_subsystem_get_controllers),
    ("nvmf_subsystem_get_qpairs", stats::nvmf_subsystem_get_qpairs),
    ("nvmf_subsystem_get_listeners", stats::nvmf_subsystem_get_listeners),
    ("log_set_level", stats::log_set_level),
    ("log_get_level", stats::log_get_level),
    ("log_set_print_level", stats::log_set_print_level),
    ("log_get_print_level", stats::log_get_print_level),
    ("log_set_flag", stats::log_set_flag),
    ("log_clear_flag", stats::log_clear_flag),
    ("log_get_flags", stats::log_get_flags),
    // The state as an SPDK JSON config (config_json.rs).
    ("framework_get_subsystems", config_json::framework_get_subsystems),
    ("framework_get_config", config_json::framework_get_config),
    ("bdev_wait_for_examine", config_json::bdev_wait_for_examine),
    ("save_config", config_json::save_config),
    ("load_config", config_json::load_config),
    // SPDK's tuning of parts lull does not have: accepted when they change
    // nothing a host sees (config_json.rs), so rpc.py load_config takes
    // SPDK's saved files.
    ("iobuf_set_options", tuning::iobuf_set_options),
    ("sock_set_default_impl", tuning::sock_set_default_impl),
    ("sock_impl_set_options", tuning::sock_impl_set_options),
    ("accel_set_options", tuning::accel_set_options),
    ("accel_assign_opc", tuning::accel_assign_opc),
    ("bdev_set_options", tuning::bdev_set_options),
    ("iscsi_set_options", tuning::iscsi_set_options),
    ("nvmf_set_max_subsystems", tuning::nvmf_set_max_subsystems),
    ("keyring_linux_set_options", tuning::keyring_linux_set_options),
    ("bdev_nvme_set_hotplug", tuning::bdev_nvme_set_hotplug),
    ("framework_set_scheduler", tuning::framework_set_scheduler),
    ("nvmf_set_crdt", tuning::nvmf_set_crdt),
    ("nvmf_set_config", nvmf::nvmf_set_config),
    ("lull_get_status", lull::lull_get_status),
    ("lull_reactor_set_mode", lull::lull_reactor_set_mode),
    ("lull_supervisor_get_config", lull::lull_supervisor_get_config),
    ("lull_supervisor_set_config", lull::lull_supervisor_set_config),
    ("lull_get_options", lull::lull_get_options),
    ("lull_set_options", lull::lull_set_options),
    ("lull_bdev_delete", bdev::lull_bdev_delete),
];

/// Runs `method`'s handler `h` as a request does: SPDK's parameters lull
/// does not implement are taken off first when they carry SPDK's default,
/// refused otherwise (`compat`). Every caller of a handler goes through here.
pub(crate) fn invoke(app: &App, method: &str, h: Handler, mut params: Value) -> Result<Value, RpcError> {
    compat::strip(method, &mut params)?;
    h(app, params)
}

/// Executes one request object and returns the response object, or None
/// for a notification (a request without `id`).
pub fn handle_request(app: &App, req: &Value) -> Option<Value> {
    let id = req.get("id").cloned();
    let invalid = |msg: &str| {
        Some(error_response(
            id.clone().unwrap_or(Value::Null),
            code::INVALID_REQUEST,
            msg,
        ))
    };
    let Some(obj) = req.as_object() else {
        return invalid("Invalid request");
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("Invalid request: jsonrpc must be \"2.0\"");
    }
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return invalid("Invalid request: method must be a string");
    };
    if let Some(i) = &id
        && !(i.is_string() || i.is_number() || i.is_null())
    {
        return invalid("Invalid request: id must be a string, a number or null");
    }
    let params = obj.get("params").cloned().unwrap_or(Value::Null);
    if !(params.is_object() || params.is_null()) {
        return Some(error_response(
            id.unwrap_or(Value::Null),
            code::INVALID_PARAMS,
            "Invalid parameters: params must be an object",
        ));
    }
    let result = match METHODS.iter().find(|(n, _)| *n == method) {
        Some((_, f)) => invoke(app, method, *f, params),
        None => Err(RpcError {
            code: code::METHOD_NOT_FOUND,
            message: "Method not found".to_string(),
        }),
    };
    if let Err(e) = &result {
        tracing::info!(method, code = e.code, "RPC error: {}", e.message);
    } else {
        tracing::debug!(method, "RPC");
    }
    let id = id?;
    Some(match result {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(e) => error_response(id, e.code, &e.message),
    })
}

fn error_response(id: Value, code: i32, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Answers one JSON text: a request or a batch (array) of them.
fn handle_text(app: &App, v: &Value) -> Option<Value> {
    match v {
        Value::Array(batch) if batch.is_empty() => Some(error_response(
            Value::Null,
            code::INVALID_REQUEST,
            "Invalid request: empty batch",
        )),
        Value::Array(batch) if batch.len() > MAX_BATCH => Some(error_response(
            Value::Null,
            code::INVALID_REQUEST,
            &format!(
                "Invalid request: a batch of {} requests; at most {MAX_BATCH}",
                batch.len()
            ),
        )),
        Value::Array(batch) => {
            let out: Vec<Value> = batch.iter().filter_map(|r| handle_request(app, r)).collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        other => handle_request(app, other),
    }
}

/// Largest request text accepted, bytes.
const MAX_REQUEST: usize = 4 << 20;
/// An RPC connection idle this long is closed.
const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// A client that does not take its answer within this time is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Most requests in one batch.
const MAX_BATCH: usize = 1024;

/// The answer to a request that names a key twice in one object (SPDK's
/// decoder refuses those): Invalid params when the key is inside `params`,
/// Invalid request otherwise (a batch gets one answer, with no id).
fn duplicate_key_response(req: &Value, path: &str) -> Value {
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    if path == "params" || path.starts_with("params.") || path.starts_with("params[") {
        error_response(
            id,
            code::INVALID_PARAMS,
            &format!("Invalid parameters: duplicate key `{path}`"),
        )
    } else {
        error_response(
            id,
            code::INVALID_REQUEST,
            &format!("Invalid request: duplicate key `{path}`"),
        )
    }
}

/// Serves one client until it closes, sends malformed JSON, or idles 10 minutes.
fn serve_conn(app: &App, mut stream: UnixStream, stop: &AtomicBool) {
    // A blocking read: an idle client costs no wakeups.
    let _ = stream.set_read_timeout(Some(IDLE_CLOSE));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    // Parse again only when the client paused (a short read) or the buffer
    // doubled since the last incomplete attempt: a large request is not
    // re-parsed from its start after every chunk.
    let mut retry_at = 0usize;
    let mut paused = true;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Answer every complete text in the buffer.
        while paused || buf.len() >= retry_at {
            let start = buf.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(buf.len());
            buf.drain(..start);
            if buf.is_empty() {
                retry_at = 0;
                break;
            }
            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            match it.next() {
                Some(Ok(v)) => {
                    let used = it.byte_offset();
                    let dup = duplicates::first_duplicate_key(&buf[..used]);
                    buf.drain(..used);
                    let resp = match dup {
                        Some(path) => Some(duplicate_key_response(&v, &path)),
                        None => handle_text(app, &v),
                    };
                    if let Some(resp) = resp {
                        let mut out = resp.to_string().into_bytes();
                        out.push(b'\n');
                        if stream.write_all(&out).is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) if e.is_eof() => {
                    retry_at = buf.len() * 2;
                    break;
                }
                Some(Err(e)) => {
                    let resp = error_response(Value::Null, code::PARSE_ERROR, &format!("Parse error: {e}"));
                    let _ = stream.write_all(format!("{resp}\n").as_bytes());
                    return;
                }
                None => break,
            }
        }
        if buf.len() > MAX_REQUEST {
            let resp = error_response(Value::Null, code::INVALID_REQUEST, "Invalid request: too large");
            let _ = stream.write_all(format!("{resp}\n").as_bytes());
            return;
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                paused = n < chunk.len();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A running JSON-RPC server; stops (and removes its socket) on drop.
pub struct RpcServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// Clones of the open connections, to end their blocking reads on drop.
    conns: Conns,
    thread: Option<JoinHandle<()>>,
}

impl RpcServer {
    /// Checks that `path` can become the socket (no daemon listening there,
    /// its directory exists) without binding it: for a start-up that should
    /// fail before it builds anything.
    ///
    /// # Errors
    /// A message naming the path and the problem.
    pub fn check_path(path: &Path) -> Result<(), String> {
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
        {
            return Err(format!(
                "rpc_socket {}: exists and is not a socket; refusing to replace it",
                path.display()
            ));
        }
        if path.exists() && UnixStream::connect(path).is_ok() {
            return Err(format!(
                "rpc_socket {}: another daemon is listening there (use -r/--rpc-socket for another path)",
                path.display()
            ));
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(format!(
                "rpc_socket {}: directory {} does not exist",
                path.display(),
                dir.display()
            ));
        }
        Ok(())
    }

    /// Binds `path` (mode 0600) and serves `app` on it. A stale socket file
    /// (nobody listening) is replaced; a live one is an error.
    ///
    /// # Errors
    /// A message naming the path: in use by a running daemon, or not bindable.
    pub fn start(app: Arc<App>, path: &Path) -> Result<RpcServer, String> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
                return Err(format!(
                    "rpc_socket {}: exists and is not a socket; refusing to replace it",
                    path.display()
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "rpc_socket {}: another daemon is listening there (use -r/--rpc-socket for another path)",
                    path.display()
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("rpc_socket {}: cannot remove the stale socket: {e}", path.display()))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| format!("rpc_socket {}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("rpc_socket {}: {e}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::default();
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let thread = std::thread::Builder::new()
            .name("lull-rpc".into())
            .spawn(move || accept_loop(app, listener, stop2, conns2))
            .map_err(|e| format!("rpc thread: {e}"))?;
        tracing::info!(path = %path.display(), "JSON-RPC listening");
        Ok(RpcServer {
            path: path.to_path_buf(),
            stop,
            conns,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

type Conns = Arc<std::sync::Mutex<std::collections::HashMap<u64, UnixStream>>>;

fn accept_loop(app: Arc<App>, listener: UnixListener, stop: Arc<AtomicBool>, conns: Conns) {
    let live = Arc::new(AtomicUsize::new(0));
    let mut next_id = 0u64;
    // A blocking accept: an idle daemon costs no wakeups here. Drop wakes it
    // by connecting once.
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok(_) if stop.load(Ordering::Relaxed) => break,
            Ok((stream, _)) => {
                if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    let mut s = stream;
                    let resp = error_response(Value::Null, code::INTERNAL_ERROR, "too many RPC connections");
                    let _ = s.write_all(format!("{resp}\n").as_bytes());
                    continue;
                }
                live.fetch_add(1, Ordering::Relaxed);
                next_id += 1;
                let id = next_id;
                if let Ok(clone) = stream.try_clone()
                    && let Ok(mut m) = conns.lock()
                {
                    m.insert(id, clone);
                }
                let (app, stop, live2, conns2) = (app.clone(), stop.clone(), live.clone(), conns.clone());
                let spawned = std::thread::Builder::new().name("lull-rpc-conn".into()).spawn(move || {
                    serve_conn(&app, stream, &stop);
                    if let Ok(mut m) = conns2.lock() {
                        m.remove(&id);
                    }
                    live2.fetch_sub(1, Ordering::Relaxed);
                });
                if spawned.is_err() {
                    live.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "RPC accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept; if the connect fails the thread is gone already.
        if UnixStream::connect(&self.path).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
        // End the clients' blocking reads: their threads exit and drop the App.
        if let Ok(m) = self.conns.lock() {
            for c in m.values() {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
