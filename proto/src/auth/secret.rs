//! DH-HMAC-CHAP secrets in the form `nvme gen-dhchap-key` writes
//! (NVMe Base 2.0 section 8.13.5.8, "secret representation"):
//!
//! ```text
//! DHHC-1:NN:<base64 of key || CRC-32 of key, little-endian>:
//! ```
//!
//! `NN` is the hash the key is transformed with before use (00 none, 01
//! SHA-256, 02 SHA-384, 03 SHA-512); the key is 32, 48 or 64 bytes; the
//! CRC-32 is the IEEE 802.3 one (as zlib's `crc32`). The key never appears
//! in `Debug` output or in an error, and its memory is zeroed on drop.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{Entropy, HashId};

/// The prefix of every secret of this version.
const PREFIX: &str = "DHHC-1:";
/// What the key transformation appends to the NQN.
const TRANSFORM_LABEL: &[u8] = b"NVMe-over-Fabrics";

/// Why a secret string was refused (it never quotes the secret).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// It does not start with `DHHC-1:`.
    #[error("a DH-HMAC-CHAP secret starts with `DHHC-1:` (as `nvme gen-dhchap-key` writes it)")]
    Prefix,
    /// The transformation field is not `00` to `03`.
    #[error("the secret's hash field must be 00 (none), 01 (SHA-256), 02 (SHA-384) or 03 (SHA-512)")]
    Hash,
    /// No `:` after the base64 part.
    #[error("the secret must end with `:` after its base64 part")]
    Terminator,
    /// The base64 part does not decode.
    #[error("the secret's key part is not valid base64")]
    Base64,
    /// The decoded key is not 32, 48 or 64 bytes (plus the 4-byte CRC).
    #[error("the secret's key is {0} bytes; it must be 32, 48 or 64")]
    Length(usize),
    /// The CRC-32 does not match the key: a mistyped or truncated secret.
    #[error("the secret's CRC-32 does not match its key (mistyped or truncated secret)")]
    Crc,
}

/// A DH-HMAC-CHAP secret: the key and the hash it is transformed with.
#[derive(Clone)]
pub struct DhchapSecret {
    transform: Option<HashId>,
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DhchapSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhchapSecret")
            .field("transform", &self.transform)
            .field("key_len", &self.key.len())
            .finish_non_exhaustive()
    }
}

