//! DH-HMAC-CHAP settings shared by the target and the initiator: which
//! hashes and groups are allowed, by SPDK's names.

use std::sync::Arc;

use lull_proto::auth::{AuthConfig, DhGroup, HashId};

/// Hashes and DH groups allowed in DH-HMAC-CHAP: what the initiator offers
/// in AUTH_Negotiate (`bdev_nvme_set_options dhchap_digests /
/// dhchap_dhgroups`), or what the target accepts (`nvmf_set_config`); every
/// one by default, as SPDK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhchapOffer {
    /// Hashes, strongest first.
    pub hashes: Vec<HashId>,
    /// DH groups, strongest first, the null group last.
    pub dhgroups: Vec<DhGroup>,
}

impl Default for DhchapOffer {
    fn default() -> Self {
        DhchapOffer {
            hashes: HashId::ALL.to_vec(),
            dhgroups: DhGroup::ALL.to_vec(),
        }
    }
}

impl DhchapOffer {
    /// The lists with the hashes `digests` and the groups `dhgroups` named
    /// as SPDK names them (`sha256`, `ffdhe2048`, `null`...); a list left
    /// out keeps this one's. The order given does not matter: the
    /// controller chooses among what both sides allow, strongest first.
    ///
    /// # Errors
    /// A message naming the parameter and what is allowed: an unknown name
    /// or an empty list.
    pub fn with_names(&self, digests: Option<&[String]>, dhgroups: Option<&[String]>) -> Result<Self, String> {
        let mut out = self.clone();
        if let Some(d) = digests {
            if let Some(bad) = d.iter().find(|n| HashId::from_name(n).is_none()) {
                return Err(format!(
                    "dhchap_digests: unknown digest {bad}; allowed sha256, sha384, sha512"
                ));
            }
            out.hashes = HashId::ALL
                .into_iter()
                .filter(|h| d.iter().any(|n| HashId::from_name(n) == Some(*h)))
                .collect();
            if out.hashes.is_empty() {
                return Err("dhchap_digests: at least one digest is needed (sha256, sha384, sha512)".into());
            }
        }
        if let Some(g) = dhgroups {
            if let Some(bad) = g.iter().find(|n| DhGroup::from_name(n).is_none()) {
                return Err(format!(
                    "dhchap_dhgroups: unknown DH group {bad}; allowed null, ffdhe2048, ffdhe3072, ffdhe4096, ffdhe6144, ffdhe8192"
                ));
            }
            out.dhgroups = DhGroup::ALL
                .into_iter()
                .filter(|x| g.iter().any(|n| DhGroup::from_name(n) == Some(*x)))
                .collect();
            if out.dhgroups.is_empty() {
                return Err("dhchap_dhgroups: at least one DH group is needed (null, ffdhe2048..ffdhe8192)".into());
            }
        }
        Ok(out)
    }

    /// The hash names, SPDK's spelling.
    pub fn digest_names(&self) -> Vec<&'static str> {
        self.hashes.iter().map(|h| h.name()).collect()
    }

    /// The group names, SPDK's spelling.
    pub fn dhgroup_names(&self) -> Vec<&'static str> {
        self.dhgroups.iter().map(|g| g.name()).collect()
    }
}

impl DhchapOffer {
    /// Whether every hash and group is allowed.
    pub fn is_all(&self) -> bool {
        *self == DhchapOffer::default()
    }

    /// `cfg` allowing only what this allows too (in `cfg`'s order of
    /// preference); `cfg` itself when this allows everything.
    pub fn restrict(&self, cfg: Arc<AuthConfig>) -> Arc<AuthConfig> {
        if self.is_all() {
            return cfg;
        }
        let mut c = (*cfg).clone();
        c.hashes.retain(|h| self.hashes.contains(h));
        c.dhgroups.retain(|g| self.dhgroups.contains(g));
        Arc::new(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lull_proto::auth::DhchapSecret;

    fn names(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_in_any_order_strongest_first_and_errors_name_the_parameter() {
        let o = DhchapOffer::default()
            .with_names(
                Some(&names(&["sha256", "hmac(sha512)"])),
                Some(&names(&["null", "ffdhe4096"])),
            )
            .unwrap();
        assert_eq!(o.hashes, vec![HashId::Sha512, HashId::Sha256]);
        assert_eq!(o.dhgroups, vec![DhGroup::Ffdhe4096, DhGroup::Null]);
        assert_eq!(o.digest_names(), vec!["sha512", "sha256"]);
        assert!(!o.is_all());
        let e = o.with_names(Some(&names(&["md5"])), None).unwrap_err();
        assert!(e.starts_with("dhchap_digests: unknown digest md5"), "{e}");
        let e = o.with_names(None, Some(&[])).unwrap_err();
        assert!(e.starts_with("dhchap_dhgroups:"), "{e}");
        let kept = o.with_names(None, None).unwrap();
        assert_eq!(kept, o);
    }

    #[test]
    fn restrict_keeps_the_configs_order() {
        let k = DhchapSecret::from_key(None, &[1; 32]).unwrap();
        let cfg = Arc::new(AuthConfig::new(k, None, "h", "s"));
        assert!(Arc::ptr_eq(&DhchapOffer::default().restrict(cfg.clone()), &cfg));
        let o = DhchapOffer::default()
            .with_names(Some(&names(&["sha384"])), Some(&names(&["null", "ffdhe2048"])))
            .unwrap();
        let r = o.restrict(cfg);
        assert_eq!(r.hashes, vec![HashId::Sha384]);
        assert_eq!(r.dhgroups, vec![DhGroup::Ffdhe2048, DhGroup::Null]);
    }
}
