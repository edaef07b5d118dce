//! The Diffie-Hellman part of DH-HMAC-CHAP (NVMe Base 2.0 section
//! 8.13.5.2): the null group (no exchange) and the RFC 7919 FFDHE groups,
//! generator 2. Public values and the shared secret are big-endian and
//! exactly as long as the group's prime (leading zeroes kept), as the Linux
//! and SPDK implementations send and use them. Modular exponentiation is
//! crypto-bigint's constant-time one.

use crypto_bigint::{BoxedUint, Odd, modular::BoxedMontyParams};
use zeroize::{Zeroize, Zeroizing};

use super::{Entropy, FailureReason, ffdhe};

/// Bits of a private exponent: at least twice each group's security
/// strength (RFC 7919 section 5.2 asks for 2 x 200 bits at ffdhe8192).
const PRIVATE_BITS: u32 = 512;

/// A DH group identifier (NVMe Base 2.0 figure 585).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// No Diffie-Hellman exchange (00h).
    Null = 0,
    /// ffdhe2048 (01h).
    Ffdhe2048 = 1,
    /// ffdhe3072 (02h).
    Ffdhe3072 = 2,
    /// ffdhe4096 (03h).
    Ffdhe4096 = 3,
    /// ffdhe6144 (04h).
    Ffdhe6144 = 4,
    /// ffdhe8192 (05h).
    Ffdhe8192 = 5,
}

impl DhGroup {
    /// Every group, strongest first, the null group last (the order a
    /// controller prefers them in unless configured otherwise).
    pub const ALL: [DhGroup; 6] = [
        DhGroup::Ffdhe8192,
        DhGroup::Ffdhe6144,
        DhGroup::Ffdhe4096,
        DhGroup::Ffdhe3072,
        DhGroup::Ffdhe2048,
        DhGroup::Null,
    ];

    /// The group with this identifier.
    pub fn from_id(id: u8) -> Option<DhGroup> {
        DhGroup::ALL.into_iter().find(|g| g.id() == id)
    }

    /// The group by name (`null`, `ffdhe2048`...), as nvme-cli and SPDK spell it.
    pub fn from_name(name: &str) -> Option<DhGroup> {
        DhGroup::ALL.into_iter().find(|g| g.name() == name)
    }

    /// The identifier.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            DhGroup::Null => "null",
            DhGroup::Ffdhe2048 => "ffdhe2048",
            DhGroup::Ffdhe3072 => "ffdhe3072",
            DhGroup::Ffdhe4096 => "ffdhe4096",
            DhGroup::Ffdhe6144 => "ffdhe6144",
            DhGroup::Ffdhe8192 => "ffdhe8192",
        }
    }

    /// Length of a public value and of the shared secret, bytes (0 for null).
    pub fn value_len(self) -> usize {
        self.prime_hex().len() / 2
    }

    fn prime_hex(self) -> &'static str {
        match self {
            DhGroup::Null => "",
            DhGroup::Ffdhe2048 => ffdhe::FFDHE2048,
            DhGroup::Ffdhe3072 => ffdhe::FFDHE3072,
            DhGroup::Ffdhe4096 => ffdhe::FFDHE4096,
            DhGroup::Ffdhe6144 => ffdhe::FFDHE6144,
            DhGroup::Ffdhe8192 => ffdhe::FFDHE8192,
        }
    }

    /// The prime, big-endian.
    pub fn prime(self) -> Vec<u8> {
        let h = self.prime_hex().as_bytes();
        let nibble = |c: u8| match c {
            b'0'..=b'9' => c - b'0',
            _ => c - b'A' + 10,
        };
        h.chunks(2).map(|p| nibble(p[0]) << 4 | nibble(p[1])).collect()
    }

    fn modulus(self) -> Option<(Odd<BoxedUint>, u32)> {
        let bits = (self.value_len() * 8) as u32;
        let p = BoxedUint::from_be_slice(&self.prime(), bits).ok()?;
        Some((Odd::new(p).into_option()?, bits))
    }
}

