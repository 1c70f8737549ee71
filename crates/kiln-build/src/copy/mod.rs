//! COPY and ADD: copies sources from the build context or another stage's
//! root filesystem into the stage's root filesystem, and reports every path
//! it wrote with the owner the layer must record. [`plan`] does the same
//! for a COPY of one directory into a new path without writing the files:
//! the layer is then made from the sources.
//!
//! The rules are Docker's builder's (BuildKit):
//! - sources are relative to the source root (a leading `/` is that root);
//!   wildcards are Go `filepath.Match` per component; a wildcard matching
//!   nothing copies nothing and is not an error; a named source that does not
//!   exist is. A directory source copies its contents. A symlink named as a
//!   source is followed (inside the root); symlinks inside a copied tree are
//!   copied as symlinks.
//! - the destination is a directory when it ends in `/` (or is `.`) or
//!   already is one (symlinks followed inside the stage root); otherwise a
//!   file source is written at that path. Missing parents are created with
//!   mode 0755 and the `--chown` owner; `--chmod` does not apply to them. It
//!   applies to the copied entries only (every file and directory of a copied
//!   tree), and to the destination directory a directory copy creates, which
//!   is the copied directory's root.
//! - copied entries keep mode (setuid/setgid/sticky too), times, xattrs,
//!   hardlinks and special files; owner is `--chown`, else 0:0 for the
//!   context and the source owner for `COPY --from` ([`CopyRequest::preserve_owner`]).
//! - ADD extracts local tar archives (by content) into the destination
//!   directory and downloads http(s) URLs (mode 0600, mtime from
//!   Last-Modified, `--checksum` verified before anything is written).
//!
//! Where kiln differs from Docker's builder on purpose: a `..` or symlink
//! leading out of the source root is an error instead of being silently
//! clamped to the root, and an unknown `--chown` name is an error instead of
//! falling back to root.

mod copier;
pub mod fsops;
mod glob;
mod parents;
mod sources;
mod special;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::chmod::{parse_chmod, Chmod, ChmodError};
use crate::fetch::{FetchError, HttpFetcher};
use crate::unpack::UnpackError;
use crate::users::{resolve_chown, UserError};
use fsops::{
    apply_meta_at, apply_meta_fd, atime_of, clean_components, copy_xattrs_at, copy_xattrs_fd,
    mtime_of, now, resolve_in_root, Escape, Meta, ResolveError,
};
use glob::{has_wildcards, match_component};
use kiln_dockerfile::pattern::PatternSet;
use kiln_image::root::{Dir, NewDir, Root, RootError};
use rustix::fs::FileType;

/// One COPY or ADD step.
pub struct CopyRequest<'a> {
    /// The build context directory, or another stage's rootfs (`COPY --from`).
    pub src_root: &'a Path,
    /// `true` = the path (relative to `src_root`, `/`-separated) is excluded
    /// (`.dockerignore`); `None` excludes nothing.
    pub src_filter: Option<&'a PatternSet>,
    /// Variable-expanded sources, possibly with wildcards or URLs (ADD).
    pub sources: Vec<String>,
    /// Variable-expanded destination.
    pub dest: String,
    /// The stage's WORKDIR, for a relative destination.
    pub workdir: String,
    /// The stage root filesystem being modified.
    pub dest_root: &'a Path,
    /// Raw `user[:group]`, resolved in `dest_root`'s passwd/group files.
    pub chown: Option<String>,
    /// Octal or symbolic mode.
    pub chmod: Option<String>,
    /// `--exclude` patterns (Docker pattern syntax).
    pub exclude: Vec<String>,
    /// `--parents`: keep each source's path (below an optional `/./` pivot).
    pub parents: bool,
    /// `COPY <<NAME` sources: (name, expanded body).
    pub heredocs: Vec<(String, String)>,
    /// `Some` for ADD.
    pub add: Option<AddOptions<'a>>,
    /// Keep the source's owners when there is no `--chown`: true for
    /// `COPY --from` (Docker's builder preserves ownership between stages),
    /// false for the build context (everything becomes 0:0).
    pub preserve_owner: bool,
    /// The source tree never changes while the stage root lives (another
    /// stage's finished root, or an image's unpacked root; never the context,
    /// which the user may edit), so a regular file whose copy would carry the
    /// source's own owner, mode and times is hard-linked instead of copied.
    /// Safe because nothing changes a stage root's file in place (a RUN's
    /// changes are renamed in from the overlay, a COPY writes a new file);
    /// so never in place, where a RUN writes straight into `/`.
    pub link_unchanged: bool,
}

