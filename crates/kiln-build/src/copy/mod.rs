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

pub mod fsops;
mod glob;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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

/// A source entry found on disk.
struct Source {
    /// Host path, symlinks followed inside the source root.
    host: PathBuf,
    /// Path relative to the source root after resolution (for the filter).
    rel: String,
    /// The name it was matched under (destination name inside a directory).
    name: String,
    /// Path relative to the wildcard base, for `--exclude` of a match.
    match_rel: Option<String>,
}

struct Copier<'r, 'a> {
    req: &'r CopyRequest<'a>,
    /// The stage root every write goes through.
    root: Root,
    chown: Option<(u32, u32)>,
    chmod: Option<Chmod>,
    excludes: PatternSet,
    changed: Vec<Changed>,
    /// Source (dev, inode) → destination path (below the root) already
    /// written, for hardlinks.
    links: HashMap<(u64, u64), String>,
    /// Directories (paths below the root) whose metadata is applied after
    /// their contents are written, with the source of their xattrs.
    deferred: Vec<(String, Meta, Option<PathBuf>)>,
    /// Planning ([`plan`]): entries are not written, only noted here
    /// (stage path → the source they would be copied from).
    planned: Option<HashMap<String, PathBuf>>,
    /// Files hard-linked to their source rather than copied.
    linked: usize,
}

/// Where the entries of a copied directory go: a directory of the stage
/// root held open, or, when planning, only its path below the root (the
/// directory does not exist).
enum Place {
    Open(Dir),
    Planned(String),
}

impl Place {
    fn rel_of(&self, name: &OsStr) -> String {
        match self {
            Place::Open(dir) => dir.rel_of(name),
            Place::Planned(rel) if rel.is_empty() => name.to_string_lossy().into_owned(),
            Place::Planned(rel) => format!("{rel}/{}", name.to_string_lossy()),
        }
    }
}

/// A [`RootError`] met while writing `path` (a destination as the
/// Dockerfile names it, or a path below the stage root).
fn root_err(path: &str) -> impl FnOnce(RootError) -> CopyError + '_ {
    move |e| match e {
        RootError::NotADirectory { at, .. } => CopyError::NotADirectory { path: at },
        RootError::TooManyLinks { .. } => CopyError::TooManyLinks {
            src: path.to_string(),
        },
        RootError::Escapes { .. } => CopyError::OutsideContext {
            src: path.to_string(),
        },
        e => CopyError::Io {
            path: path.to_string(),
            error: e.into(),
        },
    }
}

impl<'r, 'a> Copier<'r, 'a> {
    fn new(
        req: &'r CopyRequest<'a>,
        chown: Option<(u32, u32)>,
        chmod: Option<Chmod>,
        planning: bool,
    ) -> Result<Self, CopyError> {
        let pats: Vec<&str> = req.exclude.iter().map(String::as_str).collect();
        let excludes = PatternSet::new(&pats).map_err(|e| CopyError::BadExclude {
            message: e.to_string(),
        })?;
        let root = Root::open(req.dest_root).map_err(root_err("/"))?;
        Ok(Copier {
            req,
            root,
            chown,
            chmod,
            excludes,
            changed: Vec::new(),
            links: HashMap::new(),
            deferred: Vec::new(),
            planned: planning.then(HashMap::new),
            linked: 0,
        })
    }

    fn record(&mut self, rel: String, uid: u32, gid: u32) {
        if !rel.is_empty() {
            self.changed.push(Changed {
                path: rel,
                uid,
                gid,
            });
        }
    }

    fn filtered(&self, rel: &str) -> bool {
        match self.req.src_filter {
            Some(f) => !rel.is_empty() && f.matches(rel),
            None => false,
        }
    }

    /// Whether an excluded directory may still hold entries that an
    /// exception (`!pattern`) brings back, so the walk must go in.
    fn may_descend(&self, rel: &str, src_rel: &str) -> bool {
        let by_exclude =
            !self.excludes.matches(rel) || self.excludes.may_have_included_children(rel);
        let by_filter = match self.req.src_filter {
            Some(f) => !f.matches(src_rel) || f.may_have_included_children(src_rel),
            None => true,
        };
        by_exclude && by_filter
    }

