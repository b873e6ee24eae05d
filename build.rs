//! Build script of the `kite` binary: names the git revision it was built from, for
//! `kite --version`, as the compile-time variable `KITE_GIT_REV`.
//!
//! The revision is `KITE_GIT_REV` from the build's environment when set (a Docker build has
//! no `.git`: `docker build --build-arg KITE_GIT_REV=$(git rev-parse --short HEAD)`), else
//! `git rev-parse --short HEAD`, else `unknown` (a source tarball, or no git installed).

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// Asks cargo to run this script again when the checked-out commit changes: HEAD, the branch
/// it points to, and packed refs. Only files that exist are named (a missing one would make
/// cargo rerun the script on every build).
fn watch_git() {
    let Some(dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) else {
        return;
    };
    let mut files = vec![dir.join("HEAD"), dir.join("packed-refs")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        files.push(dir.join(branch));
    }
    // A worktree's branch refs live in the common directory.
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]).map(PathBuf::from) {
        files.push(common.join("packed-refs"));
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            files.push(common.join(branch));
        }
    }
    for f in files.iter().filter(|f| Path::new(f).exists()) {
        println!("cargo:rerun-if-changed={}", f.display());
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KITE_GIT_REV");
    let rev = match std::env::var("KITE_GIT_REV") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_owned(),
        _ => {
            watch_git();
            git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=KITE_GIT_REV={rev}");
}
