//! The file keyring, in SPDK's terms (`keyring_file_add_key`,
//! `keyring_file_remove_key`, `keyring_get_keys`): named DH-HMAC-CHAP
//! secrets and NVMe/TCP TLS PSKs, each read once from a key file that only the daemon's user may
//! read ([`crate::keyfile`]). Hosts and controllers name keys; nothing that
//! lists keys shows a secret, only its name and file.
//!
//! A key removed while a host or a remote controller still uses it stays
//! listed with `removed: true` until the last user lets it go, as SPDK
//! lists it; the users keep the secret they were given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lull_proto::auth::DhchapSecret;
use lull_proto::tls_psk::ConfiguredPsk;

pub use crate::keyfile::KeyMaterial;

/// One named key.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    /// The key file it was read from.
    pub path: PathBuf,
    /// The key (its `Debug` shows no key bytes).
    pub secret: KeyMaterial,
    /// Removed by `keyring_file_remove_key` while still in use.
    pub removed: bool,
}

/// Why a keyring call failed; no message quotes a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// The name is empty, too long, or holds characters other than
    /// printable ASCII.
    #[error("{0}")]
    InvalidName(String),
    /// The key file is refused (relative path, mode, owner, contents).
    #[error("{0}")]
    BadFile(String),
    /// A key with this name exists.
    #[error("key {0} already exists")]
    Exists(String),
    /// No key with this name.
    #[error("key {0} does not exist")]
    NotFound(String),
    /// The key is of the other kind (a TLS PSK where a DH-HMAC-CHAP secret
    /// is wanted, or the reverse).
    #[error("key {0} is {1}")]
    WrongKind(String, &'static str),
}

/// Longest key name, bytes (SPDK's names are free-form; this bounds them).
pub const MAX_NAME: usize = 255;

/// The daemon's keyring.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: Mutex<BTreeMap<String, KeyEntry>>,
}

fn check_name(name: &str) -> Result<(), KeyringError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(KeyringError::InvalidName(format!(
            "key name: {} bytes; allowed 1..={MAX_NAME}",
            name.len()
        )));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyringError::InvalidName(
            "key name: only printable ASCII without spaces is allowed".into(),
        ));
    }
    Ok(())
}

impl Keyring {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, KeyEntry>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the DH-HMAC-CHAP secret in `path` (absolute; mode 0600 or
    /// stricter; owned by the daemon's user) and keeps it as `name`. A name
    /// held by a removed key that is still in use is taken over.
    ///
    /// # Errors
    /// [`KeyringError::InvalidName`], [`KeyringError::Exists`], or
    /// [`KeyringError::BadFile`] naming the file and how to fix it.
    pub fn add_file_key(&self, name: &str, path: &Path) -> Result<(), KeyringError> {
        check_name(name)?;
        if !path.is_absolute() {
            return Err(KeyringError::BadFile(format!(
                "key file {}: the path must be absolute",
                path.display()
            )));
        }
        if self.lock().get(name).is_some_and(|e| !e.removed) {
            return Err(KeyringError::Exists(name.to_string()));
        }
        // Read outside the lock: a slow file system stalls no other caller.
        let secret = crate::keyfile::read_key(path).map_err(KeyringError::BadFile)?;
        let mut keys = self.lock();
        if keys.get(name).is_some_and(|e| !e.removed) {
            return Err(KeyringError::Exists(name.to_string()));
        }
        keys.insert(
            name.to_string(),
            KeyEntry {
                path: path.to_path_buf(),
                secret,
                removed: false,
            },
        );
        Ok(())
    }

    /// Removes `name`. `in_use` says whether a host or controller still
    /// uses it: such a key stays listed as removed until [`Keyring::purge`]
    /// finds it unused.
    ///
    /// # Errors
    /// [`KeyringError::NotFound`] for a name not in the keyring (or removed already).
    pub fn remove(&self, name: &str, in_use: bool) -> Result<(), KeyringError> {
        let mut keys = self.lock();
        match keys.get_mut(name) {
            Some(e) if !e.removed => {
                if in_use {
                    e.removed = true;
                } else {
                    keys.remove(name);
                }
                Ok(())
            }
            _ => Err(KeyringError::NotFound(name.to_string())),
        }
    }

    /// Forgets removed keys that `in_use` says nobody uses any more.
    /// `in_use` runs without the keyring's lock held, so it may take other
    /// locks (hosts, controllers) freely.
    pub fn purge(&self, in_use: impl Fn(&str) -> bool) {
        let removed: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.removed)
            .map(|(n, _)| n.clone())
            .collect();
        let unused: Vec<String> = removed.into_iter().filter(|n| !in_use(n)).collect();
        let mut keys = self.lock();
        for n in unused {
            // Only if still removed: a key added again under the name stays.
            if keys.get(&n).is_some_and(|e| e.removed) {
                keys.remove(&n);
            }
        }
    }

