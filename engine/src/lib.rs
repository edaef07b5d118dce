//! `lull-engine`: block devices (bdevs), NVMe-oF subsystems, namespaces and
//! controllers, the discovery controller and host access control.
//!
//! - [`bdev`]: `ram`, `null`, `file`;
//! - [`nvmf`]: the NVMe-oF target: subsystems, namespaces, NQN rules, the
//!   dynamic controller, admin/Fabrics command execution, keep-alive, the
//!   data structures hosts read, and serving it on reactors;
//! - [`initiator`]: the NVMe/TCP initiator (remote controllers on reactors);
//! - [`dhchap`]: the DH-HMAC-CHAP hashes and groups allowed; [`dh_helper`]:
//!   the thread their DH work runs on;
//! - [`allocator`], [`meminfo`]: the allocator's settings and the memory
//!   this machine has.
//!
//! The daemon's control plane (settings, JSON-RPC, metrics, the running
//! application) is the `lull-daemon` crate, built on this one.

pub mod allocator;
pub mod bdev;
pub mod dh_helper;
pub mod dhchap;
pub mod initiator;
pub mod meminfo;
pub mod nvmf;
