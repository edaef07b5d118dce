//! `lull-proto`: NVMe/TCP (NVMe/TCP Transport 1.0) and NVMe-oF bytes and the
//! queue-pair state machines of both roles, as pure code.
//!
//! - [`pdu`]: PDUs, common header, digests, fatal errors;
//! - [`nvme`]: SQE, CQE, SGL descriptors, status codes, opcodes; [`nvme::cmd`]: typed admin and I/O commands;
//! - [`fabrics`]: Connect, Property Get/Set, Authentication Send/Receive, Disconnect;
//! - [`auth`]: DH-HMAC-CHAP in-band authentication (secrets, messages, both roles' state machines);
//! - [`tls_psk`]: NVMe/TCP TLS pre-shared keys (the `NVMeTLSkey-1` interchange format,
//!   retained and TLS PSK derivation, PSK identities v0 and v1);
//! - [`read_source`]: read data copied from a memory bdev into the PDUs being built;
//! - [`target_queue`]: the controller side of one queue pair as a state machine,
//!   fed bytes and yielding commands, bytes to send and errors;
//! - [`host_queue`]: the host side of one queue pair, as a state machine.
//!
//! No I/O, no clock, no lull dependencies (the quinn-proto style): nothing
//! here touches a socket, a timer or a reactor, so every protocol path is
//! tested with byte vectors, and fuzzed (`proto/fuzz`). The one call into
//! the operating system is [`auth::OsEntropy`], which asks `getrandom(2)`
//! for DH-HMAC-CHAP nonces and private keys; every state machine takes its
//! entropy as a parameter, so tests feed fixed bytes. The socket glue that
//! drives these machines from reactors is `lull-transport`.

pub mod auth;
mod buf;
mod cid_set;
pub mod fabrics;
mod framing;
pub mod host_queue;
pub mod nvme;
pub mod pdu;
pub mod read_source;
pub mod target_queue;
pub mod tls_psk;
