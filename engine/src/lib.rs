//! `lull-engine`: block devices (bdevs), NVMe-oF subsystems, namespaces and
//! controllers, the discovery controller, host access control, settings and
//! the control plane.
//!
//! It is empty until the NVMe/TCP target lands (it builds on
//! `lull-transport`'s queue pairs and `lull-reactor`'s pollers).
