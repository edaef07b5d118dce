//! A daemon (App and JSON-RPC server on a private socket) and a minimal
//! JSON-RPC client, for the RPC test files.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lull_engine::app::App;
use lull_engine::config::Config;
use lull_engine::rpc::RpcServer;
use lull_reactor::CoreList;
use serde_json::{Value, json};

pub const INVALID_PARAMS: i64 = -32602;
pub const ENODEV: i64 = -19;
pub const NQN: &str = "nqn.2024-01.io.lull:stats0";
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000b2";

/// A running daemon; shut down on drop.
pub struct Daemon {
    pub app: Arc<App>,
    rpc: Option<RpcServer>,
    path: PathBuf,
    /// Number of reactors.
    pub reactors: usize,
}

impl Daemon {
    /// On up to two usable CPUs, with a socket of its own.
    pub fn start(tag: &str) -> Daemon {
        static N: AtomicUsize = AtomicUsize::new(0);
        let cores: Vec<usize> = CoreList::usable().unwrap().cores().iter().copied().take(2).collect();
        let text = cores.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("lull-rpcs-{}-{n}-{tag}.sock", std::process::id()));
        let toml = format!(
            "cores = \"{text}\"\nrpc_socket = \"{}\"\nlog_level = \"warn\"\n",
            path.display()
        );
        let settings = Config::from_toml(&toml).unwrap().resolve().unwrap();
        let app = App::start(&settings).unwrap();
        let rpc = RpcServer::start(app.clone(), &settings.rpc_socket).unwrap();
        Daemon {
            app,
            rpc: Some(rpc),
            path,
            reactors: cores.len(),
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.path)
    }

    pub fn stop(&mut self) {
        drop(self.rpc.take());
        self.app.shutdown();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request at a time over the socket.
pub struct Client {
    s: UnixStream,
    next_id: u64,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client { s, next_id: 1 }
    }

    /// The response object of `method(params)` (params left out when null).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if !params.is_null() {
            req["params"] = params;
        }
        self.s.write_all(req.to_string().as_bytes()).unwrap();
        let mut it = serde_json::Deserializer::from_reader(&self.s).into_iter::<Value>();
        let resp = it.next().expect("a response").expect("JSON");
        assert_eq!(resp["id"], json!(id), "{resp}");
        resp
    }

    /// The result; panics on an error.
    #[track_caller]
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let resp = self.request(method, params.clone());
        assert!(resp.get("error").is_none(), "{method} {params}: {}", resp["error"]);
        resp["result"].clone()
    }

    /// Expects error `code`; returns the message.
    #[track_caller]
    pub fn expect(&mut self, code: i64, method: &str, params: Value) -> String {
        let resp = self.request(method, params.clone());
        assert!(resp.get("result").is_none(), "{method} {params} succeeded: {resp}");
        assert_eq!(resp["error"]["code"], json!(code), "{method} {params}: {resp}");
        resp["error"]["message"].as_str().unwrap().to_string()
    }
}

/// Waits (5 s at most) until `f` holds.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Transport, subsystem `nqn` (any host) and a listener on a free loopback
/// port; returns the port.
pub fn serve(c: &mut Client, nqn: &str) -> u16 {
    let _ = c.request("nvmf_create_transport", json!({"trtype": "TCP"}));
    c.ok("nvmf_create_subsystem", json!({"nqn": nqn, "allow_any_host": true}));
    c.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": nqn, "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "0"}}),
    );
    let subs = c.ok("nvmf_get_subsystems", json!({"nqn": nqn}));
    subs[0]["listen_addresses"][0]["trsvcid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// An I/O command for namespace `nsid`: SLBA, NLB (1-based).
pub fn rw_sqe(opc: u8, nsid: u32, slba: u64, nlb: u32) -> lull_proto::nvme::Sqe {
    let mut sqe = lull_proto::nvme::Sqe([0; 64]);
    sqe.0[0] = opc;
    sqe.0[4..8].copy_from_slice(&nsid.to_le_bytes());
    sqe.set_cdw(10, slba as u32);
    sqe.set_cdw(11, (slba >> 32) as u32);
    sqe.set_cdw(12, nlb - 1);
    sqe
}
