//! Fuzzes the DH-HMAC-CHAP message decoder (NVMe Base 2.0 section 8.13.5)
//! and the `DHHC-1` secret parser with arbitrary bytes, as a hostile host
//! (Authentication Send) or controller (Authentication Receive) would send
//! them.
//!
//! Invariants checked: no panic; whatever decodes, in either framing,
//! encodes to a message that decodes back to the same (exactly framed), so
//! nothing accepted is lost or invented on the way through; a padded
//! decode accepts whatever the exact one accepts.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lull_proto::auth::DhchapSecret;
use lull_proto::auth::messages::{Framing, Message};

fuzz_target!(|data: &[u8]| {
    let exact = Message::decode(data, Framing::Exact);
    let padded = Message::decode(data, Framing::Padded);
    if let Ok(m) = &exact {
        assert_eq!(padded.as_ref().ok(), Some(m), "padded framing refused an exact message");
    }
    for m in [exact, padded].into_iter().flatten() {
        let wire = m.encode();
        assert_eq!(
            Message::decode(&wire, Framing::Exact),
            Ok(m),
            "re-encoded message decodes differently"
        );
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = DhchapSecret::parse(s);
    }
});