    /// Whether the copy of a file with source metadata `md` would be the
    /// same inode metadata as the source's, and may be a hard link to it
    /// ([`CopyRequest::link_unchanged`]).
    fn link_unchanged(&self, md: &std::fs::Metadata, meta: &Meta) -> bool {
        self.req.link_unchanged
            && meta.uid == md.uid()
            && meta.gid == md.gid()
            && meta.perm == md.mode() & 0o7777
            && meta.mtime == Some(mtime_of(md))
    }

    /// Owner for an entry whose source metadata is `md`.
    fn owner_for(&self, md: Option<&std::fs::Metadata>) -> (u32, u32) {
        match (self.chown, md) {
            (Some(o), _) => o,
            (None, Some(md)) if self.req.preserve_owner => (md.uid(), md.gid()),
            _ => (0, 0),
        }
    }

    /// Mode for the destination directory that a directory copy creates: it
    /// stands for the copied directory's root, so `--chmod` applies to it.
    fn copied_root_perm(&self) -> u32 {
        match &self.chmod {
            Some(c) => c.apply(0o040755, true) & 0o7777,
            None => PARENT_DIR_PERM,
        }
    }

    fn perm_for(&self, mode: u32, is_dir: bool) -> u32 {
        match &self.chmod {
            Some(c) => c.apply(mode, is_dir) & 0o7777,
            None => mode & 0o7777,
        }
    }

    /// Creates `path` (absolute in the stage) and its missing parents, all
    /// mode 0755 (never the `--chmod` mode, as Docker's builder does);
    /// returns the directory.
    fn mkdir_all(&mut self, path: &str) -> Result<Dir, CopyError> {
        self.mkdir_all_leaf(path, PARENT_DIR_PERM)
    }

    /// [`Self::mkdir_all`], but `path` itself, when created, gets `leaf_perm`.
    /// Symlinks on the way are followed inside the stage root only.
    fn mkdir_all_leaf(&mut self, path: &str, leaf_perm: u32) -> Result<Dir, CopyError> {
        let (uid, gid) = self.chown.unwrap_or((0, 0));
        let resolved = self
            .root
            .dir(
                path,
                Some(NewDir {
                    mode: PARENT_DIR_PERM,
                    owner: Some((uid, gid)),
                }),
            )
            .map_err(root_err(path))?
            .ok_or_else(|| CopyError::NotADirectory {
                path: path.to_string(),
            })?;
        let rel = resolved.dir.rel();
        if resolved.created.last() == Some(&rel) && leaf_perm != PARENT_DIR_PERM {
            resolved.dir.chmod_self(leaf_perm).map_err(root_err(path))?;
        }
        for c in resolved.created {
            self.record(c, uid, gid);
        }
        Ok(resolved.dir)
    }

    /// The directory holding `rel` (a path below the root whose parents
    /// exist) and its last name; the name itself is never followed.
    fn at(&self, rel: &str) -> Result<(Dir, OsString), CopyError> {
        match self.root.parent(rel, None).map_err(root_err(rel))? {
            Some((parent, name)) => Ok((parent.dir, name)),
            None => Err(CopyError::Io {
                path: format!("/{rel}"),
                error: io::Error::from(io::ErrorKind::NotFound),
            }),
        }
    }

    /// A destination resolved in the stage (symlinks followed inside it):
    /// its path below the root, and whether it exists as a directory
    /// (`Some(true)`), as something else (`Some(false)`) or not at all.
    fn dest_entry(&self, path: &str) -> Result<(String, Option<bool>), CopyError> {
        let comps = self
            .root
            .resolve(path, true, false)
            .map_err(root_err(path))?;
        let rel = comps
            .iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if rel.is_empty() {
            return Ok((rel, Some(true)));
        }
        let kind = match self.root.parent(&rel, None) {
            Ok(Some((parent, name))) => parent
                .dir
                .lstat(&name)
                .map_err(root_err(path))?
                .map(|st| st.is_dir()),
            Ok(None) | Err(RootError::NotADirectory { .. }) => None,
            Err(e) => return Err(root_err(path)(e)),
        };
        Ok((rel, kind))
    }

