//! The build context: where COPY and ADD read from.
//!
//! This crate owns turning a context argument, as users write it (a local
//! directory, a tar file or `tar://stdin`, an http(s) tarball, `s3://`,
//! `gs://`, Azure Blob, or a git repository), into a local, read-only tree
//! plus the `.dockerignore` filter that applies to it. [`open`] is the one
//! entry point: remote and archived sources are materialized under
//! [`ContextOptions::work_dir`] and then opened like a local directory.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use kiln_dockerfile::dockerignore::{dockerignore_path_for, parse_dockerignore};
use kiln_dockerfile::pattern::{PatternError, PatternSet};

mod archive;
mod git;
mod remote;
pub mod source;

pub use git::{GitCommandError, GitError};
pub use remote::FetchError;
pub use source::{GitSource, Source, SpecError};

/// Errors while opening a build context. Every message names the source
/// (with any credentials redacted) and the reason, on one line. The reasons
/// are typed per step ([`SpecError`], [`FetchError`], [`GitError`],
/// [`SubPathError`]) and shown in the message.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("build context {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{path}: {error}")]
    Ignore { path: PathBuf, error: PatternError },
    #[error("build context {spec}: {reason}")]
    InvalidSpec { spec: String, reason: SpecError },
    #[error("build context {location}: {reason}")]
    Fetch {
        location: String,
        reason: FetchError,
    },
    #[error("build context {location}: {reason}")]
    Archive { location: String, reason: String },
    #[error("build context {location}: git: {reason}")]
    Git { location: String, reason: GitError },
    #[error("build context {location}: sub-path {sub_path}: {reason}")]
    SubPath {
        location: String,
        sub_path: String,
        reason: SubPathError,
    },
}

/// Why a `--context-sub-path` (or a git URL's `:subdir`) is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SubPathError {
    #[error("must be a relative path inside the context")]
    NotRelative,
    /// The context root itself cannot be resolved.
    #[error("{}: {error}", .root.display())]
    Root {
        root: PathBuf,
        error: std::io::Error,
    },
    /// The sub-path cannot be resolved (missing, a dangling link…).
    #[error("{error}")]
    Resolve { error: std::io::Error },
    #[error("resolves outside the context")]
    Outside,
    #[error("is not a directory")]
    NotADirectory,
}

/// Kaniko's `--git` options.
#[derive(Debug, Clone, Default)]
pub struct GitOptions {
    /// Branch (or any ref) to use when the URL has no `#ref`.
    pub branch: Option<String>,
    /// Fetch only the requested ref. Other branches are fetched only when
    /// the `.git` directory is kept, since nothing else can see them.
    pub single_branch: bool,
    /// Check out submodules (recursively).
    pub recurse_submodules: bool,
    /// Keep the `.git` directory in the context (removed by default).
    pub keep_git_dir: bool,
}

/// How to open a context.
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// `--context-sub-path`: the directory inside the source that is the
    /// context.
    pub sub_path: Option<String>,
    /// Git options.
    pub git: GitOptions,
    /// S3 endpoint of an S3-compatible store (else the `S3_ENDPOINT`
    /// environment variable, else AWS).
    pub s3_endpoint: Option<String>,
    /// Address buckets by path, not by host name (also
    /// `S3_FORCE_PATH_STYLE=true`).
    pub s3_force_path_style: bool,
    /// Extra object store settings, applied after the environment: keys as
    /// the `AWS_*`, `GOOGLE_*`, `AZURE_*` variables in lower case (e.g.
    /// `aws_access_key_id`, `google_base_url`, `azure_storage_endpoint`,
    /// `allow_http`).
    pub store_options: BTreeMap<String, String>,
    /// Where remote and archived contexts are materialized: kiln creates
    /// `work_dir/context` (which must not exist yet).
    pub work_dir: PathBuf,
}

/// Opens the context `spec` (as users write it). Local directories are used
/// in place; everything else is materialized under `opts.work_dir`. The
/// Dockerfile's path, if known, locates `<Dockerfile>.dockerignore`.
pub fn open(
    spec: &str,
    dockerfile: Option<&Path>,
    opts: &ContextOptions,
) -> Result<Context, ContextError> {
    let source = source::parse(spec)?;
    let display = source.to_string();
    let root = materialize(&source, &display, opts)?;
    let root = match &opts.sub_path {
        Some(sub) => scoped_sub_path(&root, sub, &display)?,
        None => root,
    };
    let materialized = !matches!(source, Source::Dir(_));
    let dockerfile = dockerfile.map(|d| {
        if materialized && d.is_relative() {
            root.join(d)
        } else {
            d.to_path_buf()
        }
    });
    let mut ctx = Context::local(&root, dockerfile.as_deref())?;
    ctx.materialized = materialized;
    Ok(ctx)
}

