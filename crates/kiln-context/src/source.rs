//! Parsing a context argument (as users write it) into a [`Source`].
//!
//! The forms are the ones `docker build`/buildx and Kaniko's `--context`
//! accept: local paths and `dir://`, tar files, `tar://stdin` and `-`,
//! `s3://`, `gs://`, Azure Blob URLs, git URLs with `#ref[:subdir]`, and
//! plain http(s) URLs of tarballs. Parsing does no I/O except telling a
//! local file from a local directory.

use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;

use crate::ContextError;

/// Where a build context comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local directory (a path, or `dir://path`).
    Dir(PathBuf),
    /// A local tar file (plain, gzip or zstd), as a path or `tar://path`.
    TarFile(PathBuf),
    /// A tar stream on standard input (`tar://stdin` or `-`).
    Stdin,
    /// A tarball served over http(s).
    Http(Url),
    /// An object in S3 or an S3-compatible store: `s3://bucket/key`.
    S3 { bucket: String, key: String },
    /// An object in Google Cloud Storage: `gs://bucket/key`.
    Gcs { bucket: String, key: String },
    /// A blob in Azure Blob Storage:
    /// `https://<account>.blob.core.windows.net/<container>/<blob>`, or
    /// `azblob://<container>/<blob>` with the account from the environment.
    Azure {
        account: Option<String>,
        container: String,
        blob: String,
    },
    /// A git repository.
    Git(GitSource),
}

/// A git repository reference: remote URL, optional ref and subdirectory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The remote as git understands it (credentials included, if the user
    /// wrote any: never print this, print [`GitSource::display_remote`]).
    pub remote: String,
    /// Branch, tag, full ref (`refs/heads/x`, `refs/pull/1/head`) or commit.
    pub reference: Option<String>,
    /// A commit to check out after fetching `reference` (the
    /// `#refs/heads/branch#<commit>` form).
    pub commit: Option<String>,
    /// The subdirectory of the repository that is the context.
    pub subdir: Option<String>,
}

impl GitSource {
    /// The remote with any password or token replaced by `***`.
    pub fn display_remote(&self) -> String {
        redact(&self.remote)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Dir(p) | Source::TarFile(p) => write!(f, "{}", p.display()),
            Source::Stdin => f.write_str("tar://stdin"),
            Source::Http(u) => f.write_str(&redact(u.as_str())),
            Source::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Source::Gcs { bucket, key } => write!(f, "gs://{bucket}/{key}"),
            Source::Azure {
                account: Some(a),
                container,
                blob,
            } => write!(f, "https://{a}.blob.core.windows.net/{container}/{blob}"),
            Source::Azure {
                account: None,
                container,
                blob,
            } => write!(f, "azblob://{container}/{blob}"),
            Source::Git(g) => {
                write!(f, "{}", g.display_remote())?;
                if let Some(r) = &g.reference {
                    write!(f, "#{r}")?;
                }
                if let Some(c) = &g.commit {
                    write!(f, "#{c}")?;
                }
                if let Some(s) = &g.subdir {
                    write!(f, ":{s}")?;
                }
                Ok(())
            }
        }
    }
}

/// Replaces the password (or a lone token) of a URL's user info by `***`.
pub(crate) fn redact(s: &str) -> String {
    if let Ok(mut u) = Url::parse(s) {
        if u.password().is_some() {
            let _ = u.set_password(Some("***"));
            return u.to_string();
        }
        // `https://TOKEN@host/…`: a bare user name over http(s) is how
        // tokens are usually passed; hide it too.
        if !u.username().is_empty() && matches!(u.scheme(), "http" | "https") {
            let _ = u.set_username("***");
            return u.to_string();
        }
    }
    s.to_string()
}

/// Why a context argument is not one kiln understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("empty context")]
    Empty,
    #[error("expected tar://stdin or tar://<path>")]
    EmptyTarPath,
    #[error("expected dir://<path>")]
    EmptyDirPath,
    /// `s3://`, `gs://`, `azblob://` (or an Azure Blob URL) without both parts.
    #[error("expected <bucket>/<object key>")]
    BucketKey,
    #[error("empty git remote")]
    EmptyGitRemote,
    /// Would reach git as an option.
    #[error("a git remote cannot start with \"-\"")]
    GitRemoteOption,
    /// Would reach git as an option.
    #[error("a git ref cannot start with \"-\"")]
    GitRefOption,
    #[error("{commit:?} is not a commit id")]
    NotACommit { commit: String },
    /// An http(s) URL that does not parse (the parser's reason names no part of it).
    #[error("{error}")]
    Url { error: url::ParseError },
    #[error("unsupported context scheme {scheme}://")]
    UnsupportedScheme { scheme: String },
}

fn invalid(spec: &str, reason: SpecError) -> ContextError {
    ContextError::InvalidSpec {
        spec: redact(spec),
        reason,
    }
}