    /// Opens the existing directory at `rel` (resolved, below the root).
    fn open_dir(&self, rel: &str) -> Result<Dir, CopyError> {
        match self.root.dir(rel, None).map_err(root_err(rel))? {
            Some(r) => Ok(r.dir),
            None => Err(CopyError::NotADirectory {
                path: rel.to_string(),
            }),
        }
    }

    /// Where a non-directory named `name` goes for destination `dest`: the
    /// directory and the name in it.
    fn file_target(
        &mut self,
        name: &str,
        dest: &str,
        dest_is_dir: bool,
    ) -> Result<(Dir, OsString), CopyError> {
        if dest_is_dir {
            let dir = self.mkdir_all(dest)?;
            return Ok((dir, OsString::from(name)));
        }
        let parent = parent_of(dest);
        self.mkdir_all(&parent)?;
        match self.dest_entry(dest)? {
            (rel, Some(true)) => Ok((self.open_dir(&rel)?, OsString::from(name))),
            (rel, _) => self.at(&rel),
        }
    }

    fn copy_local(&mut self, src: &str, dest: &str, dest_is_dir: bool) -> Result<(), CopyError> {
        let sources = self.resolve_sources(src)?;
        let unpack = match &self.req.add {
            Some(add) => add.unpack.unwrap_or(true),
            None => false,
        };
        for s in sources {
            if let Some(m) = &s.match_rel {
                if self.excludes.matches(m) {
                    continue;
                }
            }
            let md = std::fs::symlink_metadata(&s.host).map_err(io_err(&s.host))?;
            if unpack && md.is_file() {
                let is_archive = crate::unpack::detect_archive(&s.host)
                    .map_err(|error| CopyError::Unpack {
                        archive: src.to_string(),
                        error,
                    })?
                    .is_some();
                if is_archive {
                    self.unpack_into(&s.host, src, dest)?;
                    continue;
                }
            }
            if md.is_dir() {
                let target = match self.dest_entry(dest)? {
                    (rel, Some(true)) => self.open_dir(&rel)?,
                    (rel, Some(false)) => {
                        return Err(CopyError::DirOntoFile {
                            src: src.to_string(),
                            path: rel,
                        })
                    }
                    (_, None) => {
                        let perm = self.copied_root_perm();
                        self.mkdir_all_leaf(dest, perm)?
                    }
                };
                self.copy_children(&s.host, &s.rel, "", &Place::Open(target))?;
            } else {
                let (dir, name) = self.file_target(&s.name, dest, dest_is_dir)?;
                self.copy_entry(&s.host, &s.rel, "", &Place::Open(dir), &name, false)?;
            }
        }
        Ok(())
    }

    /// ADD of a local or downloaded archive: extracted into `dest`, which
    /// is the root the archive's own paths and symlinks stay inside.
    fn unpack_into(&mut self, archive: &Path, shown: &str, dest: &str) -> Result<(), CopyError> {
        let dir = self.mkdir_all(dest)?;
        let below = self.root.below(&dir).map_err(root_err(dest))?;
        let written = crate::unpack::unpack_archive(archive, &below, &dir.rel(), self.chown)
            .map_err(|error| CopyError::Unpack {
                archive: shown.to_string(),
                error,
            })?;
        self.changed.extend(written);
        Ok(())
    }

    fn resolve_sources(&self, src: &str) -> Result<Vec<Source>, CopyError> {
        resolve_sources_in(self.req.src_root, self.req.src_filter, src)
    }

