//! The keyring as the control plane sees it: named DH-HMAC-CHAP secrets
//! (`keyring_file_*`), who uses each, and the keys a config file names by path.

use lull_engine::nvmf::subsystem::KeyNames;
use lull_proto::auth::DhchapSecret;
use lull_proto::tls_psk::ConfiguredPsk;

use super::{App, AppError, lock};
use crate::keyring::{KeyEntry, KeyringError};

impl App {
    /// The secret of keyring key `name`, given as parameter `field`.
    ///
    /// # Errors
    /// [`AppError::NotFound`] naming the field and the key.
    pub fn key_secret(&self, field: &str, name: &str) -> Result<DhchapSecret, AppError> {
        self.keyring.get(name).map_err(|e| match e {
            KeyringError::WrongKind(..) => AppError::InvalidParams(format!("{field}: {e}")),
            _ => AppError::NotFound(format!(
                "{field}: key {name} is not in the keyring (keyring_file_add_key)"
            )),
        })
    }

    /// The TLS PSK of keyring key `name`, given as parameter `field` (`psk`).
    ///
    /// # Errors
    /// [`AppError::NotFound`] naming the field and the key;
    /// [`AppError::InvalidParams`] when it is a DH-HMAC-CHAP secret.
    pub fn key_psk(&self, field: &str, name: &str) -> Result<ConfiguredPsk, AppError> {
        self.keyring.get_psk(name).map_err(|e| match e {
            KeyringError::WrongKind(..) => AppError::InvalidParams(format!("{field}: {e}")),
            _ => AppError::NotFound(format!(
                "{field}: key {name} is not in the keyring (keyring_file_add_key)"
            )),
        })
    }

    /// The keyring key of the key file `path`, added (named by the path)
    /// when no key holds it yet.
    pub(super) fn file_key(&self, path: &std::path::Path) -> Result<String, AppError> {
        let path = std::path::absolute(path)
            .map_err(|e| AppError::InvalidParams(format!("key file {}: {e}", path.display())))?;
        if let Some(n) = self.keyring.name_of_path(&path) {
            return Ok(n);
        }
        let name = path.display().to_string();
        self.keyring_add(&name, &path)?;
        Ok(name)
    }

    /// Adds the key file `path` as `name` (`keyring_file_add_key`).
    ///
    /// # Errors
    /// [`AppError::Exists`] for a name taken; [`AppError::InvalidParams`]
    /// for a bad name or file (relative, not private to the daemon's user,
    /// not a DH-HMAC-CHAP secret), the message saying how to fix it and
    /// never quoting the key.
    pub fn keyring_add(&self, name: &str, path: &std::path::Path) -> Result<(), AppError> {
        self.keyring.add_file_key(name, path).map_err(keyring_error)?;
        tracing::info!(key = name, path = %path.display(), "keyring: key added");
        Ok(())
    }

    /// Removes key `name` (`keyring_file_remove_key`); hosts and
    /// controllers using it keep their copy.
    ///
    /// # Errors
    /// [`AppError::NotFound`].
    pub fn keyring_remove(&self, name: &str) -> Result<(), AppError> {
        let users = self.key_users(name);
        self.keyring.remove(name, users > 0).map_err(keyring_error)?;
        tracing::info!(key = name, users, "keyring: key removed");
        Ok(())
    }

    /// Every key with its users' count (`keyring_get_keys`); removed keys
    /// no longer used are forgotten first.
    pub fn keyring_keys(&self) -> Vec<(String, KeyEntry, usize)> {
        self.keyring.purge(|n| self.key_users(n) > 0);
        self.keyring
            .list()
            .into_iter()
            .map(|(n, e)| {
                let users = self.key_users(&n);
                (n, e, users)
            })
            .collect()
    }

    /// How many hosts and remote controllers use key `name`.
    pub fn key_users(&self, name: &str) -> usize {
        let uses = |k: &KeyNames| usize::from(k.key == name) + usize::from(k.ctrlr_key.as_deref() == Some(name));
        let hosts: usize = self
            .target
            .subsystems()
            .iter()
            .map(|s| {
                let hosts = s.access().hosts.clone();
                let dhchap = hosts
                    .iter()
                    .filter_map(|h| s.host_key_names(h))
                    .map(|k| uses(&k))
                    .sum::<usize>();
                let psk = hosts
                    .iter()
                    .filter(|h| s.host_psk_name(h).flatten().as_deref() == Some(name))
                    .count();
                dhchap + psk
            })
            .sum();
        let ctrlrs: usize = lock(&self.nvme)
            .values()
            .map(|e| {
                let t = e.ctrlr.trid();
                let dhchap = t.dhchap.as_ref().and_then(|d| d.names.clone()).map_or(0, |k| uses(&k));
                let psk = usize::from(t.tls.as_ref().and_then(|t| t.name.as_deref()) == Some(name));
                dhchap + psk
            })
            .sum();
        hosts + ctrlrs
    }
}

fn keyring_error(e: KeyringError) -> AppError {
    match e {
        KeyringError::Exists(_) => AppError::Exists(e.to_string()),
        KeyringError::NotFound(_) => AppError::NotFound(e.to_string()),
        KeyringError::InvalidName(_) | KeyringError::BadFile(_) | KeyringError::WrongKind(..) => {
            AppError::InvalidParams(e.to_string())
        }
    }
}
