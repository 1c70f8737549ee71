//! Read-only access to a root filesystem that may be hostile.
//!
//! Every path is resolved with [`kiln_image::root::Root::resolve`], so a symlink (an
//! absolute one included) is followed as if the root were `/` and `..` never climbs
//! above it; the resolved parent directory is then opened through the root and the file
//! itself with `O_NOFOLLOW`, so nothing outside the root is ever read. Reads are capped:
//! a file larger than the cap is refused before its content is read, and the directory
//! walk is bounded in depth and entry count. Directories are walked without following
//! symlinks (a symlinked directory is not descended into: what it names is reached on
//! its own path).

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use kiln_image::root::{Dir, Root, RootError};
use rustix::fs::FileType;

/// Why a file in the root could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file is larger than the cap for its kind.
    #[error("/{path}: {size} bytes is over the {limit}-byte limit")]
    TooLarge { path: String, size: u64, limit: u64 },
    /// The path names something other than a regular file.
    #[error("/{path}: not a regular file")]
    NotAFile { path: String },
    /// Resolution or a system call failed.
    #[error(transparent)]
    Root(#[from] RootError),
    /// Reading failed.
    #[error("/{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One regular file found by [`Tree::walk`].
#[derive(Debug, Clone)]
pub struct Found {
    /// Path below the root, `/`-separated, no leading `/`.
    pub rel: String,
    /// Permission bits.
    pub mode: u32,
    pub size: u64,
}

/// Bounds on a walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    pub max_depth: usize,
    pub max_entries: usize,
}

/// A root filesystem opened for reading.
pub struct Tree {
    root: Root,
}

/// Top-level directories that hold no packages (kernel file systems, mount points).
const SKIP_TOP: &[&str] = &["proc", "sys", "dev"];

impl Tree {
    pub fn open(path: &Path) -> Result<Tree, RootError> {
        Ok(Tree {
            root: Root::open(path)?,
        })
    }

    /// Resolves `path` inside the root (symlinks followed, the last one too) to its
    /// `/`-separated form below the root.
    pub fn resolve(&self, path: &str) -> Result<String, RootError> {
        let comps = self.root.resolve(path, true, false)?;
        Ok(comps
            .iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"))
    }

    /// Opens the regular file at `path` (resolved inside the root). `Ok(None)` when it
    /// does not exist.
    pub fn open_file(&self, path: &str) -> Result<Option<(File, String, u64)>, ReadError> {
        let rel = self.resolve(path)?;
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", rel.as_str()),
        };
        if name.is_empty() {
            return Err(ReadError::NotAFile { path: rel });
        }
        let Some(dir) = self.root.dir(parent, None)? else {
            return Ok(None);
        };
        let name = OsStr::from_bytes(name.as_bytes());
        let Some(st) = dir.dir.lstat(name)? else {
            return Ok(None);
        };
        if st.kind != FileType::RegularFile {
            return Err(ReadError::NotAFile { path: rel });
        }
        let file = dir.dir.open_file(name)?;
        // The size that counts is the opened file's, not the entry's seen before.
        let size = file
            .metadata()
            .map_err(|e| ReadError::Io {
                path: rel.clone(),
                source: e,
            })?
            .len();
        Ok(Some((file, rel, size)))
    }

    /// Reads the regular file at `path`, refusing one over `limit` bytes. `Ok(None)`
    /// when it does not exist.
    pub fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, ReadError> {
        let Some((file, rel, size)) = self.open_file(path)? else {
            return Ok(None);
        };
        if size > limit {
            return Err(ReadError::TooLarge {
                path: rel,
                size,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        // The file may grow after the size check: never read past the limit.
        file.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| ReadError::Io {
                path: rel.clone(),
                source: e,
            })?;
        if buf.len() as u64 > limit {
            return Err(ReadError::TooLarge {
                path: rel,
                size: buf.len() as u64,
                limit,
            });
        }
        Ok(Some(buf))
    }

    /// The names in the directory at `path` (resolved inside the root), sorted;
    /// empty when it does not exist.
    pub fn names(&self, path: &str) -> Result<Vec<String>, RootError> {
        let Some(dir) = self.root.dir(path, None)? else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = dir
            .dir
            .names()?
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every regular file below the root (symlinks never followed), in sorted order,
    /// within `limits`. Directories that cannot be read are reported in `skipped`.
    pub fn walk(&self, limits: WalkLimits) -> Result<Walk, RootError> {
        let mut out = Walk::default();
        let top = self.root.top()?;
        let mut entries = 0usize;
        self.walk_dir(&top, 0, limits, &mut entries, &mut out);
        out.files.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    fn walk_dir(
        &self,
        dir: &Dir,
        depth: usize,
        limits: WalkLimits,
        entries: &mut usize,
        out: &mut Walk,
    ) {
        let names = match dir.names() {
            Ok(n) => n,
            Err(e) => {
                out.skipped.push(e.to_string());
                return;
            }
        };
        for name in names {
            if depth == 0 && SKIP_TOP.iter().any(|s| name.as_bytes() == s.as_bytes()) {
                continue;
            }
            *entries += 1;
            if *entries > limits.max_entries {
                if !out.truncated {
                    out.truncated = true;
                    out.skipped
                        .push(format!("walk stopped after {} entries", limits.max_entries));
                }
                return;
            }
            let st = match dir.lstat(&name) {
                Ok(Some(st)) => st,
                Ok(None) => continue,
                Err(e) => {
                    out.skipped.push(e.to_string());
                    continue;
                }
            };
            match st.kind {
                FileType::Directory => {
                    if depth + 1 >= limits.max_depth {
                        out.skipped.push(format!(
                            "/{}: deeper than {}",
                            dir.rel_of(&name),
                            limits.max_depth
                        ));
                        continue;
                    }
                    match dir.subdir(&name) {
                        Ok(sub) => self.walk_dir(&sub, depth + 1, limits, entries, out),
                        Err(e) => out.skipped.push(e.to_string()),
                    }
                }
                FileType::RegularFile => out.files.push(Found {
                    rel: dir.rel_of(&name),
                    mode: st.mode,
                    size: st.size,
                }),
                _ => {}
            }
        }
    }
}

/// What [`Tree::walk`] found.
#[derive(Debug, Default)]
pub struct Walk {
    pub files: Vec<Found>,
    /// Directories or entries that could not be read, and whether the walk was cut short.
    pub skipped: Vec<String>,
    pub truncated: bool,
}