    /// Copies the entries of directory `src` into `target`.
    fn copy_children(
        &mut self,
        src: &Path,
        src_rel: &str,
        rel: &str,
        target: &Place,
    ) -> Result<(), CopyError> {
        let mut names: Vec<_> = std::fs::read_dir(src)
            .map_err(io_err(src))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            let n = name.to_string_lossy();
            let child_rel = if rel.is_empty() {
                n.to_string()
            } else {
                format!("{rel}/{n}")
            };
            let child_src_rel = if src_rel.is_empty() {
                n.to_string()
            } else {
                format!("{src_rel}/{n}")
            };
            self.copy_entry(
                &src.join(&name),
                &child_src_rel,
                &child_rel,
                target,
                &name,
                true,
            )?;
        }
        Ok(())
    }

    /// Copies one entry (recursively for directories) to `name` in
    /// `target`. `rel` is its path below the copied source ("" for the
    /// source itself), `overwrite` whether an existing directory there
    /// takes its metadata. Everything is written through the open
    /// directory: the name is never followed, and what the stage holds
    /// there (a symlink, a file) is replaced, never written through.
    fn copy_entry(
        &mut self,
        src: &Path,
        src_rel: &str,
        rel: &str,
        target: &Place,
        name: &OsStr,
        overwrite: bool,
    ) -> Result<(), CopyError> {
        let excluded = !rel.is_empty() && (self.excludes.matches(rel) || self.filtered(src_rel));
        let md = std::fs::symlink_metadata(src).map_err(io_err(src))?;
        let ft = md.file_type();
        if excluded && !(ft.is_dir() && self.may_descend(rel, src_rel)) {
            return Ok(());
        }
        let (uid, gid) = self.owner_for(Some(&md));
        let dir = match target {
            Place::Open(dir) if self.planned.is_none() => dir,
            _ => {
                return self.plan_entry(src, src_rel, rel, target, name, excluded, &md, (uid, gid))
            }
        };
        let meta = Meta {
            uid,
            gid,
            perm: self.perm_for(md.mode(), ft.is_dir()),
            mtime: Some(mtime_of(&md)),
            atime: Some(atime_of(&md)),
        };
        let dest_rel = dir.rel_of(name);
        if ft.is_dir() {
            let created = match dir.lstat(name).map_err(root_err(&dest_rel))? {
                Some(t) if t.is_dir() => false,
                Some(_) => {
                    return Err(CopyError::DirOntoFile {
                        src: src.display().to_string(),
                        path: dest_rel,
                    })
                }
                None => {
                    dir.mkdir(name, PARENT_DIR_PERM)
                        .map_err(root_err(&dest_rel))?;
                    true
                }
            };
            let sub = dir.subdir(name).map_err(root_err(&dest_rel))?;
            let before = self.changed.len();
            self.copy_children(src, src_rel, rel, &Place::Open(sub))?;
            if excluded && self.changed.len() == before {
                // Nothing below an excluded directory came back through an
                // exception: the directory itself stays out.
                if created {
                    let _ = dir.remove_all(name);
                }
                return Ok(());
            }
            if created || overwrite {
                apply_meta_at(dir, name, &meta, false).map_err(root_err(&dest_rel))?;
                copy_xattrs_at(src, dir, name);
                self.record(dest_rel, uid, gid);
            }
            return Ok(());
        }
        match dir.lstat(name).map_err(root_err(&dest_rel))? {
            Some(t) if t.is_dir() => {
                return Err(CopyError::CannotReplaceDir { path: dest_rel });
            }
            Some(_) => dir.remove_all(name).map_err(root_err(&dest_rel))?,
            None => {}
        }
        let key = (md.dev(), md.ino());
        if ft.is_file() && md.nlink() > 1 {
            if let Some(first) = self.links.get(&key).cloned() {
                let (first_dir, first_name) = self.at(&first)?;
                let tmp = temp_name();
                dir.link_from(&tmp, &first_dir, &first_name)
                    .map_err(root_err(&dest_rel))?;
                rename_or_clean(dir, &tmp, name)?;
                self.record(dest_rel, uid, gid);
                return Ok(());
            }
        }
        if ft.is_file() && self.link_unchanged(&md, &meta) {
            // A link is one metadata write where a copy is a create, the
            // data, and four metadata writes: tens of thousands of files
            // (a Python venv) go from seconds to a fraction of one. Any
            // failure (another filesystem, too many links) falls back to
            // copying.
            if dir.link_path(name, src).is_ok() {
                self.linked += 1;
                if md.nlink() > 1 {
                    self.links.insert(key, dest_rel.clone());
                }
                self.record(dest_rel, uid, gid);
                return Ok(());
            }
        }
        let tmp = temp_name();
        let made = (|| -> io::Result<()> {
            if ft.is_file() {
                let mut from = std::fs::File::open(src)?;
                let mut to = dir.create_file(&tmp, 0o600)?;
                // No fsync: the stage root is scratch space that a crashed
                // build throws away; durability is the blob store's job
                // (layers are fsynced there). An fsync per file made large
                // COPYs disk-bound.
                io::copy(&mut from, &mut to)?;
                apply_meta_fd(&to, &meta)?;
                copy_xattrs_fd(src, &to);
                return Ok(());
            }
            if ft.is_symlink() {
                let link = std::fs::read_link(src)?;
                dir.symlink(&tmp, link.as_os_str())?;
            } else {
                let (kind, rdev) = if ft.is_fifo() {
                    (FileType::Fifo, 0)
                } else if ft.is_char_device() {
                    (FileType::CharacterDevice, md.rdev())
                } else if ft.is_block_device() {
                    (FileType::BlockDevice, md.rdev())
                } else {
                    return Err(io::Error::new(io::ErrorKind::Unsupported, "socket"));
                };
                dir.mknod(&tmp, kind, meta.perm, rdev)?;
            }
            apply_meta_at(dir, &tmp, &meta, ft.is_symlink())?;
            copy_xattrs_at(src, dir, &tmp);
            Ok(())
        })();
        if let Err(error) = made {
            let _ = dir.remove_all(&tmp);
            if error.kind() == io::ErrorKind::Unsupported {
                return Err(CopyError::Unsupported {
                    path: src.display().to_string(),
                });
            }
            return Err(CopyError::Io {
                path: src.display().to_string(),
                error,
            });
        }
        rename_or_clean(dir, &tmp, name)?;
        if ft.is_file() && md.nlink() > 1 {
            self.links.insert(key, dest_rel.clone());
        }
        self.record(dest_rel, uid, gid);
        Ok(())
    }

    /// [`Self::copy_entry`] when planning: notes the entry (a directory
    /// only if something in it is copied when it is excluded) without
    /// writing anything; the destination is known not to exist.
    #[allow(clippy::too_many_arguments)]
    fn plan_entry(
        &mut self,
        src: &Path,
        src_rel: &str,
        rel: &str,
        target: &Place,
        name: &OsStr,
        excluded: bool,
        md: &std::fs::Metadata,
        (uid, gid): (u32, u32),
    ) -> Result<(), CopyError> {
        let ft = md.file_type();
        if ft.is_socket() {
            return Err(CopyError::Unsupported {
                path: src.display().to_string(),
            });
        }
        let dest_rel = target.rel_of(name);
        let before = self.changed.len();
        if ft.is_dir() {
            self.copy_children(src, src_rel, rel, &Place::Planned(dest_rel.clone()))?;
            if excluded && self.changed.len() == before {
                return Ok(());
            }
        }
        self.record(dest_rel, uid, gid);
        if let (Some(planned), Some(ch)) = (self.planned.as_mut(), self.changed.last()) {
            planned.insert(ch.path.clone(), src.to_path_buf());
        }
        Ok(())
    }

    /// `--parents`: `a/b/./c/d` copies `c/d` (below the pivot) to `dest/c/d`;
    /// without a pivot the whole path is kept.
    fn copy_parents(&mut self, src: &str, dest: &str) -> Result<(), CopyError> {
        let (base, pattern) = match src.split_once("/./") {
            Some((b, p)) => (if b.is_empty() { "/" } else { b }, p),
            None => ("/", src),
        };
        let outside = || CopyError::OutsideContext {
            src: src.to_string(),
        };
        let base_comps = clean_components(base).ok_or_else(outside)?;
        let pat = clean_components(pattern).ok_or_else(outside)?;
        let root = self.req.src_root;
        let base_r = resolve_in_root(root, &base_comps.join("/"), true, Escape::Reject)
            .map_err(|e| src_resolve_err(e, src))?;
        let base_host = base_r.host(root);
        let mut found = Vec::new();
        if pat.iter().any(|c| has_wildcards(c)) {
            walk_matches(&base_host, &pat, &mut Vec::new(), &mut found);
        } else {
            // A named path must exist (its parents may be symlinks, followed).
            let r = resolve_in_root(&base_host, &pat.join("/"), false, Escape::Reject)
                .map_err(|e| src_resolve_err(e, src))?;
            if std::fs::symlink_metadata(r.host(&base_host)).is_err() {
                return Err(CopyError::NotFound {
                    src: src.to_string(),
                });
            }
            found.push(pat.clone());
        }
        if found.is_empty() {
            return Ok(());
        }
        let dest_dir = self.mkdir_all(dest)?;
        let base_rel = base_r.rel_string();
        for m in found {
            let rel = m.join("/");
            let src_rel = if base_rel.is_empty() {
                rel.clone()
            } else {
                format!("{base_rel}/{rel}")
            };
            if self.excludes.matches(&rel) || self.filtered(&src_rel) {
                continue;
            }
            let Some((last, parents)) = m.split_last() else {
                continue;
            };
            // Parent directories below the pivot take their source's metadata.
            let mut s = base_host.clone();
            let mut cur = dest_dir.try_clone().map_err(root_err(dest))?;
            for comp in parents {
                s.push(comp);
                let c = OsStr::new(comp);
                let t_rel = cur.rel_of(c);
                let smd = std::fs::metadata(&s).map_err(io_err(&s))?;
                match cur.lstat(c).map_err(root_err(&t_rel))? {
                    Some(t) if t.is_dir() => {}
                    Some(_) => return Err(CopyError::NotADirectory { path: t_rel }),
                    None => {
                        cur.mkdir(c, PARENT_DIR_PERM).map_err(root_err(&t_rel))?;
                        let (uid, gid) = self.owner_for(Some(&smd));
                        let meta = Meta {
                            uid,
                            gid,
                            perm: self.perm_for(smd.mode(), true),
                            mtime: Some(mtime_of(&smd)),
                            atime: Some(atime_of(&smd)),
                        };
                        self.deferred.push((t_rel.clone(), meta, Some(s.clone())));
                        self.record(t_rel.clone(), uid, gid);
                    }
                }
                cur = cur.subdir(c).map_err(root_err(&t_rel))?;
            }
            let src_host = base_host.join(&rel);
            self.copy_entry(
                &src_host,
                &src_rel,
                &rel,
                &Place::Open(cur),
                OsStr::new(last),
                true,
            )?;
        }
        Ok(())
    }

    /// Applies metadata of directories created before their contents.
    fn finish_deferred(&mut self) -> Result<(), CopyError> {
        while let Some((rel, meta, src)) = self.deferred.pop() {
            let (dir, name) = self.at(&rel)?;
            apply_meta_at(&dir, &name, &meta, false).map_err(root_err(&rel))?;
            if let Some(src) = src {
                copy_xattrs_at(&src, &dir, &name);
            }
        }
        Ok(())
    }

    fn write_heredoc(
        &mut self,
        name: &str,
        body: &str,
        dest: &str,
        dest_is_dir: bool,
    ) -> Result<(), CopyError> {
        let base = name.rsplit('/').next().unwrap_or(name).to_string();
        let (dir, file) = self.file_target(&base, dest, dest_is_dir)?;
        let dest_rel = dir.rel_of(&file);
        clear_non_dir(&dir, &file, &dest_rel)?;
        let (uid, gid) = self.chown.unwrap_or((0, 0));
        let meta = Meta {
            uid,
            gid,
            perm: self.perm_for(0o100644, false),
            mtime: Some(now()),
            atime: None,
        };
        let tmp = temp_name();
        let made = (|| -> io::Result<()> {
            let mut f = dir.create_file(&tmp, 0o600)?;
            io::Write::write_all(&mut f, body.as_bytes())?;
            apply_meta_fd(&f, &meta)
        })();
        if let Err(error) = made {
            let _ = dir.remove_all(&tmp);
            return Err(CopyError::Io {
                path: format!("/{dest_rel}"),
                error,
            });
        }
        rename_or_clean(&dir, &tmp, &file)?;
        self.record(dest_rel, uid, gid);
        Ok(())
    }

    fn add_url(
        &mut self,
        url: &str,
        add: &AddOptions,
        dest: &str,
        dest_is_dir: bool,
    ) -> Result<(), CopyError> {
        let expected = match &add.checksum {
            Some(sum) => Some(parse_checksum(sum)?),
            None => None,
        };
        // Download into a new file at the top of the stage root (same
        // filesystem, so the final rename is atomic; created exclusively,
        // so nothing the stage holds is followed); nothing is visible at
        // the destination until verified.
        let tmp = tempfile::Builder::new()
            .prefix(".kiln-fetch-")
            .tempfile_in(self.req.dest_root)
            .map_err(io_err(self.req.dest_root))?;
        let fetched = add.http.fetch(url, tmp.path())?;
        if let Some(expected) = expected {
            if expected != fetched.sha256 {
                return Err(CopyError::ChecksumMismatch {
                    url: url.to_string(),
                    expected: format!("sha256:{expected}"),
                    actual: format!("sha256:{}", fetched.sha256),
                });
            }
        }
        if add.unpack == Some(true)
            && crate::unpack::detect_archive(tmp.path())
                .map_err(|error| CopyError::Unpack {
                    archive: url.to_string(),
                    error,
                })?
                .is_some()
        {
            return self.unpack_into(tmp.path(), url, dest);
        }
        let (dir, file) = self.file_target(&fetched.file_name, dest, dest_is_dir)?;
        let dest_rel = dir.rel_of(&file);
        clear_non_dir(&dir, &file, &dest_rel)?;
        let (uid, gid) = self.chown.unwrap_or((0, 0));
        let meta = Meta {
            uid,
            gid,
            perm: self.perm_for(0o100600, false),
            mtime: Some(fetched.last_modified.map(|s| (s, 0)).unwrap_or_else(now)),
            atime: None,
        };
        let io_dest = |error| CopyError::Io {
            path: format!("/{dest_rel}"),
            error,
        };
        apply_meta_fd(tmp.as_file(), &meta).map_err(io_dest)?;
        let tmp_name = tmp
            .path()
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default();
        let top = self.root.top().map_err(root_err("/"))?;
        // Renamed through descriptors; only then is the temporary name kept
        // from being removed (it no longer exists).
        let tmp = tmp.into_temp_path();
        top.rename(&tmp_name, &dir, &file)
            .map_err(root_err(&dest_rel))?;
        let _ = tmp.keep();
        self.record(dest_rel, uid, gid);
        Ok(())
    }
}

