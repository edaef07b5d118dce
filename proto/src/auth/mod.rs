//! DH-HMAC-CHAP in-band authentication (NVMe Base 2.0 section 8.13; TP 8006),
//! as pure code: no socket, no clock.
//!
//! - [`secret`]: the `DHHC-1:NN:<base64>:` secret form and the key
//!   transformation;
//! - [`messages`]: the AUTH_Negotiate, DH-HMAC-CHAP_Challenge, _Reply,
//!   _Success1, _Success2 and _Failure1/2 messages, encoded and strictly
//!   decoded (a bad message is a [`FailureReason`], never a panic);
//! - [`chap`]: the responses and the augmented challenge;
//! - [`dh`]: the null group and the RFC 7919 FFDHE groups;
//! - [`controller`] and [`host`]: one queue's transaction as a state
//!   machine, for each role.
//!
//! Randomness comes in through [`Entropy`], so tests replay a transaction
//! exactly; [`OsEntropy`] is the operating system's generator.

pub mod chap;
pub mod controller;
pub mod dh;
#[cfg(test)]
mod exchange_tests;
mod ffdhe;
pub mod host;
pub mod messages;
pub mod secret;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

pub use dh::DhGroup;
pub use messages::FailureReason;
pub use secret::DhchapSecret;

/// Security Protocol (SECP) of Authentication Send/Receive for DH-HMAC-CHAP
/// (NVMe Base 2.0 figure 548: the NVMe security protocol, E9h).
pub const SECP_DHCHAP: u8 = 0xE9;
/// SP Specific 0 and 1 (SPSP0, SPSP1) for DH-HMAC-CHAP: both 01h.
pub const SPSP_DHCHAP: u8 = 0x01;

/// A hash function of DH-HMAC-CHAP (NVMe Base 2.0 figure 584), by its
/// identifier on the wire and in a `DHHC-1` secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashId {
    /// SHA-256 (01h), 32-byte digests.
    Sha256 = 1,
    /// SHA-384 (02h), 48-byte digests.
    Sha384 = 2,
    /// SHA-512 (03h), 64-byte digests.
    Sha512 = 3,
}

impl HashId {
    /// Every hash, strongest first (the order a controller prefers them in).
    pub const ALL: [HashId; 3] = [HashId::Sha512, HashId::Sha384, HashId::Sha256];

    /// The hash with this identifier; `None` for 0 and unassigned values.
    pub fn from_id(id: u8) -> Option<HashId> {
        match id {
            1 => Some(HashId::Sha256),
            2 => Some(HashId::Sha384),
            3 => Some(HashId::Sha512),
            _ => None,
        }
    }

    /// The hash by name as nvme-cli, Linux and SPDK spell it
    /// (`sha256`, `hmac(sha256)`...).
    pub fn from_name(name: &str) -> Option<HashId> {
        match name.trim_start_matches("hmac(").trim_end_matches(')') {
            "sha256" => Some(HashId::Sha256),
            "sha384" => Some(HashId::Sha384),
            "sha512" => Some(HashId::Sha512),
            _ => None,
        }
    }

    /// The identifier.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The name (`sha256`...).
    pub fn name(self) -> &'static str {
        match self {
            HashId::Sha256 => "sha256",
            HashId::Sha384 => "sha384",
            HashId::Sha512 => "sha512",
        }
    }

    /// Digest length, bytes: the HL of every message of a transaction.
    pub fn digest_len(self) -> usize {
        match self {
            HashId::Sha256 => 32,
            HashId::Sha384 => 48,
            HashId::Sha512 => 64,
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            HashId::Sha256 => Sha256::digest(data).to_vec(),
            HashId::Sha384 => Sha384::digest(data).to_vec(),
            HashId::Sha512 => Sha512::digest(data).to_vec(),
        })
    }

    /// HMAC with this hash, keyed by `key`, over the concatenation of `parts`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // HMAC takes keys of any length (longer ones are hashed first).
            let mut m =
                <M as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        Zeroizing::new(match self {
            HashId::Sha256 => run::<Hmac<Sha256>>(key, parts),
            HashId::Sha384 => run::<Hmac<Sha384>>(key, parts),
            HashId::Sha512 => run::<Hmac<Sha512>>(key, parts),
        })
    }
}

