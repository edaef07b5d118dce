//! Where a request goes, decided from its SQE alone (the first step of the
//! kernel target's `nvmet_req_init`): Connect, authentication, another
//! Fabrics command, an admin command, or an NVM I/O command. The queue
//! ([`crate::nvmf::queue`]) then checks what its state allows and executes.

use std::net::SocketAddr;

use lull_proto::fabrics::fctype;
use lull_proto::nvme::{Sqe, admin_opc};

/// Where a queue's connection came from, as Connect, Identify and the
/// discovery log page need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueOrigin {
    /// The host's address and port.
    pub peer: SocketAddr,
    /// The port it was accepted on, as bound (perhaps a wildcard address).
    pub listener: SocketAddr,
    /// The local address it arrived at (concrete even for a wildcard listener).
    pub arrived_on: SocketAddr,
    /// In-capsule data accepted on I/O queues, bytes (Identify's IOCCSZ).
    pub io_in_capsule_data: u32,
}

/// Which part of the target executes a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Fabrics Connect (FCTYPE 01h).
    Connect,
    /// Fabrics Authentication Send or Receive (FCTYPE 05h, 06h).
    Authentication,
    /// Another Fabrics command: Property Get/Set, Disconnect.
    Fabrics,
    /// An admin command (on queue 0).
    Admin,
    /// An NVM I/O command (on an I/O queue).
    Io,
}

/// The route of `sqe` on queue `qid` (NVMe-oF 1.1 section 3.3: Fabrics
/// commands are opcode 7Fh on any queue, typed by FCTYPE).
pub fn route(sqe: &Sqe, qid: u16) -> Route {
    if sqe.opc() == admin_opc::FABRICS {
        return match sqe.fctype() {
            fctype::CONNECT => Route::Connect,
            fctype::AUTH_SEND | fctype::AUTH_RECV => Route::Authentication,
            _ => Route::Fabrics,
        };
    }
    if qid == 0 { Route::Admin } else { Route::Io }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqe(opc: u8, fctype: u8) -> Sqe {
        let mut s = Sqe([0; 64]);
        s.0[0] = opc;
        // FCTYPE is byte 4 of a Fabrics command (NVMe-oF 1.1 figure 9).
        s.0[4] = fctype;
        s
    }

    #[test]
    fn fabrics_commands_route_by_fctype_on_any_queue_and_the_rest_by_queue() {
        for qid in [0, 3] {
            assert_eq!(route(&sqe(0x7F, 0x01), qid), Route::Connect);
            assert_eq!(route(&sqe(0x7F, 0x05), qid), Route::Authentication);
            assert_eq!(route(&sqe(0x7F, 0x06), qid), Route::Authentication);
            assert_eq!(route(&sqe(0x7F, 0x04), qid), Route::Fabrics, "Property Get");
            assert_eq!(route(&sqe(0x7F, 0x08), qid), Route::Fabrics, "Disconnect");
        }
        // Opcode 02h is Get Log Page on the admin queue and Read on an I/O queue.
        assert_eq!(route(&sqe(0x02, 0), 0), Route::Admin);
        assert_eq!(route(&sqe(0x02, 0), 1), Route::Io);
    }
}