/// Finds the entries a source names: one path, or the matches of a
/// wildcard (sorted). Named paths must exist.
fn resolve_sources_in(
    root: &Path,
    src_filter: Option<&PatternSet>,
    src: &str,
) -> Result<Vec<Source>, CopyError> {
    let filtered = |rel: &str| match src_filter {
        Some(f) => !rel.is_empty() && f.matches(rel),
        None => false,
    };
    let comps = clean_components(src).ok_or_else(|| CopyError::OutsideContext {
        src: src.to_string(),
    })?;
    let Some(first_wild) = comps.iter().position(|c| has_wildcards(c)) else {
        let path = comps.join("/");
        let r = resolve_in_root(root, &path, true, Escape::Reject)
            .map_err(|e| src_resolve_err(e, src))?;
        let host = r.host(root);
        let rel = r.rel_string();
        if std::fs::symlink_metadata(&host).is_err() || filtered(&rel) || filtered(&path) {
            return Err(CopyError::NotFound {
                src: src.to_string(),
            });
        }
        let name = comps.last().cloned().unwrap_or_default();
        return Ok(vec![Source {
            host,
            rel,
            name,
            match_rel: None,
        }]);
    };
    let base = comps.get(..first_wild).unwrap_or(&[]).join("/");
    let base_r =
        resolve_in_root(root, &base, true, Escape::Reject).map_err(|e| src_resolve_err(e, src))?;
    let pattern = comps.get(first_wild..).unwrap_or(&[]);
    let mut found = Vec::new();
    walk_matches(&base_r.host(root), pattern, &mut Vec::new(), &mut found);
    let mut out = Vec::new();
    for m in found {
        let written = if base.is_empty() {
            m.join("/")
        } else {
            format!("{}/{}", base_r.rel_string(), m.join("/"))
        };
        let r = resolve_in_root(root, &written, true, Escape::Reject)
            .map_err(|e| src_resolve_err(e, src))?;
        let host = r.host(root);
        let rel = r.rel_string();
        if std::fs::symlink_metadata(&host).is_err() || filtered(&written) {
            continue;
        }
        out.push(Source {
            host,
            rel,
            name: m.last().cloned().unwrap_or_default(),
            match_rel: Some(m.join("/")),
        });
    }
    Ok(out)
}

