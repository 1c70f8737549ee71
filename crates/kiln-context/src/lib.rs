//! The build context: where COPY and ADD read from.
//!
//! This crate owns turning a context argument into a local, read-only tree
//! plus the `.dockerignore` filter that applies to it. Today that is a local
//! directory; remote sources (tar streams, object stores, git) arrive as
//! further [`Context`] constructors that materialize into the same shape.

use std::path::{Path, PathBuf};

use kiln_dockerfile::dockerignore::{dockerignore_path_for, parse_dockerignore};
use kiln_dockerfile::pattern::PatternSet;

/// Errors while opening a build context.
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
    #[error("{path}: {message}")]
    Ignore { path: PathBuf, message: String },
}

/// A local build context directory and its ignore rules.
#[derive(Debug)]
pub struct Context {
    root: PathBuf,
    ignore: Option<PatternSet>,
    ignore_file: Option<PathBuf>,
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
                    let set = parse_dockerignore(&text).map_err(|e| ContextError::Ignore {
                        path: candidate.clone(),
                        message: e.to_string(),
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
        })
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
