//! Names the commit the binary is built from, for `opslab --version`: `git rev-parse --short HEAD`
//! where the source is a git work tree, else the `OPSLAB_COMMIT` environment variable (for builds
//! from an exported tree), else `unknown`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=OPSLAB_COMMIT");
    let commit = git(&["rev-parse", "--short", "HEAD"])
        .or_else(|| {
            std::env::var("OPSLAB_COMMIT")
                .ok()
                .map(|commit| commit.trim().to_string())
                .filter(|commit| !commit.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=OPSLAB_COMMIT={commit}");
    for path in files_that_move_head() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// A git command's trimmed output, if git ran and succeeded.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// The files whose change means HEAD names another commit: HEAD itself (a checkout), the branch's
/// ref (a commit; its folder while the ref is only packed, so that a commit's new loose ref counts)
/// and the packed refs. Asked of git, because in a linked work tree `.git` is a file and HEAD lives
/// elsewhere. Only existing paths: cargo reruns a script whose file is missing at every build.
fn files_that_move_head() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut add = |path: Option<String>| paths.extend(path.map(PathBuf::from));
    add(git(&["rev-parse", "--git-path", "HEAD"]));
    add(git(&["rev-parse", "--git-path", "packed-refs"]));
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(reference) = git(&["rev-parse", "--git-path", &branch]).map(PathBuf::from)
    {
        match (reference.exists(), reference.parent()) {
            (false, Some(folder)) => paths.push(folder.to_path_buf()),
            _ => paths.push(reference),
        }
    }
    paths.into_iter().filter(|path| path.exists()).collect()
}
