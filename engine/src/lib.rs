//! `lull-engine`: block devices (bdevs), NVMe-oF subsystems, namespaces and
//! controllers, the discovery controller and host access control.
//!
//! - [`bdev`]: `ram`, `null`, `file`;
//! - [`subsystem`]: subsystems, namespaces, NQN rules;
//! - [`controller`]: the dynamic controller, admin/Fabrics command execution,
//!   keep-alive;
//! - [`io`]: NVM I/O command execution;
//! - [`identify`], [`logpage`]: the data structures hosts read;
//! - [`target`]: the whole target, and serving it on reactors;
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
pub mod controller;
pub mod dhchap;
pub mod identify;
pub mod io;
pub mod keyfile;
pub mod keyring;
pub mod log_level;
pub mod logpage;
pub mod metrics;
pub mod nvme;
pub mod restart_only;
pub mod rpc;
pub mod subsystem;
pub mod target;