/// One side's ephemeral key pair in a group; the private exponent is zeroed
/// on drop.
pub struct KeyPair {
    group: DhGroup,
    private: Zeroizing<Vec<u8>>,
    public: Vec<u8>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh pair in `group`; `None` for the null group.
    pub fn generate(group: DhGroup, entropy: &mut dyn Entropy) -> Option<KeyPair> {
        let mut private = Zeroizing::new(vec![0u8; (PRIVATE_BITS / 8) as usize]);
        entropy.fill(&mut private);
        // An exponent of 0 or 1 would give a public value of 1 or 2.
        private[0] |= 0x80;
        Self::from_private(group, &private)
    }

    /// The pair for a given private exponent (big-endian, at most
    /// [`PRIVATE_BITS`] bits): known-answer tests.
    pub fn from_private(group: DhGroup, private: &[u8]) -> Option<KeyPair> {
        if private.len() * 8 > PRIVATE_BITS as usize {
            return None;
        }
        let public = modpow(group, &[2], private)?;
        Some(KeyPair {
            group,
            private: Zeroizing::new(private.to_vec()),
            public,
        })
    }

    /// The group.
    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// The public value g^x mod p, big-endian, [`DhGroup::value_len`] bytes.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret with the peer's public value (peer^x mod p).
    ///
    /// # Errors
    /// [`FailureReason::IncorrectPayload`] when the peer's value has the
    /// wrong length or is outside 2..=p-2 (1 and p-1 would force the secret
    /// to a known value: SP 800-56A's public key check).
    pub fn shared_secret(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, FailureReason> {
        let p = self.group.prime();
        if peer.len() != p.len() || peer.is_empty() {
            return Err(FailureReason::IncorrectPayload);
        }
        let mut p_minus_2 = p;
        // The primes end in 64 one bits, so p - 2 only changes the last byte.
        if let Some(last) = p_minus_2.last_mut() {
            *last -= 2;
        }
        let mut two = vec![0u8; peer.len()];
        if let Some(last) = two.last_mut() {
            *last = 2;
        }
        // Equal-length big-endian byte strings compare as the numbers do.
        if peer < two.as_slice() || peer > p_minus_2.as_slice() {
            return Err(FailureReason::IncorrectPayload);
        }
        modpow(self.group, peer, &self.private)
            .map(Zeroizing::new)
            .ok_or(FailureReason::Failed)
    }
}

/// base^exp mod p for the group's p, big-endian, padded to the prime's length.
fn modpow(group: DhGroup, base: &[u8], exp: &[u8]) -> Option<Vec<u8>> {
    let (p, bits) = group.modulus()?;
    let b = BoxedUint::from_be_slice(base, bits).ok()?;
    let mut e = BoxedUint::from_be_slice(exp, PRIVATE_BITS).ok()?;
    let params = BoxedMontyParams::new_vartime(p);
    let mut r = crypto_bigint::modular::BoxedMontyForm::new(b, &params)
        .pow(&e)
        .retrieve();
    e.zeroize();
    let out = r.to_be_bytes().to_vec();
    r.zeroize();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::HashId;
    use crate::auth::tests::{TestEntropy, hex};

    #[test]
    fn primes_have_the_rfc_7919_shape() {
        // Digests of the big-endian primes, computed with Python's hashlib
        // from the primes derived independently from RFC 7919's formula.
        let want = [
            (
                DhGroup::Ffdhe2048,
                256,
                "9cd3b7f336872f46c09428d1bbc19877a4d440512cda8d1c1cf0cd6e33698966",
            ),
            (
                DhGroup::Ffdhe3072,
                384,
                "0eaf67db3a839156d5013494a5318a772b5697d270d721f37f092efc69ea5a17",
            ),
            (
                DhGroup::Ffdhe4096,
                512,
                "4648414224ac881b3d0dc59b466f96d06a558278776807797ecf1f66ff397b3e",
            ),
            (
                DhGroup::Ffdhe6144,
                768,
                "227ac9066b3ddd9e193670cda2388fa884f65ba0cf98b742d1fe77a6687c79c7",
            ),
            (
                DhGroup::Ffdhe8192,
                1024,
                "770b14efaf6f049929c523113b3fa99a8d11dab1b18af3609590122075d19833",
            ),
        ];
        for (g, len, digest) in want {
            let p = g.prime();
            assert_eq!(p.len(), len);
            assert_eq!(g.value_len(), len);
            // 2^b - 2^(b-64) + ... - 1: the top and bottom 64 bits are all ones.
            assert!(p[..8].iter().chain(&p[len - 8..]).all(|&b| b == 0xFF), "{g:?}");
            // Every group shares the digits of e after the top 64 bits.
            assert_eq!(hex(&p[8..16]), "adf85458a2bb4a9a");
            assert_eq!(hex(&HashId::Sha256.digest(&p)), digest, "{g:?}");
            assert_eq!(DhGroup::from_id(g.id()), Some(g));
            assert_eq!(DhGroup::from_name(g.name()), Some(g));
        }
        assert_eq!(DhGroup::Null.value_len(), 0);
        assert_eq!(DhGroup::from_id(6), None);
        assert!(KeyPair::generate(DhGroup::Null, &mut TestEntropy(0)).is_none());
    }

    #[test]
    fn known_answer_ffdhe2048() {
        // x = 0x0102..40 (64 bytes), y = 0x4140..02; values from Python's pow().
        let x: Vec<u8> = (1u8..=64).collect();
        let y: Vec<u8> = (2u8..=65).rev().collect();
        let a = KeyPair::from_private(DhGroup::Ffdhe2048, &x).unwrap();
        let b = KeyPair::from_private(DhGroup::Ffdhe2048, &y).unwrap();
        assert_eq!(hex(&HashId::Sha256.digest(a.public())), KAT_PUB_X);
        let s1 = a.shared_secret(b.public()).unwrap();
        let s2 = b.shared_secret(a.public()).unwrap();
        assert_eq!(*s1, *s2);
        assert_eq!(s1.len(), 256);
        assert_eq!(hex(&HashId::Sha256.digest(&s1)), KAT_SHARED);
    }

    const KAT_PUB_X: &str = "1908b0773912e53f8b481d76c9723f551e22e7edcee9e562bf0cc763a9ce3958";
    const KAT_SHARED: &str = "8ef4e6fbb6e5546f3900f0f79a5b4edc0b4e3d3be7d45c9ef955af65f3f27e1c";

    #[test]
    fn every_group_agrees_and_refuses_weak_values() {
        for g in DhGroup::ALL.into_iter().filter(|g| *g != DhGroup::Null) {
            let mut e = TestEntropy(g.id().into());
            let a = KeyPair::generate(g, &mut e).unwrap();
            let b = KeyPair::generate(g, &mut e).unwrap();
            assert_eq!(a.public().len(), g.value_len());
            assert_eq!(
                *a.shared_secret(b.public()).unwrap(),
                *b.shared_secret(a.public()).unwrap()
            );
            let len = g.value_len();
            let mut one = vec![0u8; len];
            one[len - 1] = 1;
            let mut p_minus_1 = g.prime();
            p_minus_1[len - 1] -= 1;
            for bad in [
                vec![0u8; len],
                one,
                p_minus_1,
                g.prime(),
                vec![0xFF; len],
                vec![2; len - 1],
                vec![],
            ] {
                assert_eq!(a.shared_secret(&bad).unwrap_err(), FailureReason::IncorrectPayload);
            }
            let mut two = vec![0u8; len];
            two[len - 1] = 2;
            assert!(a.shared_secret(&two).is_ok(), "2 is a valid public value");
        }
    }

    /// What one exchange costs per group, for docs/architecture.md: the
    /// controller computes a key pair at AUTH_Negotiate and the shared
    /// secret at the Reply. Run with
    /// `cargo test --release -p lull-proto dh_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn dh_cost() {
        const ROUNDS: u32 = 20;
        for g in DhGroup::ALL.into_iter().filter(|g| *g != DhGroup::Null) {
            let mut e = TestEntropy(9);
            let peer = KeyPair::generate(g, &mut e).unwrap();
            let t = std::time::Instant::now();
            for _ in 0..ROUNDS {
                let k = KeyPair::generate(g, &mut e).unwrap();
                let s = k.shared_secret(peer.public()).unwrap();
                assert_eq!(s.len(), g.value_len());
            }
            eprintln!("{}: key pair and shared secret {:?}", g.name(), t.elapsed() / ROUNDS);
        }
    }
}
