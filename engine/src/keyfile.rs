//! Key files: a DH-HMAC-CHAP secret (`DHHC-1:NN:...:`, as `nvme
//! gen-dhchap-key` writes it) read from a file that only the daemon's user
//! may read, as SPDK's file keyring insists. No error quotes the key.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use lull_proto::auth::DhchapSecret;
use zeroize::Zeroizing;

/// Reads and parses the DH-HMAC-CHAP secret in `path`.
///
/// # Errors
/// A message naming the file and how to fix it: missing or unreadable,
/// readable or writable by group or others, owned by another user, or not
/// holding a valid `DHHC-1` secret.
pub fn read_dhchap_key(path: &Path) -> Result<DhchapSecret, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("key file {shown}: {e}"))?;
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
    let text = read_secret(path).map_err(|e| format!("key file {shown}: {e}"))?;
    DhchapSecret::parse(&text).map_err(|e| format!("key file {shown}: {e}"))
}

/// The file's text, in memory zeroed on drop. Key files are short: more
/// than 4 KiB is refused before it is read whole.
fn read_secret(path: &Path) -> Result<Zeroizing<String>, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    f.take(4097).read_to_end(&mut buf).map_err(|e| e.to_string())?;
    if buf.len() > 4096 {
        return Err("longer than any DH-HMAC-CHAP secret".into());
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
}
