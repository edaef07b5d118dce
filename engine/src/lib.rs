//! `lull-engine`: block devices (bdevs), NVMe-oF subsystems, namespaces and
//! controllers, the discovery controller and host access control.
//!
//! - [`bdev`]: `ram`, `null`, `file`;
//! - [`nvmf`]: the NVMe-oF target: subsystems, namespaces, NQN rules, the
//!   dynamic controller, admin/Fabrics command execution, keep-alive, the
//!   data structures hosts read, and serving it on reactors;
//! - [`io`]: NVM I/O command execution;
//! - [`nvme`]: the NVMe/TCP initiator (remote controllers on reactors);
//! - [`config`]: the daemon's settings (TOML file and flags);
//! - [`keyfile`]: DH-HMAC-CHAP secrets read from private key files;
//! - [`keyring`]: named secrets, as SPDK's file keyring;
//! - [`dhchap`]: the DH-HMAC-CHAP hashes and groups allowed;
//! - [`app`]: the running daemon and its control-plane operations;
//! - [`rpc`]: the SPDK-compatible JSON-RPC server;
//! - [`metrics`]: Prometheus text exposition;
//! - [`log_level`]: the log level at run time, in SPDK's terms.

pub mod allocator;
pub mod app;
pub mod bdev;
pub mod config;
pub mod dhchap;
pub mod keyfile;
pub mod keyring;
pub mod log_level;
pub mod metrics;
pub mod nvme;
pub mod nvmf;
pub mod restart_only;
pub mod rpc;
