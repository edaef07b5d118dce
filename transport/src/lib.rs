//! `lull-transport`: the NVMe/TCP socket glue (NVMe/TCP 1.0) that drives
//! `lull-proto`'s queue-pair state machines from reactors.
//!
//! - [`conn`]: the listener, and the glue that drives a target queue
//!   ([`lull_proto::target_queue::TargetQueue`]) from a reactor's fd pollers;
//! - [`host_conn`]: the glue that drives a host queue
//!   ([`lull_proto::host_queue::HostQueue`]) from a reactor (the initiator's data path);
//! - [`host_sync`]: a host queue over a blocking socket (the initiator's control path);
//! - [`tls`]: NVMe/TCP's secure channel, TLS 1.3 with a pre-shared key, for both roles.
//!
//! The wire format and the protocol logic live in `lull-proto`, which
//! touches no socket and no clock; this crate owns the sockets, the
//! timeouts and the reactor pollers.

pub mod conn;
pub mod host_conn;
pub mod host_sync;
pub mod send;
pub mod tls;
