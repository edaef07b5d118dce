//! `lull-transport`: the NVMe/TCP transport binding (NVMe/TCP 1.0).
//!
//! It will own, in this order of dependency:
//! - the wire format (PDUs, common header checks, HDGST/DDGST), pure code
//!   that never touches a socket or a clock;
//! - the target-side and host-side queue-pair state machines, fed bytes and
//!   "now", yielding bytes to send, commands to execute and timers to arm;
//! - the thin glue that drives those machines from a reactor's fd pollers.
//!
//! It is empty until the NVMe/TCP target lands; the layering is fixed here so
//! that imports keep pointing one way: reactor <- transport <- engine <- tools.
