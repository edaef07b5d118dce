//! The NVMe-oF target, in the concepts of SPDK's `lib/nvmf` and the Linux
//! kernel's `nvmet`.
//!
//! - [`target`]: the registry: subsystems, controllers (CNTLID), ports and
//!   what they reach, GENCTR, target-wide settings;
//! - [`listeners`]: serving the registry's ports on reactors;
//! - [`subsystem`]: subsystems, namespaces, NQN rules, host access;
//! - [`queue`]: one queue's connection state and the parse-then-execute
//!   step of its requests ([`request`] routes them);
//! - [`ctrlr`]: the controller itself, reactor-free (registers, features,
//!   keep-alive deadline, asynchronous events), and [`ctrlr_runtime`], its
//!   reactor-bound side (timer, event channel, queue closers);
//! - [`connect`]: Connect, Property Get/Set, Disconnect; [`auth`]:
//!   Authentication Send/Receive, [`auth_timeout`] its timer, [`auth_queue`]
//!   a queue's authentication on its reactor (DH work on a helper thread);
//! - [`admin`]: the admin commands, one file per family;
//! - [`discovery`]: the discovery log page;
//! - [`io`]: the NVM I/O commands, one `IoQueue` per I/O queue;
//! - [`stats`]: per-reactor and per-subsystem I/O counters.
//!
//! Imports point one way; each module imports only those before it here:
//! `stats`, `request`, `subsystem`, `ctrlr`, `target`, `auth`, `discovery`,
//! `admin`, `connect`, `io`, `ctrlr_runtime`, `auth_timeout`, `auth_queue`,
//! `queue`, `listeners`. Only the last six know reactors; everything before `io` runs on plain values (the
//! unit tests in `tests.rs` drive it so).

pub mod admin;
pub mod auth;
pub mod auth_queue;
pub mod auth_timeout;
pub mod connect;
pub mod ctrlr;
pub mod ctrlr_runtime;
pub mod discovery;
pub mod io;
pub mod listeners;
pub mod queue;
pub mod request;
pub mod stats;
pub mod subsystem;
pub mod target;

#[cfg(test)]
mod tests;
