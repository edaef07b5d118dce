//! Key files: a DH-HMAC-CHAP secret (`DHHC-1:NN:...:`, as `nvme
//! gen-dhchap-key` writes it) or an NVMe/TCP TLS PSK (`NVMeTLSkey-1:HH:...:`,
//! as `nvme gen-tls-key` writes it) read from a file that only the daemon's
//! user may read, as SPDK's file keyring insists. No error quotes the key.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use lull_proto::auth::DhchapSecret;
use lull_proto::tls_psk::ConfiguredPsk;
use zeroize::Zeroizing;

/// What a key file holds.
#[derive(Clone, Debug)]
pub enum KeyMaterial {
    /// A DH-HMAC-CHAP secret (`DHHC-1`).
    Dhchap(DhchapSecret),
    /// An NVMe/TCP TLS pre-shared key (`NVMeTLSkey-1`).
    TlsPsk(ConfiguredPsk),
}

/// Reads and parses the key in `path`: a DH-HMAC-CHAP secret or a TLS PSK,
/// told apart by the prefix.
///
/// # Errors
/// As [`read_dhchap_key`]; for an `NVMeTLSkey-1` file, the PSK's parse error.
pub fn read_key(path: &Path) -> Result<KeyMaterial, String> {
    let shown = path.display();
    let text = read_private(path)?;
    if text.trim_start().starts_with("NVMeTLSkey-") {
        return ConfiguredPsk::parse(&text)
            .map(KeyMaterial::TlsPsk)
            .map_err(|e| format!("key file {shown}: {e}"));
    }
    DhchapSecret::parse(&text)
        .map(KeyMaterial::Dhchap)
        .map_err(|e| format!("key file {shown}: {e}"))
}

/// Reads and parses the DH-HMAC-CHAP secret in `path`.
///
/// # Errors
/// A message naming the file and how to fix it: missing or unreadable,
/// readable or writable by group or others, owned by another user, or not
/// holding a valid `DHHC-1` secret.
pub fn read_dhchap_key(path: &Path) -> Result<DhchapSecret, String> {
    let text = read_private(path)?;
    DhchapSecret::parse(&text).map_err(|e| format!("key file {}: {e}", path.display()))
}

/// The text of the key file `path`, after checking it is a regular file of
/// the daemon's user that nobody else may read or write.
///
/// The file is opened once and the checks look at the open file, so the
/// file read is the file checked: a check by name and a later open could
/// be raced by swapping the name (for a FIFO, which would then block the
/// open, or another user's file). `O_NONBLOCK` keeps a FIFO or device from
/// blocking the open itself, `O_NOCTTY` a terminal from becoming ours.
fn read_private(path: &Path) -> Result<Zeroizing<String>, String> {
    let shown = path.display();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("key file {shown}: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("key file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("key file {shown} is not a regular file"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "key file {shown} has mode {:04o}: it must be readable by its owner only (chmod 0600 {shown})",
            meta.mode() & 0o7777
        ));
    }
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!(
            "key file {shown} is owned by uid {}, not by the daemon's user (uid {me}): chown it",
            meta.uid()
        ));
    }
    read_secret(f).map_err(|e| format!("key file {shown}: {e}"))
}

/// The file's text, in memory zeroed on drop. Key files are short: more
/// than 4 KiB is refused before it is read whole.
fn read_secret(f: std::fs::File) -> Result<Zeroizing<String>, String> {
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    f.take(4097).read_to_end(&mut buf).map_err(|e| e.to_string())?;
    if buf.len() > 4096 {
        return Err("longer than any DH-HMAC-CHAP secret or TLS PSK".into());
    }
    let text = std::str::from_utf8(&buf).map_err(|_| "not text".to_string())?;
    Ok(Zeroizing::new(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SECRET: &str = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:\n";

    fn file(name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lull-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn reads_a_private_key_file() {
        let p = file("good", SECRET, 0o600);
        assert_eq!(read_dhchap_key(&p).unwrap().key_len(), 32);
    }

    #[test]
    fn refuses_open_files_and_bad_secrets_without_quoting_them() {
        let p = file("open", SECRET, 0o644);
        let e = read_dhchap_key(&p).unwrap_err();
        assert!(e.contains("mode 0644") && e.contains("chmod 0600"), "{e}");
        let p = file(
            "bad",
            "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaS:",
            0o600,
        );
        let e = read_dhchap_key(&p).unwrap_err();
        assert!(e.contains("CRC-32") && !e.contains("AAEC"), "{e}");
        let e = read_dhchap_key(Path::new("/nonexistent/lull.key")).unwrap_err();
        assert!(e.contains("/nonexistent/lull.key"), "{e}");
        let p = file("long", &"x".repeat(5000), 0o600);
        assert!(read_dhchap_key(&p).unwrap_err().contains("longer"));
    }

    #[test]
    fn reads_tls_psks_with_the_same_checks() {
        // libnvme's test/psk.c key.
        let psk = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:\n";
        let p = file("psk", psk, 0o600);
        assert!(matches!(read_key(&p).unwrap(), KeyMaterial::TlsPsk(k) if k.hash().id() == 1));
        assert!(matches!(
            read_key(&file("dh", SECRET, 0o600)).unwrap(),
            KeyMaterial::Dhchap(_)
        ));
        let e = read_key(&file("psk-open", psk, 0o640)).unwrap_err();
        assert!(e.contains("mode 0640") && e.contains("chmod 0600"), "{e}");
        let bad = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrY:";
        let e = read_key(&file("psk-bad", bad, 0o600)).unwrap_err();
        assert!(e.contains("CRC-32") && !e.contains("VRLb"), "{e}");
        // Cut short in the middle of its base64, and with no terminator.
        for (name, text) in [
            ("psk-cut", &psk[..40]),
            ("psk-unterminated", psk.trim_end().trim_end_matches(':')),
        ] {
            let e = read_key(&file(name, text, 0o600)).unwrap_err();
            assert!(e.contains(name) && !e.contains("VRLb"), "{e}");
        }
        // A hash field no version defines (03h).
        let e = read_key(&file("psk-hash", &psk.replace(":01:", ":03:"), 0o600)).unwrap_err();
        assert!(e.contains("psk-hash") && !e.contains("VRLb"), "{e}");
    }

    #[test]
    fn a_fifo_or_a_directory_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("lull-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer ever opens it: a blocking open would never return.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_key(&fifo).map(|_| ()));
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("read_key blocked on a FIFO");
        assert!(r.unwrap_err().contains("not a regular file"));
        assert!(read_key(&dir).unwrap_err().contains("not a regular file"));
    }
}