/// The context paths (relative, `/`-separated, symlinks resolved inside
/// the root) that a COPY/ADD source names, for cache keys: what
/// [`copy`] would read, after `.dockerignore`. URL sources name none.
pub fn source_paths(
    root: &Path,
    src_filter: Option<&PatternSet>,
    src: &str,
) -> Result<Vec<String>, CopyError> {
    if is_http(src) || is_git(src) {
        return Ok(Vec::new());
    }
    Ok(resolve_sources_in(root, src_filter, src)?
        .into_iter()
        .map(|s| s.rel)
        .collect())
}

/// Whether a source is a URL (ADD fetches it; its content is known only
/// after the fetch).
pub fn is_remote_source(src: &str) -> bool {
    is_http(src) || is_git(src)
}

/// Walks `dir` for entries whose path below it matches `pattern` component
/// by component; a matching directory is not descended into. Symlinked
/// directories are not descended either.
fn walk_matches(
    dir: &Path,
    pattern: &[String],
    prefix: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    let Some((first, rest)) = pattern.split_first() else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(String, bool)> = rd
        .filter_map(|e| e.ok())
        .map(|e| {
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            (e.file_name().to_string_lossy().into_owned(), is_dir)
        })
        .collect();
    entries.sort();
    for (name, is_dir) in entries {
        let matched = if has_wildcards(first) {
            match_component(first, &name)
        } else {
            glob::unescape(first) == name
        };
        if !matched {
            continue;
        }
        prefix.push(name.clone());
        if rest.is_empty() {
            out.push(prefix.clone());
        } else if is_dir {
            walk_matches(&dir.join(&name), rest, prefix, out);
        }
        prefix.pop();
    }
}

