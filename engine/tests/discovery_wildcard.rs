//! A port bound to 0.0.0.0 is listed in the discovery log page with the
//! address the host reached (as the Linux target does), never as 0.0.0.0,
//! so `nvme connect-all` from another machine connects to something real.

use lull_engine::app::App;
use lull_engine::config::Config;
use lull_proto::fabrics::DISCOVERY_NQN;
use lull_proto::nvme::{Sqe, admin_opc, psdt};
use lull_proto::pdu::Digests;
use lull_transport::host_sync::SyncQueue;

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000d1";

#[test]
fn wildcard_port_is_listed_with_the_address_the_host_reached() {
    let core = lull_reactor::CoreList::usable().unwrap().cores()[0];
    let cfg = Config::from_toml(&format!(
        r#"
cores = "{core}"
rpc_socket = "/nonexistent/unused.sock"
listen = ["0.0.0.0:0"]
[[bdev]]
name = "A"
type = "null"
size = "1MiB"
[[subsystem]]
nqn = "nqn.2024-01.io.lull:wild"
allow_any_host = true
namespaces = [{{ bdev = "A" }}]
"#
    ))
    .unwrap();
    let app = App::start(&cfg.resolve().unwrap()).unwrap();
    let port = app.target().listeners()[0].port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (mut q, _) = SyncQueue::admin(addr, DISCOVERY_NQN, HOSTNQN, Digests::default(), 0).unwrap();
    let mut sqe = Sqe([0; 64]);
    sqe.0[0] = admin_opc::GET_LOG_PAGE;
    sqe.set_psdt(psdt::SGL_MPTR_CONTIGUOUS);
    // LID 70h, 3 KiB: header and two entries (discovery, the NVM subsystem).
    sqe.set_cdw(10, 0x70 | ((3072 / 4 - 1) << 16));
    let page = q.call("Get Log Page 70h", sqe, &[], 3072).unwrap().data;
    let records = u64::from_le_bytes(page[8..16].try_into().unwrap());
    assert_eq!(records, 2);
    for e in page[1024..].chunks(1024) {
        let traddr = String::from_utf8_lossy(&e[512..768]).trim_end().to_string();
        let trsvcid = String::from_utf8_lossy(&e[32..64]).trim_end().to_string();
        assert_eq!(traddr, "127.0.0.1", "TRADDR of a wildcard port is the address reached");
        assert_eq!(trsvcid, port.to_string());
    }
    drop(q);
    app.shutdown();
}