/// Splits `bucket/key` (after the scheme) into its two parts.
fn bucket_key(spec: &str, rest: &str) -> Result<(String, String), ContextError> {
    match rest.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b.to_string(), k.to_string())),
        _ => Err(invalid(spec, SpecError::BucketKey)),
    }
}

/// Whether `spec` names a git repository, following the rules `docker
/// build` uses: git transports, scp-like `user@host:path`, `github.com/`,
/// and http(s) URLs whose path ends in `.git`.
fn is_git(spec: &str) -> bool {
    let lower = spec.to_ascii_lowercase();
    if lower.starts_with("git://")
        || lower.starts_with("ssh://")
        || lower.starts_with("git+ssh://")
        || lower.starts_with("file://")
        || lower.starts_with("github.com/")
    {
        return true;
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let before_fragment = spec.split('#').next().unwrap_or(spec);
        return before_fragment.trim_end_matches('/').ends_with(".git");
    }
    is_scp_like(spec)
}

/// `user@host:path` (git's scp-like syntax): an `@` before a `:`, and no
/// `/` before that `:`.
fn is_scp_like(spec: &str) -> bool {
    let Some(colon) = spec.find(':') else {
        return false;
    };
    let head = &spec[..colon];
    !spec.contains("://") && head.contains('@') && !head.contains('/')
}

fn parse_git(spec: &str) -> Result<GitSource, ContextError> {
    let (remote, fragment) = match spec.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (spec, None),
    };
    if remote.is_empty() {
        return Err(invalid(spec, SpecError::EmptyGitRemote));
    }
    // Nothing the user wrote may reach git as an option.
    if remote.starts_with('-') {
        return Err(invalid(spec, SpecError::GitRemoteOption));
    }
    if fragment.is_some_and(|f| f.starts_with('-')) {
        return Err(invalid(spec, SpecError::GitRefOption));
    }
    let remote = if remote.to_ascii_lowercase().starts_with("github.com/") {
        format!("https://{remote}")
    } else if let Some(rest) = remote.strip_prefix("git+ssh://") {
        format!("ssh://{rest}")
    } else {
        remote.to_string()
    };
    let mut reference = None;
    let mut commit = None;
    let mut subdir = None;
    if let Some(fragment) = fragment {
        // `#ref[:subdir]`, or `#ref#commit[:subdir]`.
        let (refs, sub) = match fragment.split_once(':') {
            Some((r, s)) => (r, Some(s)),
            None => (fragment, None),
        };
        let (r, c) = match refs.split_once('#') {
            Some((r, c)) => (r, Some(c)),
            None => (refs, None),
        };
        if !r.is_empty() {
            reference = Some(r.to_string());
        }
        if let Some(c) = c.filter(|c| !c.is_empty()) {
            if !c.chars().all(|ch| ch.is_ascii_hexdigit()) {
                return Err(invalid(
                    spec,
                    SpecError::NotACommit {
                        commit: c.to_string(),
                    },
                ));
            }
            commit = Some(c.to_string());
        }
        if let Some(s) = sub.map(|s| s.trim_matches('/')).filter(|s| !s.is_empty()) {
            subdir = Some(s.to_string());
        }
    }
    Ok(GitSource {
        remote,
        reference,
        commit,
        subdir,
    })
}