/// ADD-only options.
pub struct AddOptions<'a> {
    /// `--unpack`: `None` extracts local archives and never URLs.
    pub unpack: Option<bool>,
    /// `--checksum=sha256:<hex>` for a URL source.
    pub checksum: Option<String>,
    pub http: &'a HttpFetcher,
}

pub use crate::snapshot::Changed;

/// Why a COPY/ADD failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("--exclude: {message}")]
    BadExclude { message: String },
    #[error("{src:?}: path leads outside the source root (build context or stage)")]
    OutsideContext { src: String },
    #[error("{src:?}: not found")]
    NotFound { src: String },
    #[error("{src:?}: too many levels of symbolic links")]
    TooManyLinks { src: String },
    #[error("--chown: {0}")]
    User(#[from] UserError),
    #[error(transparent)]
    Chmod(#[from] ChmodError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("ADD {archive}: {error}")]
    Unpack {
        archive: String,
        #[source]
        error: UnpackError,
    },
    #[error("checksum mismatch for {url}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("--checksum={0}: expected sha256:<64 hex digits>")]
    InvalidChecksum(String),
    #[error("--checksum requires a single HTTP(S) source")]
    ChecksumNeedsUrl,
    #[error("ADD {url}: git sources are not supported yet")]
    GitNotSupported { url: String },
    #[error("COPY {url}: source can't be a URL for COPY (use ADD)")]
    UrlInCopy { url: String },
    #[error("/{path}: not a directory (a parent of the destination is a file)")]
    NotADirectory { path: String },
    #[error("cannot replace directory /{path} with a file")]
    CannotReplaceDir { path: String },
    #[error("cannot copy directory {src:?} to non-directory /{path}")]
    DirOntoFile { src: String, path: String },
    #[error("{path}: unsupported file type (socket)")]
    Unsupported { path: String },
    #[error("{path}: {error}")]
    Io {
        path: String,
        #[source]
        error: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |error| CopyError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// Runs one COPY/ADD step against `req.dest_root`.
pub fn copy(req: &CopyRequest) -> Result<Vec<Changed>, CopyError> {
    copy_counting(req).map(|(changed, _)| changed)
}

/// [`copy`], also saying how many files were hard-linked rather than
/// copied ([`CopyRequest::link_unchanged`]).
pub fn copy_counting(req: &CopyRequest) -> Result<(Vec<Changed>, usize), CopyError> {
    let chown = match &req.chown {
        Some(spec) => Some(resolve_chown(req.dest_root, spec)?),
        None => None,
    };
    let chmod = match &req.chmod {
        Some(s) => Some(parse_chmod(s)?),
        None => None,
    };
    if let Some(add) = &req.add {
        if let Some(sum) = &add.checksum {
            if req.sources.len() != 1 || !is_http(&req.sources[..1].concat()) {
                return Err(CopyError::ChecksumNeedsUrl);
            }
            parse_checksum(sum)?;
        }
    }
    let (dest, dest_is_dir) = dest_path(&req.dest, &req.workdir);
    let mut c = Copier::new(req, chown, chmod, false)?;
    for src in &req.sources {
        if is_git(src) {
            if req.add.is_some() {
                return Err(CopyError::GitNotSupported { url: src.clone() });
            }
            return Err(CopyError::UrlInCopy { url: src.clone() });
        }
        if is_http(src) {
            match &req.add {
                Some(add) => c.add_url(src, add, &dest, dest_is_dir)?,
                None => return Err(CopyError::UrlInCopy { url: src.clone() }),
            }
        } else if req.parents {
            c.copy_parents(src, &dest)?;
        } else {
            c.copy_local(src, &dest, dest_is_dir)?;
        }
        c.finish_deferred()?;
    }
    for (name, body) in &req.heredocs {
        c.write_heredoc(name, body, &dest, dest_is_dir)?;
    }
    Ok((dedupe(c.changed), c.linked))
}

/// What [`plan`] found: every path the COPY writes (with its owner), and
/// for each copied entry the source path its content and metadata come
/// from (paths not listed are directories the plan created in the stage).
pub struct Planned {
    pub changed: Vec<Changed>,
    pub sources: HashMap<String, PathBuf>,
}

/// Plans a COPY of one directory into a destination that does not exist
/// yet, without copying: only the destination and its missing parents are
/// created in the stage root, and the layer is then made straight from the
/// sources ([`crate::snapshot::layer_entries_from`]). For a COPY of
/// thousands of files this skips creating them all in the stage, which on
/// slow disks is most of the step. `None` when the request is not of that
/// form (ADD, a URL, wildcards, several sources, a file, `--chmod`,
/// `--parents`, heredocs, or a destination that exists): the caller
/// copies. Otherwise the result is exactly what [`copy`] would write. The
/// sources are read again when the layer is written, so they must not
/// change until then (the context, a finished stage, an unpacked image).
pub fn plan(req: &CopyRequest) -> Result<Option<Planned>, CopyError> {
    let [src] = req.sources.as_slice() else {
        return Ok(None);
    };
    if req.add.is_some()
        || req.parents
        || req.chmod.is_some()
        || !req.heredocs.is_empty()
        || is_http(src)
        || is_git(src)
        || src.split('/').any(has_wildcards)
    {
        return Ok(None);
    }
    let chown = match &req.chown {
        Some(spec) => Some(resolve_chown(req.dest_root, spec)?),
        None => None,
    };
    let (dest, _) = dest_path(&req.dest, &req.workdir);
    let mut c = Copier::new(req, chown, None, true)?;
    let sources = c.resolve_sources(src)?;
    let [s] = sources.as_slice() else {
        return Ok(None);
    };
    let md = std::fs::symlink_metadata(&s.host).map_err(io_err(&s.host))?;
    if !md.is_dir() {
        return Ok(None);
    }
    if c.dest_entry(&dest)?.1.is_some() {
        return Ok(None);
    }
    let perm = c.copied_root_perm();
    let target = c.mkdir_all_leaf(&dest, perm)?;
    c.copy_children(&s.host, &s.rel, "", &Place::Open(target))?;
    let sources = c.planned.take().unwrap_or_default();
    Ok(Some(Planned {
        changed: dedupe(c.changed),
        sources,
    }))
}

/// The host path at or below which a COPY to `dest` (WORKDIR `workdir`)
/// into `root` writes files, symlinks resolved as the copy resolves them;
/// `None` when it cannot be told. Outside it the copy only creates missing
/// directories, never replacing or changing a file.
pub fn write_scope(root: &Path, dest: &str, workdir: &str) -> Option<PathBuf> {
    let (dest, _) = dest_path(dest, workdir);
    resolve_in_root(root, &dest, true, Escape::Clamp)
        .ok()
        .map(|r| r.host(root))
}

/// The names a COPY from `src_root` into the existing directory at `dest`
/// (WORKDIR `workdir`) of `root` may write there: `(directory, names)`,
/// every entry of each source directory and the name of each other source.
/// A superset of what it writes (`.dockerignore` and `--exclude` only take
/// away), so the rest of the directory is known to stay as it is. `None`
/// when the destination is not an existing directory or the sources are not
/// plain local paths (URLs, heredocs and `--parents` are not looked at).
pub fn writes_into_dir(
    req: &CopyRequest,
) -> Option<(PathBuf, std::collections::HashSet<std::ffi::OsString>)> {
    if req.add.is_some() || req.parents || !req.heredocs.is_empty() {
        return None;
    }
    let (dest, _) = dest_path(&req.dest, &req.workdir);
    let dir = resolve_in_root(req.dest_root, &dest, true, Escape::Clamp)
        .ok()?
        .host(req.dest_root);
    if !std::fs::symlink_metadata(&dir).ok()?.is_dir() {
        return None;
    }
    let mut names = std::collections::HashSet::new();
    for src in &req.sources {
        if is_remote_source(src) {
            return None;
        }
        for s in resolve_sources_in(req.src_root, req.src_filter, src).ok()? {
            if std::fs::symlink_metadata(&s.host).ok()?.is_dir() {
                for entry in std::fs::read_dir(&s.host).ok()? {
                    names.insert(entry.ok()?.file_name());
                }
            } else {
                names.insert(std::ffi::OsString::from(&s.name));
            }
        }
    }
    Some((dir, names))
}

/// Keeps the last record of each path, sorted by path.
fn dedupe(changed: Vec<Changed>) -> Vec<Changed> {
    let mut map: HashMap<String, Changed> = HashMap::new();
    for ch in changed {
        map.insert(ch.path.clone(), ch);
    }
    let mut v: Vec<Changed> = map.into_values().collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// The absolute, cleaned destination and whether it names a directory.
fn dest_path(dest: &str, workdir: &str) -> (String, bool) {
    let is_dir = dest.is_empty()
        || dest == "."
        || dest == ".."
        || dest.ends_with('/')
        || dest.ends_with("/.")
        || dest.ends_with("/..");
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        let base = if workdir.is_empty() { "/" } else { workdir };
        format!("{base}/{dest}")
    };
    // `..` above `/` stays at `/`, as in the image.
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    (format!("/{}", parts.join("/")), is_dir)
}

fn is_http(src: &str) -> bool {
    (src.starts_with("http://") || src.starts_with("https://")) && !is_git(src)
}

fn is_git(src: &str) -> bool {
    if src.starts_with("git@") || src.starts_with("git://") || src.starts_with("ssh://") {
        return true;
    }
    if src.starts_with("http://") || src.starts_with("https://") {
        let no_frag = src.split('#').next().unwrap_or(src);
        let no_query = no_frag.split('?').next().unwrap_or(no_frag);
        return no_query.trim_end_matches('/').ends_with(".git");
    }
    false
}

fn parse_checksum(sum: &str) -> Result<String, CopyError> {
    match sum.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(hex.to_ascii_lowercase())
        }
        _ => Err(CopyError::InvalidChecksum(sum.to_string())),
    }
}

/// Mode of the directories a step creates to reach its destination.
const PARENT_DIR_PERM: u32 = 0o755;

use copier::{Copier, Place};
pub use sources::{is_remote_source, source_paths};
use sources::{resolve_sources_in, src_resolve_err, walk_matches, Source};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_forms() {
        assert_eq!(dest_path("foo", "/"), ("/foo".into(), false));
        assert_eq!(dest_path("foo/", "/app"), ("/app/foo".into(), true));
        assert_eq!(dest_path(".", "/app"), ("/app".into(), true));
        assert_eq!(dest_path("", "/app"), ("/app".into(), true));
        assert_eq!(dest_path("/x/../y", "/app"), ("/y".into(), false));
        assert_eq!(dest_path("../../..", "/a"), ("/".into(), true));
        assert_eq!(dest_path("rel", ""), ("/rel".into(), false));
    }

    #[test]
    fn url_kinds() {
        assert!(is_http("https://example.com/a.tar.gz"));
        assert!(!is_http("https://example.com/repo.git"));
        assert!(is_git("https://example.com/repo.git#main"));
        assert!(is_git("git@github.com:o/r.git"));
        assert!(!is_git("context/foo"));
    }

    #[test]
    fn checksums() {
        let hex = "a".repeat(64);
        assert_eq!(
            parse_checksum(&format!("sha256:{hex}")).ok(),
            Some(hex.clone())
        );
        assert!(parse_checksum(&hex).is_err());
        assert!(parse_checksum("sha256:abc").is_err());
    }
}
