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
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::source::{redact, GitSource};
use crate::{ContextError, GitOptions};

/// One `git` command that failed.
#[derive(Debug, thiserror::Error)]
pub enum GitCommandError {
    #[error("the git binary is not installed (git contexts need it on PATH)")]
    NotInstalled,
    #[error("running git: {error}")]
    Spawn { error: std::io::Error },
    /// git's last `fatal:`/`error:` line (else its last line), with the
    /// remote's credentials redacted.
    #[error("{message}")]
    Failed { message: String },
}

/// Which step of fetching a git context failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("creating {}: {error}", .path.display())]
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Setting up the repository (`git init`, `git remote add`) or fetching.
    #[error(transparent)]
    Command(GitCommandError),
    #[error("ref {reference} not found")]
    RefNotFound { reference: String },
    /// A commit the server would not send by id, and fetching everything
    /// failed too.
    #[error("fetching commit {reference}: {by_id}; {all}")]
    FetchCommit {
        reference: String,
        by_id: GitCommandError,
        all: GitCommandError,
    },
    #[error("commit {reference}: {error}")]
    CheckoutCommit {
        reference: String,
        error: GitCommandError,
    },
    #[error("checking out {target}: {error}")]
    Checkout {
        target: String,
        error: GitCommandError,
    },
    #[error("submodules: {error}")]
    Submodules { error: GitCommandError },
    #[error("removing .git: {error}")]
    RemoveGitDir { error: std::io::Error },
}

fn git_error(display: &str, reason: GitError) -> ContextError {
    ContextError::Git {
        location: display.to_string(),
        reason,
    }
}

/// `text` (from git) with `src`'s credentials and remote redacted: git
/// usually strips credentials from what it prints, but not always.
fn redact_output(src: &GitSource, text: &str) -> String {
    let mut text = text.to_string();
    if let Ok(u) = url::Url::parse(&src.remote) {
        if let Some(p) = u.password().filter(|p| !p.is_empty()) {
            text = text.replace(p, "***");
        }
        if !u.username().is_empty() && matches!(u.scheme(), "http" | "https") {
            text = text.replace(u.username(), "***");
        }
    }
    text.replace(&src.remote, &redact(&src.remote))
}

/// Runs `git ARGS` in `dir`; on failure returns git's last stderr line,
/// redacted.
fn run<I, S>(src: &GitSource, dir: &Path, args: I) -> Result<(), GitCommandError>
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
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                GitCommandError::NotInstalled
            } else {
                GitCommandError::Spawn { error }
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
        .trim();
    Err(GitCommandError::Failed {
        message: redact_output(src, line),
    })
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
    let err = |reason: GitError| git_error(display, reason);
    let command = |e: GitCommandError| err(GitError::Command(e));
    std::fs::create_dir_all(tree).map_err(|error| {
        err(GitError::CreateDir {
            path: tree.to_path_buf(),
            error,
        })
    })?;
    run(src, tree, ["init", "-q", "."]).map_err(command)?;
    run(
        src,
        tree,
        ["remote", "add", "--", "origin", src.remote.as_str()],
    )
    .map_err(command)?;

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
            src,
            tree,
            [
                "fetch",
                "-q",
                "--depth=1",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
            ],
        )
        .map_err(command)?;
    }
    match run(src, tree, &fetch_args) {
        Ok(()) => {}
        Err(by_id) if is_commit_id(&reference) => {
            // Servers that refuse to send an arbitrary commit by id: fetch
            // every branch and tag, then look the commit up locally.
            run(
                src,
                tree,
                [
                    "fetch",
                    "-q",
                    "origin",
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
            )
            .map_err(|all| {
                err(GitError::FetchCommit {
                    reference: reference.clone(),
                    by_id,
                    all,
                })
            })?;
            run(
                src,
                tree,
                ["checkout", "-q", "--detach", reference.as_str()],
            )
            .map_err(|error| {
                err(GitError::CheckoutCommit {
                    reference: reference.clone(),
                    error,
                })
            })?;
            return finish(src, opts, tree, display);
        }
        Err(error) => {
            let missing_ref = matches!(
                &error,
                GitCommandError::Failed { message } if message.contains("couldn't find remote ref")
            );
            return Err(if missing_ref {
                err(GitError::RefNotFound { reference })
            } else {
                command(error)
            });
        }
    }
    let target = src.commit.as_deref().unwrap_or("FETCH_HEAD");
    run(src, tree, ["checkout", "-q", "--detach", target]).map_err(|error| {
        err(GitError::Checkout {
            target: target.to_string(),
            error,
        })
    })?;
    finish(src, opts, tree, display)
}

fn finish(
    src: &GitSource,
    opts: &GitOptions,
    tree: &Path,
    display: &str,
) -> Result<(), ContextError> {
    let err = |reason: GitError| git_error(display, reason);
    if opts.recurse_submodules {
        run(
            src,
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
        .map_err(|error| err(GitError::Submodules { error }))?;
    }
    if !opts.keep_git_dir {
        remove_git_dirs(tree).map_err(|error| err(GitError::RemoveGitDir { error }))?;
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
