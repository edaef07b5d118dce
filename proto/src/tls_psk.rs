//! NVMe/TCP TLS pre-shared keys (NVMe/TCP Transport 1.0 section 3.6.1 as
//! amended by TP 8011, PSK identity version 1 from TP 8028), as pure code:
//!
//! - the PSK interchange format, `NVMeTLSkey-1:HH:<base64(key || CRC-32)>:`
//!   (what `nvme gen-tls-key` writes and SPDK's keyring files hold): `HH`
//!   is the hash the retained PSK is derived with (`00` the configured PSK
//!   is the retained PSK as it is, `01` SHA-256, `02` SHA-384), the key is
//!   32 or 48 bytes, the CRC-32 is the IEEE one (zlib's), little-endian;
//! - the retained PSK: `HKDF-Expand-Label(HKDF-Extract(0, configured),
//!   "HostNQN", NQNh, L)`;
//! - the PSK identity, version 0 `NVMe0R<hh> <NQNh> <NQNc>` (what SPDK and
//!   the first NVMe/TCP TLS implementations send) and version 1
//!   `NVMe1R<hh> <NQNh> <NQNc> <PSK digest>` (TP 8028, what Linux sends),
//!   where `<hh>` names the hash of the cipher suite: `01` SHA-256 with
//!   TLS_AES_128_GCM_SHA256 (a 32-byte key), `02` SHA-384 with
//!   TLS_AES_256_GCM_SHA384 (a 48-byte key);
//! - the TLS PSK handed to TLS 1.3: `HKDF-Expand-Label(HKDF-Extract(0,
//!   retained), "nvme-tls-psk", context, L)`, the context being the whole
//!   identity for version 0 and `"<hh> <PSK digest>"` for version 1.
//!
//! HKDF-Expand-Label is RFC 8446 section 7.1's (`"tls13 "` before the
//! label); L is the hash's output length. Keys never appear in `Debug`
//! output or errors, and their memory is zeroed on drop.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use sha2::{Sha256, Sha384};
use zeroize::Zeroizing;

use crate::auth::HashId;

/// The prefix of every PSK in the interchange format, version 1.
const PREFIX: &str = "NVMeTLSkey-1:";
/// What the PSK digest's HMAC covers after the two NQNs.
const DIGEST_LABEL: &[u8] = b"NVMe-over-Fabrics";
/// The longest identity a HkdfLabel context holds (one length byte).
const MAX_CONTEXT: usize = 255;

/// Why a PSK or a derivation was refused (never quoting the key).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    /// It does not start with `NVMeTLSkey-1:`.
    #[error("a TLS PSK starts with `NVMeTLSkey-1:` (the PSK interchange format `nvme gen-tls-key` writes)")]
    Prefix,
    /// The hash field is not `00`, `01` or `02`.
    #[error("the TLS PSK's hash field must be 00 (none), 01 (SHA-256) or 02 (SHA-384)")]
    Hash,
    /// No `:` after the base64 part, or more fields.
    #[error("the TLS PSK must end with `:` after its base64 part")]
    Terminator,
    /// The base64 part does not decode.
    #[error("the TLS PSK's key part is not valid base64")]
    Base64,
    /// The key is not 32 or 48 bytes, or not the length its hash field asks
    /// for (32 for 01, 48 for 02).
    #[error("the TLS PSK's key is {0} bytes; it must be 32 (hash 00 or 01) or 48 (hash 00 or 02)")]
    Length(usize),
    /// The CRC-32 does not match: a mistyped or truncated key.
    #[error("the TLS PSK's CRC-32 does not match its key (mistyped or truncated key)")]
    Crc,
    /// An NQN is empty, holds a space, or the identity is too long for
    /// the derivation's context (255 bytes).
    #[error("{0}")]
    Nqn(&'static str),
}

/// The hash of a TLS PSK and its cipher suite: the `<hh>` of the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PskHash {
    /// 01: SHA-256, TLS_AES_128_GCM_SHA256, 32-byte keys.
    Sha256 = 1,
    /// 02: SHA-384, TLS_AES_256_GCM_SHA384, 48-byte keys.
    Sha384 = 2,
}