/// Parses a context argument as users write it.
pub fn parse(spec: &str) -> Result<Source, ContextError> {
    if spec.is_empty() {
        return Err(invalid(spec, SpecError::Empty));
    }
    if spec == "-" || spec == "tar://stdin" {
        return Ok(Source::Stdin);
    }
    if let Some(path) = spec.strip_prefix("tar://") {
        if path.is_empty() {
            return Err(invalid(spec, SpecError::EmptyTarPath));
        }
        return Ok(Source::TarFile(PathBuf::from(path)));
    }
    if let Some(path) = spec.strip_prefix("dir://") {
        if path.is_empty() {
            return Err(invalid(spec, SpecError::EmptyDirPath));
        }
        return Ok(Source::Dir(PathBuf::from(path)));
    }
    if let Some(rest) = spec.strip_prefix("s3://") {
        let (bucket, key) = bucket_key(spec, rest)?;
        return Ok(Source::S3 { bucket, key });
    }
    if let Some(rest) = spec.strip_prefix("gs://") {
        let (bucket, key) = bucket_key(spec, rest)?;
        return Ok(Source::Gcs { bucket, key });
    }
    if let Some(rest) = spec.strip_prefix("azblob://") {
        let (container, blob) = bucket_key(spec, rest)?;
        return Ok(Source::Azure {
            account: None,
            container,
            blob,
        });
    }
    if is_git(spec) {
        return Ok(Source::Git(parse_git(spec)?));
    }
    let lower = spec.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let url = Url::parse(spec).map_err(|error| invalid(spec, SpecError::Url { error }))?;
        if let Some(account) = url
            .host_str()
            .and_then(|h| h.strip_suffix(".blob.core.windows.net"))
            .filter(|a| !a.is_empty() && !a.contains('.'))
        {
            let path = url.path().trim_start_matches('/');
            let (container, blob) = bucket_key(spec, path)?;
            return Ok(Source::Azure {
                account: Some(account.to_string()),
                container,
                blob,
            });
        }
        return Ok(Source::Http(url));
    }
    if let Some((scheme, _)) = spec.split_once("://") {
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            return Err(invalid(
                spec,
                SpecError::UnsupportedScheme {
                    scheme: scheme.to_string(),
                },
            ));
        }
    }
    let path = Path::new(spec);
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(Source::TarFile(path.to_path_buf())),
        _ => Ok(Source::Dir(path.to_path_buf())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(remote: &str, r: Option<&str>, c: Option<&str>, s: Option<&str>) -> Source {
        Source::Git(GitSource {
            remote: remote.to_string(),
            reference: r.map(str::to_string),
            commit: c.map(str::to_string),
            subdir: s.map(str::to_string),
        })
    }

    #[test]
    fn parses_every_form() {
        let cases: Vec<(&str, Source)> = vec![
            ("-", Source::Stdin),
            ("tar://stdin", Source::Stdin),
            (
                "tar:///tmp/c.tar.gz",
                Source::TarFile("/tmp/c.tar.gz".into()),
            ),
            ("dir:///src/app", Source::Dir("/src/app".into())),
            (
                "s3://my-bucket/path/ctx.tar.gz",
                Source::S3 {
                    bucket: "my-bucket".into(),
                    key: "path/ctx.tar.gz".into(),
                },
            ),
            (
                "gs://b/ctx.tar.gz",
                Source::Gcs {
                    bucket: "b".into(),
                    key: "ctx.tar.gz".into(),
                },
            ),
            (
                "https://acct.blob.core.windows.net/ctr/dir/ctx.tar.gz",
                Source::Azure {
                    account: Some("acct".into()),
                    container: "ctr".into(),
                    blob: "dir/ctx.tar.gz".into(),
                },
            ),
            (
                "azblob://ctr/ctx.tar.gz",
                Source::Azure {
                    account: None,
                    container: "ctr".into(),
                    blob: "ctx.tar.gz".into(),
                },
            ),
            (
                "https://example.com/ctx.tar.gz",
                Source::Http(Url::parse("https://example.com/ctx.tar.gz").unwrap()),
            ),
            (
                "git://host/repo#refs/heads/dev",
                git("git://host/repo", Some("refs/heads/dev"), None, None),
            ),
            (
                "git://host/repo.git#refs/heads/dev#0123abcd",
                git(
                    "git://host/repo.git",
                    Some("refs/heads/dev"),
                    Some("0123abcd"),
                    None,
                ),
            ),
            (
                "https://host/org/repo.git#v1.0:app/web",
                git(
                    "https://host/org/repo.git",
                    Some("v1.0"),
                    None,
                    Some("app/web"),
                ),
            ),
            (
                "https://host/org/repo.git#:sub",
                git("https://host/org/repo.git", None, None, Some("sub")),
            ),
            (
                "git@github.com:org/repo.git#main",
                git("git@github.com:org/repo.git", Some("main"), None, None),
            ),
            (
                "ssh://git@host:2222/repo.git",
                git("ssh://git@host:2222/repo.git", None, None, None),
            ),
            (
                "git+ssh://git@host/repo.git",
                git("ssh://git@host/repo.git", None, None, None),
            ),
            (
                "github.com/org/repo#main",
                git("https://github.com/org/repo", Some("main"), None, None),
            ),
            (
                "file:///srv/repo#dev:sub",
                git("file:///srv/repo", Some("dev"), None, Some("sub")),
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(parse(spec).unwrap(), want, "{spec}");
        }
    }

    #[test]
    fn rejects_bad_forms() {
        for (spec, reason) in [
            ("s3://bucket", "expected <bucket>/<object key>"),
            ("s3://bucket/", "expected <bucket>/<object key>"),
            ("gs:///key", "expected <bucket>/<object key>"),
            ("ftp://host/x.tar", "unsupported context scheme ftp://"),
            ("git://h/r#main#zz", "\"zz\" is not a commit id"),
            (
                "git://h/r#--upload-pack=x",
                "a git ref cannot start with \"-\"",
            ),
            (
                "--upload-pack=x@h:r",
                "a git remote cannot start with \"-\"",
            ),
            ("", "empty context"),
        ] {
            match parse(spec) {
                Err(ContextError::InvalidSpec { reason: r, .. }) => {
                    assert_eq!(r.to_string(), reason, "{spec}")
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
    }

    #[test]
    fn credentials_never_displayed() {
        let s = parse("https://user:s3cret@host/org/repo.git#main").unwrap();
        assert_eq!(s.to_string(), "https://user:***@host/org/repo.git#main");
        let s = parse("https://ghp_token@host/x.tar.gz").unwrap();
        assert_eq!(s.to_string(), "https://***@host/x.tar.gz");
        let e = parse("ftp://u:pw@host/x").unwrap_err().to_string();
        assert!(!e.contains("pw@"), "{e}");
    }
}