/// Fetches or extracts `source` and returns the directory it became.
fn materialize(
    source: &Source,
    display: &str,
    opts: &ContextOptions,
) -> Result<PathBuf, ContextError> {
    let remote = match source {
        Source::Dir(dir) => return Ok(dir.clone()),
        Source::TarFile(path) => {
            let file = std::fs::File::open(path)
                .map_err(|error| remote::fetch_error(display, FetchError::OpenTarFile { error }))?;
            let dest = fresh_dir(opts)?;
            archive::extract(file, &dest, display)?;
            return Ok(dest);
        }
        Source::Stdin => {
            let dest = fresh_dir(opts)?;
            archive::extract(std::io::stdin().lock(), &dest, display)?;
            return Ok(dest);
        }
        Source::Git(g) => {
            let dest = fresh_path(opts)?;
            git::fetch(g, &opts.git, &dest, display)?;
            return match &g.subdir {
                Some(sub) => scoped_sub_path(&dest, sub, display),
                None => Ok(dest),
            };
        }
        Source::Http(url) => remote::Remote::Http(url.clone()),
        Source::S3 { bucket, key } => remote::Remote::S3 {
            bucket: bucket.clone(),
            key: key.clone(),
        },
        Source::Gcs { bucket, key } => remote::Remote::Gcs {
            bucket: bucket.clone(),
            key: key.clone(),
        },
        Source::Azure {
            account,
            container,
            blob,
        } => remote::Remote::Azure {
            account: account.clone(),
            container: container.clone(),
            blob: blob.clone(),
        },
    };
    let reader = remote::stream(remote, display, opts)?;
    let dest = fresh_dir(opts)?;
    archive::extract(reader, &dest, display)?;
    Ok(dest)
}

/// `work_dir/context`, checked not to exist yet.
fn fresh_path(opts: &ContextOptions) -> Result<PathBuf, ContextError> {
    std::fs::create_dir_all(&opts.work_dir).map_err(|source| ContextError::Io {
        path: opts.work_dir.clone(),
        source,
    })?;
    let dest = opts.work_dir.join("context");
    if dest.symlink_metadata().is_ok() {
        return Err(ContextError::Io {
            path: dest,
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the context work directory already exists",
            ),
        });
    }
    Ok(dest)
}

/// Creates `work_dir/context` (empty, new) and returns its canonical path.
fn fresh_dir(opts: &ContextOptions) -> Result<PathBuf, ContextError> {
    let dest = fresh_path(opts)?;
    std::fs::create_dir(&dest)
        .and_then(|()| dest.canonicalize())
        .map_err(|source| ContextError::Io { path: dest, source })
}

/// `root/sub`, which must be a directory inside `root` once symlinks are
/// resolved.
fn scoped_sub_path(root: &Path, sub: &str, display: &str) -> Result<PathBuf, ContextError> {
    let err = |reason: SubPathError| ContextError::SubPath {
        location: display.to_string(),
        sub_path: sub.to_string(),
        reason,
    };
    let rel = Path::new(sub);
    if rel.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    }) {
        return Err(err(SubPathError::NotRelative));
    }
    let root = root.canonicalize().map_err(|error| {
        err(SubPathError::Root {
            root: root.to_path_buf(),
            error,
        })
    })?;
    let joined = root.join(rel);
    let resolved = joined
        .canonicalize()
        .map_err(|error| err(SubPathError::Resolve { error }))?;
    if !resolved.starts_with(&root) {
        return Err(err(SubPathError::Outside));
    }
    if !resolved.is_dir() {
        return Err(err(SubPathError::NotADirectory));
    }
    Ok(resolved)
}

/// A local build context directory and its ignore rules.
#[derive(Debug)]
pub struct Context {
    root: PathBuf,
    ignore: Option<PatternSet>,
    ignore_file: Option<PathBuf>,
    materialized: bool,
}

impl Context {
    /// Opens a directory as the context. `dockerfile` is the Dockerfile's
    /// path, used to find `<Dockerfile>.dockerignore` beside it, which takes
    /// precedence over `<context>/.dockerignore`.
    pub fn local(dir: &Path, dockerfile: Option<&Path>) -> Result<Self, ContextError> {
        let meta = std::fs::metadata(dir).map_err(|source| ContextError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ContextError::NotADirectory(dir.to_path_buf()));
        }
        let root = dir.canonicalize().map_err(|source| ContextError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let candidates = match dockerfile {
            Some(df) => dockerignore_path_for(df, &root),
            None => vec![root.join(".dockerignore")],
        };
        let mut ignore = None;
        let mut ignore_file = None;
        for candidate in candidates {
            match std::fs::read_to_string(&candidate) {
                Ok(text) => {
                    let set = parse_dockerignore(&text).map_err(|error| ContextError::Ignore {
                        path: candidate.clone(),
                        error,
                    })?;
                    ignore = Some(set);
                    ignore_file = Some(candidate);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(ContextError::Io {
                        path: candidate,
                        source,
                    })
                }
            }
        }
        Ok(Context {
            root,
            ignore,
            ignore_file,
            materialized: false,
        })
    }

    /// Where the Dockerfile is: `file` as given, or `<root>/Dockerfile`
    /// when none is given. For a context fetched or extracted by [`open`]
    /// (anything but a local directory) a relative `file` is inside the
    /// context, as with Kaniko's `--dockerfile`.
    pub fn dockerfile_path(&self, file: Option<&Path>) -> PathBuf {
        match file {
            None => self.root.join("Dockerfile"),
            Some(f) if self.materialized && f.is_relative() => self.root.join(f),
            Some(f) => f.to_path_buf(),
        }
    }

    /// Whether the context was fetched or extracted (not a local directory
    /// used in place).
    pub fn is_materialized(&self) -> bool {
        self.materialized
    }

    /// The context's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The ignore file in effect, if any.
    pub fn ignore_file(&self) -> Option<&Path> {
        self.ignore_file.as_deref()
    }

    /// The ignore rules, if the context has any.
    pub fn ignore(&self) -> Option<&PatternSet> {
        self.ignore.as_ref()
    }

    /// Whether `rel` (relative to the root, `/`-separated) is excluded by
    /// the ignore rules.
    pub fn is_excluded(&self, rel: &str) -> bool {
        match &self.ignore {
            Some(set) => set.matches(rel),
            None => false,
        }
    }
}