impl PskHash {
    /// The identifier (`01`, `02` in identities and the interchange format).
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The hash with identifier `id`; `None` for any other.
    pub fn from_id(id: u8) -> Option<PskHash> {
        match id {
            1 => Some(PskHash::Sha256),
            2 => Some(PskHash::Sha384),
            _ => None,
        }
    }

    /// The hash whose output is `len` bytes (a configured key's length
    /// picks its cipher suite, as SPDK and Linux do).
    pub fn for_key_len(len: usize) -> Option<PskHash> {
        match len {
            32 => Some(PskHash::Sha256),
            48 => Some(PskHash::Sha384),
            _ => None,
        }
    }

    /// Output length in bytes (L of every derivation).
    pub fn output_len(self) -> usize {
        match self {
            PskHash::Sha256 => 32,
            PskHash::Sha384 => 48,
        }
    }

    /// The TLS 1.3 cipher suite (IANA name, as OpenSSL spells it).
    pub fn cipher_suite(self) -> &'static str {
        match self {
            PskHash::Sha256 => "TLS_AES_128_GCM_SHA256",
            PskHash::Sha384 => "TLS_AES_256_GCM_SHA384",
        }
    }

    fn hmac_hash(self) -> HashId {
        match self {
            PskHash::Sha256 => HashId::Sha256,
            PskHash::Sha384 => HashId::Sha384,
        }
    }

    /// HKDF-Extract with a zero salt, then HKDF-Expand-Label (RFC 8446
    /// section 7.1) to L = [`output_len`](Self::output_len) bytes.
    fn extract_expand_label(self, ikm: &[u8], label: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, PskError> {
        let len = self.output_len();
        if context.len() > MAX_CONTEXT {
            return Err(PskError::Nqn(
                "the NQNs are too long for a TLS PSK identity (at most 255 bytes in all)",
            ));
        }
        let mut info = Vec::with_capacity(4 + 6 + label.len() + context.len());
        info.extend_from_slice(&(len as u16).to_be_bytes());
        info.push((6 + label.len()) as u8);
        info.extend_from_slice(b"tls13 ");
        info.extend_from_slice(label);
        info.push(context.len() as u8);
        info.extend_from_slice(context);
        let mut okm = Zeroizing::new(vec![0u8; len]);
        // Expand refuses only outputs over 255 hash lengths; L is one.
        let expanded = match self {
            PskHash::Sha256 => Hkdf::<Sha256>::new(None, ikm).expand(&info, &mut okm),
            PskHash::Sha384 => Hkdf::<Sha384>::new(None, ikm).expand(&info, &mut okm),
        };
        expanded.map_err(|_| PskError::Length(len))?;
        Ok(okm)
    }
}

/// The version of a PSK identity (and of the TLS PSK derivation that goes with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdentityVersion {
    /// `NVMe0R<hh> <NQNh> <NQNc>` (TP 8011).
    V0,
    /// `NVMe1R<hh> <NQNh> <NQNc> <PSK digest>` (TP 8028).
    V1,
}

/// A configured PSK: the key and the hash its retained PSK is derived with.
#[derive(Clone)]
pub struct ConfiguredPsk {
    retained_hash: Option<PskHash>,
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ConfiguredPsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfiguredPsk")
            .field("retained_hash", &self.retained_hash)
            .field("key_len", &self.key.len())
            .finish_non_exhaustive()
    }
}