    /// The secret of the key `name` (not removed).
    ///
    /// # Errors
    /// [`KeyringError::NotFound`].
    pub fn get(&self, name: &str) -> Result<DhchapSecret, KeyringError> {
        match self.lock().get(name) {
            Some(KeyEntry {
                secret: KeyMaterial::Dhchap(s),
                removed: false,
                ..
            }) => Ok(s.clone()),
            Some(e) if !e.removed => Err(KeyringError::WrongKind(
                name.to_string(),
                "a TLS PSK (NVMeTLSkey-1), not a DH-HMAC-CHAP secret",
            )),
            _ => Err(KeyringError::NotFound(name.to_string())),
        }
    }

    /// The TLS PSK of the key `name` (not removed).
    ///
    /// # Errors
    /// [`KeyringError::NotFound`]; [`KeyringError::WrongKind`] for a
    /// DH-HMAC-CHAP secret.
    pub fn get_psk(&self, name: &str) -> Result<ConfiguredPsk, KeyringError> {
        match self.lock().get(name) {
            Some(KeyEntry {
                secret: KeyMaterial::TlsPsk(p),
                removed: false,
                ..
            }) => Ok(p.clone()),
            Some(e) if !e.removed => Err(KeyringError::WrongKind(
                name.to_string(),
                "a DH-HMAC-CHAP secret (DHHC-1), not a TLS PSK",
            )),
            _ => Err(KeyringError::NotFound(name.to_string())),
        }
    }

    /// The key named by its file: the name of a key (not removed) read from
    /// `path`, if any.
    pub fn name_of_path(&self, path: &Path) -> Option<String> {
        self.lock()
            .iter()
            .find(|(_, e)| !e.removed && e.path == path)
            .map(|(n, _)| n.clone())
    }

    /// Every key, by name.
    pub fn list(&self) -> Vec<(String, KeyEntry)> {
        self.lock().iter().map(|(n, e)| (n.clone(), e.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SECRET: &str = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:\n";

    fn file(name: &str, mode: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lull-keyring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, SECRET).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn add_get_remove_and_removed_in_use() {
        let k = Keyring::default();
        let p = file("k0", 0o600);
        k.add_file_key("key0", &p).unwrap();
        assert_eq!(k.get("key0").unwrap().key_len(), 32);
        assert_eq!(k.add_file_key("key0", &p), Err(KeyringError::Exists("key0".into())));
        assert_eq!(k.name_of_path(&p).as_deref(), Some("key0"));
        k.remove("key0", true).unwrap();
        assert!(k.list()[0].1.removed, "still listed while in use");
        assert!(k.get("key0").is_err(), "a removed key is not handed out");
        assert!(k.remove("key0", false).is_err(), "removed already");
        k.purge(|_| true);
        assert_eq!(k.list().len(), 1);
        k.purge(|_| false);
        assert!(k.list().is_empty());
        k.add_file_key("key1", &p).unwrap();
        k.remove("key1", false).unwrap();
        assert!(k.list().is_empty());
    }

    #[test]
    fn bad_names_and_files() {
        let k = Keyring::default();
        let p = file("k1", 0o644);
        let e = k.add_file_key("key0", &p).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 0600"), "{e}");
        assert!(matches!(k.add_file_key("", &p), Err(KeyringError::InvalidName(_))));
        assert!(matches!(k.add_file_key("a b", &p), Err(KeyringError::InvalidName(_))));
        let e = k.add_file_key("key0", Path::new("rel.key")).unwrap_err().to_string();
        assert!(e.contains("absolute"), "{e}");
        assert!(k.list().is_empty());
    }
}
