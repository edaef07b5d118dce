//! The DH-HMAC-CHAP computations (NVMe Base 2.0 section 8.13.5.2 and
//! 8.13.5.5):
//!
//! ```text
//! Ca  = HMAC(H(g^xy mod p), C)            augmented challenge, when DH is used
//! R1  = HMAC(Kh, C1 || S1 || T_ID || SC_C || "HostHost"   || NQNh || 00h || NQNc)
//! R2  = HMAC(Kc, C2 || S2 || T_ID || SC_C || "Controller" || NQNc || 00h || NQNh)
//! ```
//!
//! H and HMAC use the negotiated hash; S1/S2 are 4 bytes and T_ID 2 bytes,
//! little-endian; SC_C one byte; NQNs without their NUL. Kh is the host
//! key transformed with the host's NQN, Kc the controller key transformed
//! with the subsystem's NQN ([`super::DhchapSecret::transformed`]).

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::HashId;

/// The fields every response covers besides the key and challenge.
#[derive(Clone, Copy, Debug)]
pub struct Transcript<'a> {
    /// Sequence number (S1 for the host's response, S2 for the controller's).
    pub seqnum: u32,
    /// Transaction identifier.
    pub t_id: u16,
    /// Secure channel concatenation (0).
    pub sc_c: u8,
    /// The host's NQN.
    pub hostnqn: &'a str,
    /// The subsystem's NQN.
    pub subnqn: &'a str,
}

/// The augmented challenge Ca = HMAC(H(session key), C); `None` for the
/// null group (no session key) leaves C as it is.
pub fn augmented_challenge(hash: HashId, session_key: Option<&[u8]>, challenge: &[u8]) -> Zeroizing<Vec<u8>> {
    match session_key {
        None => Zeroizing::new(challenge.to_vec()),
        Some(k) => hash.hmac(&hash.digest(k), &[challenge]),
    }
}

/// The host's response R1 to the (augmented) challenge C1, with the
/// transformed host key.
pub fn host_response(hash: HashId, key: &[u8], challenge: &[u8], t: &Transcript<'_>) -> Zeroizing<Vec<u8>> {
    hash.hmac(
        key,
        &[
            challenge,
            &t.seqnum.to_le_bytes(),
            &t.t_id.to_le_bytes(),
            &[t.sc_c],
            b"HostHost",
            t.hostnqn.as_bytes(),
            &[0],
            t.subnqn.as_bytes(),
        ],
    )
}

/// The controller's response R2 to the (augmented) challenge C2, with the
/// transformed controller key.
pub fn controller_response(hash: HashId, key: &[u8], challenge: &[u8], t: &Transcript<'_>) -> Zeroizing<Vec<u8>> {
    hash.hmac(
        key,
        &[
            challenge,
            &t.seqnum.to_le_bytes(),
            &t.t_id.to_le_bytes(),
            &[t.sc_c],
            b"Controller",
            t.subnqn.as_bytes(),
            &[0],
            t.hostnqn.as_bytes(),
        ],
    )
}

/// Whether a received response equals the expected one, in constant time.
pub fn responses_match(expected: &[u8], received: &[u8]) -> bool {
    expected.len() == received.len() && bool::from(expected.ct_eq(received))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::DhchapSecret;
    use crate::auth::tests::hex;

    const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001";
    const SUBNQN: &str = "nqn.2024-01.io.lull:vol1";

    /// Expected values computed with Python's hmac/hashlib from the
    /// formulas of section 8.13.5 (independently of this code).
    #[test]
    fn responses_match_independent_values() {
        let key: Vec<u8> = (0u8..32).collect();
        let kh = DhchapSecret::from_key(Some(HashId::Sha256), &key)
            .unwrap()
            .transformed(HOSTNQN);
        let c1 = [0xC1u8; 32];
        let t = Transcript {
            seqnum: 0x01020304,
            t_id: 0x0A0B,
            sc_c: 0,
            hostnqn: HOSTNQN,
            subnqn: SUBNQN,
        };
        assert_eq!(hex(&host_response(HashId::Sha256, &kh, &c1, &t)), R1_SHA256);

        let ckey: Vec<u8> = (32u8..80).collect();
        let kc = DhchapSecret::from_key(Some(HashId::Sha384), &ckey)
            .unwrap()
            .transformed(SUBNQN);
        let c2 = [0xC2u8; 48];
        let t2 = Transcript {
            seqnum: 0xFFFF_FFFE,
            ..t
        };
        assert_eq!(hex(&controller_response(HashId::Sha384, &kc, &c2, &t2)), R2_SHA384);

        let session = [0x5Eu8; 256];
        let ca = augmented_challenge(HashId::Sha512, Some(&session), &[0xC3; 64]);
        assert_eq!(hex(&ca), CA_SHA512);
        assert_eq!(*augmented_challenge(HashId::Sha512, None, &[0xC3; 64]), vec![0xC3; 64]);
    }

    const R1_SHA256: &str = "332ae800130c945014b82d59c79be4b0d4fa8697fa8bbeecf032ca90a5000b85";
    const R2_SHA384: &str =
        "110964397e022bda98bb73a2ec8133d62bf26e717ebfb229ccd6c0fc05c0344ba5f3fa76bb08a27b7f22980b3cb5f0eb";
    const CA_SHA512: &str = "c68ec722327d75cd4515d47359df310e6bb42e165beeba86ca76f3902a5a1c6d715cb7ca80c91bdbe09189654c843e5d20d0ce298b5f652fd1fd47847d8df99a";

    #[test]
    fn comparison() {
        assert!(responses_match(&[1, 2, 3], &[1, 2, 3]));
        assert!(!responses_match(&[1, 2, 3], &[1, 2, 4]));
        assert!(!responses_match(&[1, 2, 3], &[1, 2]));
        assert!(!responses_match(&[], &[0]));
    }
}
