//! Git contexts, fetched with the system `git` binary.
//!
//! kiln runs `git` rather than linking a git library: the binary already
//! speaks every transport users rely on (ssh with their agent and
//! `known_hosts`, smart http with credential helpers, `git://`, `file://`),
//! handles submodules, and costs nothing to build. The kiln image that
//! serves git contexts must therefore ship `git`; when it is missing the
//! error says so.
//!
//! Only the requested ref is fetched, shallowly, then checked out; the
//! `.git` directory is removed afterwards unless asked to keep it, as
//! `docker build` does for git contexts.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::source::{redact, GitSource};
use crate::{ContextError, GitOptions};

fn git_error(src: &GitSource, display: &str, reason: impl Into<String>) -> ContextError {
    let mut reason = reason.into();
    // git usually strips credentials from what it prints, but not always.
    if let Ok(u) = url::Url::parse(&src.remote) {
        if let Some(p) = u.password().filter(|p| !p.is_empty()) {
            reason = reason.replace(p, "***");
        }
        if !u.username().is_empty() && matches!(u.scheme(), "http" | "https") {
            reason = reason.replace(u.username(), "***");
        }
    }
    reason = reason.replace(&src.remote, &redact(&src.remote));
    ContextError::Git {
        location: display.to_string(),
        reason,
    }
}

/// Runs `git ARGS` in `dir`; on failure returns git's last stderr line.
fn run<I, S>(dir: &Path, args: I) -> Result<(), String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "advice.detachedHead=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "the git binary is not installed (git contexts need it on PATH)".to_string()
            } else {
                format!("running git: {e}")
            }
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .rfind(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .or_else(|| stderr.lines().rfind(|l| !l.trim().is_empty()))
        .unwrap_or("git failed")
        .trim()
        .to_string();
    Err(line)
}

fn is_commit_id(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Clones `src` into `tree` (which must not exist).
pub(crate) fn fetch(
    src: &GitSource,
    opts: &GitOptions,
    tree: &Path,
    display: &str,
) -> Result<(), ContextError> {
    let err = |reason: String| git_error(src, display, reason);
    std::fs::create_dir_all(tree).map_err(|e| err(format!("creating {}: {e}", tree.display())))?;
    run(tree, ["init", "-q", "."]).map_err(err)?;
    run(tree, ["remote", "add", "--", "origin", src.remote.as_str()]).map_err(err)?;

    let reference = src
        .reference
        .clone()
        .or_else(|| opts.branch.clone())
        .unwrap_or_else(|| "HEAD".to_string());
    let mut fetch_args: Vec<String> = vec!["fetch".into(), "-q".into(), "--no-tags".into()];
    if src.commit.is_none() {
        fetch_args.push("--depth=1".into());
    }
    fetch_args.push("--".into());
    fetch_args.push("origin".into());
    fetch_args.push(reference.clone());
    if opts.keep_git_dir && !opts.single_branch {
        // Other branches matter only to a kept `.git`; fetch them first so
        // FETCH_HEAD ends up naming the requested ref alone.
        run(
            tree,
            [
                "fetch",
                "-q",
                "--depth=1",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
            ],
        )
        .map_err(err)?;
    }
    match run(tree, &fetch_args) {
        Ok(()) => {}
        Err(reason) if is_commit_id(&reference) => {
            // Servers that refuse to send an arbitrary commit by id: fetch
            // every branch and tag, then look the commit up locally.
            run(
                tree,
                [
                    "fetch",
                    "-q",
                    "origin",
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
            )
            .map_err(|e| err(format!("fetching commit {reference}: {reason}; {e}")))?;
            run(tree, ["checkout", "-q", "--detach", reference.as_str()])
                .map_err(|e| err(format!("commit {reference}: {e}")))?;
            return finish(src, opts, tree, display);
        }
        Err(reason) => {
            let reason = if reason.contains("couldn't find remote ref") {
                format!("ref {reference} not found")
            } else {
                reason
            };
            return Err(err(reason));
        }
    }
    let target = src.commit.as_deref().unwrap_or("FETCH_HEAD");
    run(tree, ["checkout", "-q", "--detach", target])
        .map_err(|e| err(format!("checking out {target}: {e}")))?;
    finish(src, opts, tree, display)
}

fn finish(
    src: &GitSource,
    opts: &GitOptions,
    tree: &Path,
    display: &str,
) -> Result<(), ContextError> {
    let err = |reason: String| git_error(src, display, reason);
    if opts.recurse_submodules {
        run(
            tree,
            [
                "submodule",
                "update",
                "-q",
                "--init",
                "--recursive",
                "--depth=1",
            ],
        )
        .map_err(|e| err(format!("submodules: {e}")))?;
    }
    if !opts.keep_git_dir {
        remove_git_dirs(tree).map_err(|e| err(format!("removing .git: {e}")))?;
    }
    Ok(())
}

/// Removes `.git` (a directory at the top, files in submodules) below
/// `dir`.
fn remove_git_dirs(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if entry.file_name() == ".git" {
            if ty.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        } else if ty.is_dir() {
            remove_git_dirs(&entry.path())?;
        }
    }
    Ok(())
}