/// Renames the new entry `tmp` over `name` in `dir`, removing `tmp` when
/// that fails.
fn rename_or_clean(dir: &Dir, tmp: &OsStr, name: &OsStr) -> Result<(), CopyError> {
    if let Err(e) = dir.rename(tmp, dir, name) {
        let _ = dir.remove_all(tmp);
        return Err(root_err(&dir.rel_of(name))(e));
    }
    Ok(())
}

/// Removes whatever non-directory is at `name` in `dir` (never following
/// it) so that a new entry can take its place; a directory there is an
/// error.
fn clear_non_dir(dir: &Dir, name: &OsStr, dest_rel: &str) -> Result<(), CopyError> {
    match dir.lstat(name).map_err(root_err(dest_rel))? {
        Some(st) if st.is_dir() => Err(CopyError::CannotReplaceDir {
            path: dest_rel.to_string(),
        }),
        Some(_) => dir.remove_all(name).map_err(root_err(dest_rel)),
        None => Ok(()),
    }
}

/// A new entry's temporary name, unique in this process, in the directory
/// it is renamed in (so the rename is atomic).
fn temp_name() -> OsString {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    OsString::from(format!(".kiln-tmp-{}-{n}", std::process::id()))
}

fn parent_of(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((p, _)) => p.to_string(),
    }
}

fn resolve_err(e: ResolveError, path: &str) -> CopyError {
    match e {
        ResolveError::Escapes => CopyError::OutsideContext {
            src: path.to_string(),
        },
        ResolveError::TooManyLinks => CopyError::TooManyLinks {
            src: path.to_string(),
        },
        ResolveError::Io(error) => CopyError::Io {
            path: path.to_string(),
            error,
        },
    }
}

fn src_resolve_err(e: ResolveError, src: &str) -> CopyError {
    resolve_err(e, src)
}

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
