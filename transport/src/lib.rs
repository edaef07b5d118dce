//! `lull-transport`: the NVMe/TCP transport binding (NVMe/TCP 1.0).
//!
//! - [`pdu`]: PDUs, common header, digests, fatal errors (pure, no I/O);
//! - [`nvme`]: SQE, CQE, SGL descriptors, status codes, opcodes;
//! - [`fabrics`]: Connect, Property Get/Set, Authentication Send/Receive, Disconnect;
//! - [`auth`]: DH-HMAC-CHAP in-band authentication (secrets, messages, both roles' state machines);
//! - [`target`]: the controller side of one queue pair as a state machine,
//!   fed bytes and yielding commands, bytes to send and errors;
//! - [`host`]: the host side of one queue pair, as a state machine;
//! - [`conn`]: the glue that drives a target queue from a reactor's fd pollers;
//! - [`host_conn`]: the glue that drives a host queue from a reactor (the initiator's data path);
//! - [`host_sync`]: a host queue over a blocking socket (the initiator's control path).
//!
//! Except for `conn`, `host_conn` and `host_sync`, nothing here touches a socket or a clock (the quinn-proto style): every
//! protocol path is tested with byte vectors, and fuzzed.

pub mod auth;
mod buf;
mod cid_set;
pub mod conn;
pub mod fabrics;
pub mod host;
pub mod host_conn;
pub mod host_sync;
pub mod nvme;
pub mod pdu;
pub mod target;
