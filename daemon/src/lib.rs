//! `lull-daemon`: the long-running process's control plane, on top of
//! `lull-engine`.
//!
//! - [`config`]: the daemon's settings (TOML file and flags);
//! - [`app`]: the running daemon and its control-plane operations;
//! - [`rpc`]: the SPDK-compatible JSON-RPC server;
//! - [`metrics`]: Prometheus text exposition;
//! - [`log_level`]: the log level at run time, in SPDK's terms;
//! - [`restart_only`]: the settings read only at start;
//! - [`keyfile`]: DH-HMAC-CHAP secrets read from private key files;
//! - [`keyring`]: named secrets, as SPDK's file keyring;
//! - [`settings`]: the table of live settings that config, RPC and CLI read.

pub mod app;
pub mod config;
pub mod keyfile;
pub mod keyring;
pub mod log_level;
pub mod metrics;
pub mod restart_only;
pub mod rpc;
pub mod settings;