impl ConfiguredPsk {
    /// Parses `NVMeTLSkey-1:HH:<base64>:`; surrounding whitespace (a key
    /// file's newline) is ignored.
    ///
    /// # Errors
    /// A [`PskError`] saying which part is wrong.
    pub fn parse(s: &str) -> Result<Self, PskError> {
        let rest = s.trim().strip_prefix(PREFIX).ok_or(PskError::Prefix)?;
        let (hh, rest) = rest.split_once(':').ok_or(PskError::Hash)?;
        let retained_hash = match hh {
            "00" => None,
            "01" => Some(PskHash::Sha256),
            "02" => Some(PskHash::Sha384),
            _ => return Err(PskError::Hash),
        };
        let b64 = rest.strip_suffix(':').ok_or(PskError::Terminator)?;
        if b64.contains(':') {
            return Err(PskError::Terminator);
        }
        let raw = Zeroizing::new(STANDARD.decode(b64).map_err(|_| PskError::Base64)?);
        let key_len = raw.len().saturating_sub(4);
        let (key, crc) = raw.split_at(key_len);
        let psk = ConfiguredPsk::from_key(retained_hash, key)?;
        if raw.len() < 4 || crc32fast::hash(key).to_le_bytes() != crc {
            return Err(PskError::Crc);
        }
        Ok(psk)
    }

    /// A configured PSK from a raw key.
    ///
    /// # Errors
    /// [`PskError::Length`] unless the key is 32 or 48 bytes, and the
    /// length `retained_hash` asks for when it is given.
    pub fn from_key(retained_hash: Option<PskHash>, key: &[u8]) -> Result<Self, PskError> {
        match (retained_hash, PskHash::for_key_len(key.len())) {
            (_, None) => return Err(PskError::Length(key.len())),
            (Some(h), Some(k)) if h != k => return Err(PskError::Length(key.len())),
            _ => {}
        }
        Ok(ConfiguredPsk {
            retained_hash,
            key: Zeroizing::new(key.to_vec()),
        })
    }

    /// The interchange form, `NVMeTLSkey-1:HH:<base64>:`.
    pub fn encode(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(self.key.to_vec());
        raw.extend_from_slice(&crc32fast::hash(&self.key).to_le_bytes());
        let hh = self.retained_hash.map_or(0, PskHash::id);
        Zeroizing::new(format!("{PREFIX}{hh:02}:{}:", STANDARD.encode(&*raw)))
    }

    /// The hash the retained PSK is derived with (`None`: the key is the retained PSK).
    pub fn retained_hash(&self) -> Option<PskHash> {
        self.retained_hash
    }

    /// The hash of the identity and the cipher suite: by the key's length.
    pub fn hash(&self) -> PskHash {
        // from_key admits 32 and 48 bytes only.
        PskHash::for_key_len(self.key.len()).unwrap_or(PskHash::Sha384)
    }

    /// The retained PSK for the host `hostnqn`: the key itself for hash
    /// `00`, else `HKDF-Expand-Label(HKDF-Extract(0, key), "HostNQN", NQNh, L)`.
    ///
    /// # Errors
    /// [`PskError::Nqn`] for an empty or over-long host NQN.
    pub fn retained(&self, hostnqn: &str) -> Result<Zeroizing<Vec<u8>>, PskError> {
        check_nqn(hostnqn)?;
        match self.retained_hash {
            None => Ok(self.key.clone()),
            Some(h) => h.extract_expand_label(&self.key, b"HostNQN", hostnqn.as_bytes()),
        }
    }

    /// The identity and TLS PSK a host `hostnqn` uses towards subsystem
    /// `subnqn` with this key.
    ///
    /// # Errors
    /// [`PskError::Nqn`] for an empty NQN, one holding a space, or an
    /// identity too long for the derivation (over 255 bytes).
    pub fn tls_psk(&self, hostnqn: &str, subnqn: &str, version: IdentityVersion) -> Result<TlsPsk, PskError> {
        check_nqn(subnqn)?;
        let retained = self.retained(hostnqn)?;
        let hash = self.hash();
        let hh = hash.id();
        let (identity, key) = match version {
            IdentityVersion::V0 => {
                let identity = format!("NVMe0R{hh:02} {hostnqn} {subnqn}");
                let key = hash.extract_expand_label(&retained, b"nvme-tls-psk", identity.as_bytes())?;
                (identity, key)
            }
            IdentityVersion::V1 => {
                let mac = hash.hmac_hash().hmac(
                    &retained,
                    &[hostnqn.as_bytes(), b" ", subnqn.as_bytes(), b" ", DIGEST_LABEL],
                );
                let digest = STANDARD.encode(&*mac);
                let context = format!("{hh:02} {digest}");
                let key = hash.extract_expand_label(&retained, b"nvme-tls-psk", context.as_bytes())?;
                (format!("NVMe1R{hh:02} {hostnqn} {subnqn} {digest}"), key)
            }
        };
        Ok(TlsPsk {
            identity,
            hash,
            version,
            hostnqn: hostnqn.to_string(),
            subnqn: subnqn.to_string(),
            key,
        })
    }
}