impl DhchapSecret {
    /// Parses `DHHC-1:NN:<base64>:`; surrounding whitespace (a key file's
    /// newline) is ignored.
    ///
    /// # Errors
    /// A [`SecretError`] saying which part is wrong.
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let s = s.trim();
        let rest = s.strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
        let (nn, rest) = rest.split_once(':').ok_or(SecretError::Hash)?;
        let transform = match nn {
            "00" => None,
            "01" | "02" | "03" => HashId::from_id(nn.as_bytes()[1] - b'0'),
            _ => return Err(SecretError::Hash),
        };
        let b64 = rest.strip_suffix(':').ok_or(SecretError::Terminator)?;
        if b64.contains(':') {
            return Err(SecretError::Terminator);
        }
        let raw = Zeroizing::new(STANDARD.decode(b64).map_err(|_| SecretError::Base64)?);
        let key_len = raw.len().saturating_sub(4);
        if !matches!(key_len, 32 | 48 | 64) || raw.len() != key_len + 4 {
            return Err(SecretError::Length(key_len));
        }
        let (key, crc) = raw.split_at(key_len);
        if crc32fast::hash(key).to_le_bytes() != crc {
            return Err(SecretError::Crc);
        }
        Ok(DhchapSecret {
            transform,
            key: Zeroizing::new(key.to_vec()),
        })
    }

    /// A secret from a raw key.
    ///
    /// # Errors
    /// [`SecretError::Length`] unless the key is 32, 48 or 64 bytes.
    pub fn from_key(transform: Option<HashId>, key: &[u8]) -> Result<Self, SecretError> {
        if !matches!(key.len(), 32 | 48 | 64) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(DhchapSecret {
            transform,
            key: Zeroizing::new(key.to_vec()),
        })
    }

    /// A new random secret of `len` bytes (32, 48 or 64), as
    /// `nvme gen-dhchap-key` makes one.
    ///
    /// # Errors
    /// [`SecretError::Length`] for another length.
    pub fn generate(transform: Option<HashId>, len: usize, entropy: &mut dyn Entropy) -> Result<Self, SecretError> {
        if !matches!(len, 32 | 48 | 64) {
            return Err(SecretError::Length(len));
        }
        let mut key = Zeroizing::new(vec![0u8; len]);
        entropy.fill(&mut key);
        Ok(DhchapSecret { transform, key })
    }

    /// The `DHHC-1:NN:<base64>:` form.
    pub fn encode(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(self.key.to_vec());
        raw.extend_from_slice(&crc32fast::hash(&self.key).to_le_bytes());
        let nn = self.transform.map_or(0, HashId::id);
        Zeroizing::new(format!("{PREFIX}{nn:02}:{}:", STANDARD.encode(&*raw)))
    }

    /// The hash the key is transformed with (`None`: used as it is).
    pub fn transform_hash(&self) -> Option<HashId> {
        self.transform
    }

    /// The key's length, bytes.
    pub fn key_len(&self) -> usize {
        self.key.len()
    }

    /// Whether both secrets hold the same key (in constant time).
    pub fn same_key(&self, other: &DhchapSecret) -> bool {
        self.key.len() == other.key.len() && bool::from(self.key.as_slice().ct_eq(other.key.as_slice()))
    }

    /// The transformed key for `nqn` (section 8.13.5.7): HMAC with the
    /// secret's hash, keyed by the key, over `nqn || "NVMe-over-Fabrics"`;
    /// the key itself when the secret names no hash. The host key is
    /// transformed with the host's NQN, the controller key with the
    /// subsystem's.
    pub fn transformed(&self, nqn: &str) -> Zeroizing<Vec<u8>> {
        match self.transform {
            None => self.key.clone(),
            Some(h) => h.hmac(&self.key, &[nqn.as_bytes(), TRANSFORM_LABEL]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tests::{TestEntropy, hex, unhex};

    /// A 32-byte key 00 01 .. 1f written with CRC and base64 by Python's
    /// zlib and base64 modules (independently of this code).
    const KEY32: &str = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";

    #[test]
    fn parses_a_known_secret() {
        let s = DhchapSecret::parse(KEY32).unwrap();
        assert_eq!(s.transform_hash(), None);
        assert_eq!(s.key_len(), 32);
        assert_eq!(*s.encode(), KEY32);
        assert_eq!(hex(&s.transformed("ignored")), hex(&(0u8..32).collect::<Vec<_>>()));
        let with_newline = format!("{KEY32}\n");
        assert!(DhchapSecret::parse(&with_newline).is_ok());
        assert!(!format!("{s:?}").contains("AAEC"), "Debug shows no key material");
    }

    #[test]
    fn transformation_matches_independent_values() {
        // Key 00..1f marked SHA-256/384/512; expected values from Python's
        // hmac module: HMAC(key, nqn || "NVMe-over-Fabrics").
        let key: Vec<u8> = (0u8..32).collect();
        let nqn = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001";
        for (h, want) in [
            (HashId::Sha256, TRANSFORMED_256),
            (HashId::Sha384, TRANSFORMED_384),
            (HashId::Sha512, TRANSFORMED_512),
        ] {
            let s = DhchapSecret::from_key(Some(h), &key).unwrap();
            assert_eq!(hex(&s.transformed(nqn)), want, "{h:?}");
            let again = DhchapSecret::parse(&s.encode()).unwrap();
            assert_eq!(again.transform_hash(), Some(h));
            assert!(again.same_key(&s));
        }
    }

    const TRANSFORMED_256: &str = "5b78a3f41bf7d05eb6c0cda0eb53cff08bfcd6773e1db312e107b351c1d59091";
    const TRANSFORMED_384: &str =
        "7af06ad95515e2ddad5b1321d92887f4f4ff933fdd33fb51439aaf1e7131e8ad6b263bb7113d515cfe726ad9cb7ffca1";
    const TRANSFORMED_512: &str = "1b401aa2475a517a81a985645f85e1b853f3b714050d39b30cbe4e5fb886d59b41579000e499b919e6511bf77064d242adfd14a7d01d9e79b60fb69afd5dcd1f";

    #[test]
    fn refuses_bad_secrets_without_quoting_them() {
        let cases: &[(&str, SecretError)] = &[
            ("", SecretError::Prefix),
            ("DHHC-2:00:AAAA:", SecretError::Prefix),
            (
                "DHHC-1:04:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:",
                SecretError::Hash,
            ),
            (
                "DHHC-1:1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:",
                SecretError::Hash,
            ),
            ("DHHC-1:00", SecretError::Hash),
            (
                "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR",
                SecretError::Terminator,
            ),
            ("DHHC-1:00:AAEC:AwQF:", SecretError::Terminator),
            ("DHHC-1:00:!!!!:", SecretError::Base64),
            (
                "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaS:",
                SecretError::Crc,
            ),
            (
                "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd:",
                SecretError::Length(26),
            ),
            ("DHHC-1:00::", SecretError::Length(0)),
        ];
        for (s, want) in cases {
            assert_eq!(DhchapSecret::parse(s).unwrap_err(), *want, "{s}");
            assert!(!want.to_string().contains("AAEC"));
        }
        // 36 bytes of key + CRC: a length nvme-cli never writes.
        let odd = DhchapSecret {
            transform: None,
            key: Zeroizing::new(vec![7; 36]),
        };
        assert_eq!(DhchapSecret::parse(&odd.encode()).unwrap_err(), SecretError::Length(36));
        assert_eq!(
            DhchapSecret::from_key(None, &[0; 16]).unwrap_err(),
            SecretError::Length(16)
        );
    }

    #[test]
    fn generated_secrets_round_trip() {
        for len in [32, 48, 64] {
            let s = DhchapSecret::generate(HashId::from_id((len / 16 - 1) as u8), len, &mut TestEntropy(1)).unwrap();
            let back = DhchapSecret::parse(&s.encode()).unwrap();
            assert!(back.same_key(&s));
            assert_eq!(back.key_len(), len);
        }
        assert!(DhchapSecret::generate(None, 40, &mut TestEntropy(1)).is_err());
        let a = DhchapSecret::from_key(None, &unhex(&"11".repeat(32))).unwrap();
        let b = DhchapSecret::from_key(None, &unhex(&"11".repeat(48))).unwrap();
        assert!(!a.same_key(&b));
    }
}
