//! The NVMe-oF target: subsystems, controllers, the commands they execute,
//! and serving them on reactors.

pub mod controller;
pub mod identify;
pub mod logpage;
pub mod subsystem;
pub mod target;
