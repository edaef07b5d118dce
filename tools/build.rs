//! Puts the git commit lull is built from into `LULL_GIT_COMMIT` for
//! `lull --version`. Outside a git checkout (a source tarball, git not
//! installed) it is `LULL_GIT_COMMIT` from the environment, else "unknown":
//! the build never fails for want of git.

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LULL_GIT_COMMIT");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = Path::new(&dir);
    let from_env = std::env::var("LULL_GIT_COMMIT").ok().filter(|s| !s.trim().is_empty());
    let commit = from_env.or_else(|| git(dir, &["rev-parse", "--short", "HEAD"]));
    // Rebuild when HEAD moves: the HEAD file, the branch it names, packed refs.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(r) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(r);
    }
    for w in watched {
        if let Some(p) = git(dir, &["rev-parse", "--path-format=absolute", "--git-path", &w])
            && Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!(
        "cargo:rustc-env=LULL_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