/// A source of random bytes (challenges, sequence numbers, DH exponents).
pub trait Entropy {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// The operating system's random generator (`getrandom(2)`).
#[derive(Clone, Copy, Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        // getrandom(2) only fails before the kernel's pool is seeded or
        // with a broken seccomp filter; authenticating with predictable
        // challenges would be worse than stopping.
        if let Err(e) = getrandom::fill(buf) {
            panic!("the operating system's random generator failed: {e}");
        }
    }
}

/// What each side's secrets and offers are for one host on one subsystem.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// The host's secret (the controller checks the host with it).
    pub host_key: DhchapSecret,
    /// The controller's secret, for bidirectional authentication.
    pub ctrl_key: Option<DhchapSecret>,
    /// Hashes allowed, most preferred first.
    pub hashes: Vec<HashId>,
    /// DH groups allowed, most preferred first.
    pub dhgroups: Vec<DhGroup>,
    /// The host's NQN.
    pub hostnqn: String,
    /// The subsystem's NQN.
    pub subnqn: String,
}

impl AuthConfig {
    /// Every hash and group allowed (strongest first, the null group last).
    pub fn new(host_key: DhchapSecret, ctrl_key: Option<DhchapSecret>, hostnqn: &str, subnqn: &str) -> Self {
        AuthConfig {
            host_key,
            ctrl_key,
            hashes: HashId::ALL.to_vec(),
            dhgroups: DhGroup::ALL.to_vec(),
            hostnqn: hostnqn.to_string(),
            subnqn: subnqn.to_string(),
        }
    }

    /// Checks what the specification forbids: a controller key equal to the
    /// host key would let a host reflect the controller's own challenge
    /// back (NVMe Base 2.0 section 8.13.5.9, the reflection attack).
    ///
    /// # Errors
    /// A message for the operator.
    pub fn validate(&self) -> Result<(), String> {
        if self.hashes.is_empty() || self.dhgroups.is_empty() {
            return Err("at least one DH-HMAC-CHAP hash and one DH group must be allowed".into());
        }
        if let Some(c) = &self.ctrl_key
            && c.same_key(&self.host_key)
        {
            return Err(
                "the controller key (dhchap_ctrlr_key) equals the host key (dhchap_key): bidirectional \
                 authentication with one key both ways is open to a reflection attack; generate a separate key"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator for tests: a counter hashed.
    pub(crate) struct TestEntropy(pub u64);

    impl Entropy for TestEntropy {
        fn fill(&mut self, buf: &mut [u8]) {
            for chunk in buf.chunks_mut(32) {
                self.0 += 1;
                let d = HashId::Sha256.digest(&self.0.to_le_bytes());
                chunk.copy_from_slice(&d[..chunk.len()]);
            }
        }
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let m = HashId::Sha256.hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(&m),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let m = HashId::Sha512.hmac(b"Jefe", &[b"what do ya want for nothing?"]);
        assert!(hex(&m).starts_with("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"));
        assert_eq!(HashId::Sha384.hmac(b"k", &[b"x"]).len(), 48);
    }

    #[test]
    fn hash_ids_and_names() {
        for h in HashId::ALL {
            assert_eq!(HashId::from_id(h.id()), Some(h));
            assert_eq!(HashId::from_name(h.name()), Some(h));
            assert_eq!(HashId::from_name(&format!("hmac({})", h.name())), Some(h));
            assert_eq!(h.digest(b"").len(), h.digest_len());
        }
        assert_eq!(HashId::from_id(0), None);
        assert_eq!(HashId::from_id(4), None);
        assert_eq!(HashId::from_name("md5"), None);
    }

    pub(crate) fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