fn check_nqn(nqn: &str) -> Result<(), PskError> {
    if nqn.is_empty() || nqn.contains(' ') {
        return Err(PskError::Nqn(
            "a TLS PSK identity needs NQNs that are not empty and hold no space",
        ));
    }
    if nqn.len() > MAX_CONTEXT {
        return Err(PskError::Nqn("an NQN is longer than a TLS PSK identity allows"));
    }
    Ok(())
}

/// What TLS 1.3 is given for one host and subsystem: the identity the
/// client sends, the external PSK and the cipher suite it goes with.
#[derive(Clone)]
pub struct TlsPsk {
    identity: String,
    hash: PskHash,
    version: IdentityVersion,
    hostnqn: String,
    subnqn: String,
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for TlsPsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPsk")
            .field("identity", &self.identity)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl TlsPsk {
    /// The PSK identity (ASCII; sent in clear in the ClientHello).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The hash, which names the one cipher suite this PSK may be used with.
    pub fn hash(&self) -> PskHash {
        self.hash
    }

    /// The identity's version.
    pub fn version(&self) -> IdentityVersion {
        self.version
    }

    /// The host NQN the identity names: the only host that may Connect
    /// over a session keyed by this PSK.
    pub fn hostnqn(&self) -> &str {
        &self.hostnqn
    }

    /// The subsystem NQN the identity names: the only subsystem a host may
    /// Connect to over a session keyed by this PSK.
    pub fn subnqn(&self) -> &str {
        &self.subnqn
    }

    /// The key TLS uses, [`PskHash::output_len`] bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Whether both are the same identity with the same key (the key
    /// compared in constant time).
    pub fn same(&self, other: &TlsPsk) -> bool {
        use subtle::ConstantTimeEq;
        self.identity == other.identity
            && self.key.len() == other.key.len()
            && bool::from(self.key.as_slice().ct_eq(other.key.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "nqn.2016-06.io.spdk:host1";
    const SUB: &str = "nqn.2016-06.io.spdk:cnode1";
    /// libnvme's test/psk.c vector (also SPDK's test/unit/lib/nvmf/tcp.c and
    /// test/nvmf/fips/fips.sh): these 32 bytes are this interchange string.
    const LIBNVME_KEY: &str = "5512DBB6737D0106F65975B773DFB011FFC344BCF442E2DD6D8BC4870B5D5B03";
    const LIBNVME_PSK: &str = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn the_libnvme_vector_parses_and_encodes_back() {
        let psk = ConfiguredPsk::parse(LIBNVME_PSK).expect("parses");
        assert_eq!(psk.retained_hash(), Some(PskHash::Sha256));
        assert_eq!(psk.hash(), PskHash::Sha256);
        assert_eq!(&*psk.key, &unhex(LIBNVME_KEY));
        assert_eq!(&*psk.encode(), LIBNVME_PSK);
        let again = ConfiguredPsk::from_key(Some(PskHash::Sha256), &unhex(LIBNVME_KEY)).expect("key");
        assert_eq!(&*again.encode(), LIBNVME_PSK);
        // A key file's newline is fine.
        assert!(ConfiguredPsk::parse(&format!("{LIBNVME_PSK}\n")).is_ok());
        // SPDK's test/nvmf/host/async_init.sh key: the ASCII text
        // "00112233445566778899aabbccddeeff" as a 32-byte key.
        let spdk = ConfiguredPsk::parse("NVMeTLSkey-1:01:MDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmZwJEiQ:")
            .expect("SPDK's key");
        assert_eq!(&*spdk.key, b"00112233445566778899aabbccddeeff");
    }

    /// Expected values computed independently: the spec's formulas written
    /// out with Python's `hmac`/`hashlib` (HKDF by hand), and the retained
    /// and version 0 TLS PSK of the first case also with OpenSSL's HKDF
    /// (`openssl kdf ... HKDF`, the EVP call SPDK's nvme_tcp.h makes); see
    /// docs/architecture.md "TLS". The same values are what SPDK's nvmf_tgt
    /// and bdevperf accept in tests/interop/spdk.sh.
    #[test]
    fn derivations_match_independently_computed_values() {
        struct Case {
            psk: &'static str,
            retained: &'static str,
            tls0: &'static str,
            id1: &'static str,
            tls1: &'static str,
        }
        let cases = [
            Case {
                psk: LIBNVME_PSK,
                retained: "b984602631ba729339562d4d3fed69a588dbbbf14b74d7f3d1dd890093d5f607",
                tls0: "f68998173a208526b3e5b21ccca3f7d87c6d229af58bc59a04cc29459caa4ae8",
                id1: "NVMe1R01 nqn.2016-06.io.spdk:host1 nqn.2016-06.io.spdk:cnode1 GBiGLYEmOF57BuDdA56rI1SWVHsqvw9t95r9WJ77h+Y=",
                tls1: "bd6d7d295a8cf80313e92d36bb47a80981feb99cbb3adadbd9fdd21f0566c486",
            },
            Case {
                psk: "NVMeTLSkey-1:02:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vcSEgBQ==:",
                retained: "f5ea5a564fe603263adfa29f56413f0ccfef77253f5f9453f3b1cbd713647df6c12a219bf584377651a9281aa441b7b3",
                tls0: "20efe643239f00f8e8bcc2b6899c2799127f10c8c9cb11ecf0996b5a56e5b38786e2899a275ea73968ef20008662bae6",
                id1: "NVMe1R02 nqn.2016-06.io.spdk:host1 nqn.2016-06.io.spdk:cnode1 Kz6xmcqkitv/CCSt6Y2brx5XDylXFAHI8jrXfGnKBiUtNf2rvVpPyti9CRHHJH5H",
                tls1: "565d94312e822b56f813ca60be327459085e7f45a38266fbd580f0b735a8f6f5c7d6a63b754ef23577f44490e34fe48d",
            },
            Case {
                psk: "NVMeTLSkey-1:00:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:",
                retained: "5512dbb6737d0106f65975b773dfb011ffc344bcf442e2dd6d8bc4870b5d5b03",
                tls0: "a2114629fa14f58fb90948fce76766b28ac1f5153787cf25c7bda26ff9d5c7b4",
                id1: "NVMe1R01 nqn.2016-06.io.spdk:host1 nqn.2016-06.io.spdk:cnode1 3dJf3AWINN1W0fxWrxksVLtXgGgdIYHHSxgLhNOYBH8=",
                tls1: "f7e57a3f2a416ed06de724bcbeb148faf2d215b7d5088a36782134bc34bcc63d",
            },
            Case {
                psk: "NVMeTLSkey-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vcSEgBQ==:",
                retained: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f",
                tls0: "7630a7ceb910390d478c0322d31c4ce5cce3da45323a725bd5be0039aede239feadab0a2f86b37f4215d854ef5a5b7f5",
                id1: "NVMe1R02 nqn.2016-06.io.spdk:host1 nqn.2016-06.io.spdk:cnode1 RUqLVI6qU4oPOSgvEpd+MlHAQL22TE/uFtkkbOS4AcQ9jqjXoQKDBmu/eGMp27lS",
                tls1: "038530f4bb3fd3fd162ca1734314edcc1b0c6f2e7c37dac268b9a0ce5e987f2897191b9079aa940f9b3aa8526d086def",
            },
        ];
        for c in cases {
            let psk = ConfiguredPsk::parse(c.psk).expect("parses");
            assert_eq!(hex(&psk.retained(HOST).expect("retained")), c.retained, "{}", c.psk);
            let v0 = psk.tls_psk(HOST, SUB, IdentityVersion::V0).expect("v0");
            let hh = psk.hash().id();
            assert_eq!(v0.identity(), format!("NVMe0R{hh:02} {HOST} {SUB}"));
            assert_eq!(hex(v0.key()), c.tls0, "{}", c.psk);
            assert_eq!(v0.hostnqn(), HOST);
            let v1 = psk.tls_psk(HOST, SUB, IdentityVersion::V1).expect("v1");
            assert_eq!(v1.identity(), c.id1);
            assert_eq!(hex(v1.key()), c.tls1, "{}", c.psk);
            assert_eq!(
                v1.hash().cipher_suite().contains("SHA384"),
                psk.hash() == PskHash::Sha384
            );
        }
        // SPDK's unit test reference identity (test_nvmf_tcp_tls_generate_psk_id).
        let psk = ConfiguredPsk::parse(LIBNVME_PSK).expect("parses");
        assert_eq!(
            psk.tls_psk(HOST, SUB, IdentityVersion::V0).expect("v0").identity(),
            "NVMe0R01 nqn.2016-06.io.spdk:host1 nqn.2016-06.io.spdk:cnode1"
        );
    }

    #[test]
    fn bad_keys_are_refused_with_the_part_that_is_wrong() {
        let body = "VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ";
        for (s, want) in [
            ("", PskError::Prefix),
            ("DHHC-1:01:abcd:", PskError::Prefix),
            ("NVMeTLSkey-1:", PskError::Hash),
            (&format!("NVMeTLSkey-1:03:{body}:"), PskError::Hash),
            (&format!("NVMeTLSkey-1:1:{body}:"), PskError::Hash),
            (&format!("NVMeTLSkey-1:01:{body}"), PskError::Terminator),
            (&format!("NVMeTLSkey-1:01:{body}:extra:"), PskError::Terminator),
            ("NVMeTLSkey-1:01:!!!!:", PskError::Base64),
            ("NVMeTLSkey-1:01::", PskError::Length(0)),
            ("NVMeTLSkey-1:01:AAAA:", PskError::Length(0)),
            // 48 bytes under hash 01 (SHA-256 wants 32).
            (
                "NVMeTLSkey-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vcSEgBQ==:",
                PskError::Length(48),
            ),
            // One bit off in the CRC.
            (
                "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrY:",
                PskError::Crc,
            ),
        ] {
            assert_eq!(ConfiguredPsk::parse(s).map(|_| ()), Err(want), "{s:?}");
        }
        let psk = ConfiguredPsk::parse(LIBNVME_PSK).expect("parses");
        assert!(matches!(
            psk.tls_psk("", SUB, IdentityVersion::V0),
            Err(PskError::Nqn(_))
        ));
        assert!(matches!(
            psk.tls_psk(HOST, "a b", IdentityVersion::V0),
            Err(PskError::Nqn(_))
        ));
        let long = format!("nqn.2014-08.org.example:{}", "x".repeat(200));
        assert!(matches!(
            psk.tls_psk(&long, &long, IdentityVersion::V0),
            Err(PskError::Nqn(_))
        ));
        // The key never shows.
        let shown = format!("{psk:?} {:?}", psk.tls_psk(HOST, SUB, IdentityVersion::V1).expect("v1"));
        assert!(
            !shown.contains("VRLb") && !shown.to_lowercase().contains("5512db"),
            "{shown}"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panic(s in ".{0,120}") {
            let _ = ConfiguredPsk::parse(&s);
            let _ = ConfiguredPsk::parse(&format!("NVMeTLSkey-1:{s}"));
        }

        #[test]
        fn any_key_of_a_valid_length_round_trips(key in proptest::collection::vec(proptest::num::u8::ANY, 32..=32), hh in 0u8..2) {
            let psk = ConfiguredPsk::from_key(PskHash::from_id(hh), &key).expect("32 bytes");
            let back = ConfiguredPsk::parse(&psk.encode()).expect("round trip");
            proptest::prop_assert_eq!(&*back.key, &key);
            proptest::prop_assert_eq!(back.retained_hash(), psk.retained_hash());
        }
    }
}
