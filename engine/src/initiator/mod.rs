//! The NVMe/TCP initiator: remote controllers attached to reactors.
//!
//! - [`options`]: settings under SPDK `bdev_nvme_set_options` names;
//! - [`associate`]: the blocking control path that brings up an association;
//! - [`ctrlr`]: the controller on the reactors (admin queue, keep-alive,
//!   AER, I/O queues, reset and reconnect);
//! - [`reauth`]: DH-HMAC-CHAP re-authentication of a live queue;
//! - [`bdev`]: a remote namespace as a bdev.

pub mod associate;
pub mod bdev;
pub mod ctrlr;
pub mod options;
pub mod reauth;

pub use crate::dhchap::DhchapOffer;
pub use associate::{CtrlrInfo, HostDhchapKeys, HostTls, NsDescriptors, NsInfo, NvmeTrid, parse_descriptors};
pub use bdev::NvmeBdev;
pub use ctrlr::{CtrlrState, IoDone, IoError, NvmeController, NvmeError};
pub use options::NvmeOptions;
