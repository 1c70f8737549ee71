//! Layer extraction onto a root filesystem directory: whiteouts and opaque dirs, hard
//! and symbolic links, devices, fifos, xattrs, ownership, modes and mtimes, with every
//! path resolved inside the destination (symlinks in parent paths are resolved as if
//! `dest` were `/`; the final component is never followed), so no entry escapes `dest`.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::layer::{EntryKind, LayerEntry, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::store::BlobStore;

/// How to extract a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Apply uid/gid from the tar (needs root / CAP_CHOWN).
    pub same_owner: bool,
    /// Paths (relative to the destination, `/`-separated) that applying
    /// must leave alone: nothing is written at or below them, and
    /// deletions (whiteouts, opaque directories, replacements) spare them
    /// and the directories that lead to them. An in-place build protects
    /// mount points, `/proc` and kiln's own files this way.
    pub protected: Vec<String>,
}

impl Default for ApplyOptions {
    /// `same_owner` when running as root.
    fn default() -> Self {
        ApplyOptions {
            same_owner: rustix::process::geteuid().is_root(),
            protected: Vec::new(),
        }
    }
}

/// Extracts the layer blob `layer` (gzip, zstd or plain tar, detected by magic bytes)
/// onto `dest`.
pub fn apply_layer(
    store: &BlobStore,
    layer: &Digest,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<()> {
    apply_inner(store, layer, dest, opts, None)
}

/// Metadata of the merged filesystem, kept while flattening layers into one tar: path
/// relative to the root → entry (files point at their extracted copy).
pub(crate) type Tracker = BTreeMap<String, LayerEntry>;

/// Opens a layer blob with decompression chosen by its magic bytes.
pub(crate) fn open_layer(store: &BlobStore, layer: &Digest) -> Result<Box<dyn Read>> {
    let f = store.open_blob(layer)?;
    let mut r = BufReader::with_capacity(256 * 1024, f);
    let head = r.fill_buf().ctx(|| format!("read layer {layer}"))?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        read_ahead(Box::new(flate2::read::MultiGzDecoder::new(r)))
            .ctx(|| format!("decompress layer {layer}"))?
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = zstd::Decoder::with_buffer(r).ctx(|| format!("open zstd layer {layer}"))?;
        read_ahead(Box::new(d)).ctx(|| format!("decompress layer {layer}"))?
    } else {
        Box::new(r)
    })
}

/// How far [`read_ahead`] decompresses ahead of its reader.
const AHEAD_CHUNK: usize = 256 * 1024;
const AHEAD_CHUNKS: usize = 8;

/// Decompresses `inner` on a thread of its own, a few chunks ahead of the
/// reader: extracting a layer is bound by file creation and decompressing
/// it by CPU, so the two overlap on a second core. (Written here: it is a
/// channel and a loop; the crates that offer it bring an async runtime.)
fn read_ahead(mut inner: Box<dyn Read + Send>) -> io::Result<Box<dyn Read>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(AHEAD_CHUNKS);
    std::thread::Builder::new()
        .name("kiln-inflate".into())
        .spawn(move || loop {
            let mut chunk = vec![0u8; AHEAD_CHUNK];
            let mut filled = 0;
            while filled < chunk.len() {
                match inner.read(&mut chunk[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            chunk.truncate(filled);
            let end = filled == 0;
            // An empty chunk marks the end; a reader that went away (an
            // extraction that failed) ends the thread.
            if tx.send(Ok(chunk)).is_err() || end {
                return;
            }
        })?;
    Ok(Box::new(ReadAhead {
        rx,
        chunk: Vec::new(),
        pos: 0,
        ended: false,
        failed: false,
    }))
}

/// The reading end of [`read_ahead`].
struct ReadAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    /// The end mark came.
    ended: bool,
    /// Decompressing failed: every read fails from then on.
    failed: bool,
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.failed {
                return Err(io::Error::other("the layer could not be decompressed"));
            }
            if self.ended || out.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.ended = chunk.is_empty();
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                // Gone without the end mark: never a silent truncation.
                Err(_) => {
                    self.failed = true;
                    return Err(io::Error::other("the layer decompressor stopped"));
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct DeferredDir {
    path: PathBuf,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
}

struct Ctx<'a> {
    dest: &'a Path,
    opts: &'a ApplyOptions,
    created: HashSet<PathBuf>,
    dirs: Vec<DeferredDir>,
    /// Directories made owner-writable so a non-root user can fill them: (path, mode).
    widened: Vec<(PathBuf, u32)>,
    root: bool,
    tracker: Option<&'a mut Tracker>,
}

pub(crate) fn apply_inner(
    store: &BlobStore,
    layer: &Digest,
    dest: &Path,
    opts: &ApplyOptions,
    tracker: Option<&mut Tracker>,
) -> Result<()> {
    fs::create_dir_all(dest).ctx(|| format!("create {}", dest.display()))?;
    let mut archive = tar::Archive::new(open_layer(store, layer)?);
    let mut cx = Ctx {
        dest,
        opts,
        created: HashSet::new(),
        dirs: Vec::new(),
        widened: Vec::new(),
        root: rustix::process::geteuid().is_root(),
        tracker,
    };
    let entries = archive.entries().ctx(|| format!("read layer {layer}"))?;
    for entry in entries {
        let mut entry = entry.ctx(|| format!("read layer {layer}"))?;
        extract_one(&mut cx, &mut entry)?;
    }
    // Directory modes, owners and mtimes last (children change a dir's mtime), deepest first.
    for (p, mode) in std::mem::take(&mut cx.widened).iter().rev() {
        fs::set_permissions(p, fs::Permissions::from_mode(*mode))
            .ctx(|| format!("chmod {}", p.display()))?;
    }
    let dirs = std::mem::take(&mut cx.dirs);
    for d in dirs.iter().rev() {
        finish_meta(&cx, &d.path, d.mode, d.uid, d.gid, d.mtime, false)?;
    }
    Ok(())
}

/// Splits a tar path into clean components; rejects `..` (absolute paths are made relative).
fn components(raw: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(s) => out.push(
                s.to_str()
                    .ok_or_else(|| unsafe_entry(raw, "path is not UTF-8"))?
                    .to_string(),
            ),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry(raw, "path contains '..'")),
            Component::Prefix(_) => return Err(unsafe_entry(raw, "path has a prefix")),
        }
    }
    Ok(out)
}

fn unsafe_entry(p: &Path, reason: &str) -> Error {
    Error::UnsafeEntry {
        path: p.display().to_string(),
        reason: reason.into(),
    }
}

/// Resolves `comps` as a directory inside `root`, following symlinks as if `root` were
/// `/`. Missing directories are created when `create`; returns `None` if one is missing
/// otherwise.
fn resolve_dir(root: &Path, comps: &[String], create: bool) -> Result<Option<PathBuf>> {
    let mut cur: Vec<String> = Vec::new();
    let mut queue: VecDeque<String> = comps.iter().cloned().collect();
    let mut links = 0;
    while let Some(c) = queue.pop_front() {
        if c.is_empty() || c == "." {
            continue;
        }
        if c == ".." {
            cur.pop();
            continue;
        }
        let mut p = root.to_path_buf();
        p.extend(&cur);
        p.push(&c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(unsafe_entry(&p, "too many levels of symbolic links"));
                }
                let target = fs::read_link(&p).ctx(|| format!("readlink {}", p.display()))?;
                if target.is_absolute() {
                    cur.clear();
                }
                let mut next: VecDeque<String> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                next.extend(queue);
                queue = next;
            }
            Ok(m) if m.is_dir() => cur.push(c),
            Ok(_) => {
                return Err(unsafe_entry(
                    &p,
                    "a parent path component is not a directory",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                fs::create_dir(&p).ctx(|| format!("mkdir {}", p.display()))?;
                cur.push(c);
            }
            Err(e) => {
                return Err(Error::Io {
                    context: format!("stat {}", p.display()),
                    source: e,
                })
            }
        }
    }
    let mut p = root.to_path_buf();
    p.extend(&cur);
    Ok(Some(p))
}

/// Removes whatever is at `p` (a directory recursively; symlinks are not followed).
fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).ctx(|| format!("remove {}", p.display())),
        Ok(_) => fs::remove_file(p).ctx(|| format!("remove {}", p.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            context: format!("stat {}", p.display()),
            source: e,
        }),
    }
}

/// How a path relates to the protected ones.
#[derive(Debug, PartialEq, Eq)]
enum Protection {
    Free,
    /// The path is protected, or inside a protected path.
    Inside,
    /// A protected path lies below this one.
    Ancestor,
}

fn protection(cx: &Ctx<'_>, rel: &str) -> Protection {
    let mut out = Protection::Free;
    for p in &cx.opts.protected {
        if rel == p
            || (rel.len() > p.len()
                && rel.starts_with(p.as_str())
                && rel.as_bytes()[p.len()] == b'/')
            || p.is_empty()
        {
            return Protection::Inside;
        }
        if rel.is_empty()
            || (p.len() > rel.len() && p.starts_with(rel) && p.as_bytes()[rel.len()] == b'/')
        {
            out = Protection::Ancestor;
        }
    }
    out
}

/// [`remove_any`] that spares protected paths: an ancestor of one keeps
/// itself and its protected descendants, losing everything else.
fn remove_guarded(cx: &Ctx<'_>, p: &Path) -> Result<()> {
    if cx.opts.protected.is_empty() {
        return remove_any(p);
    }
    match protection(cx, &rel(cx, p)) {
        Protection::Free => remove_any(p),
        Protection::Inside => Ok(()),
        Protection::Ancestor => {
            let rd = match fs::read_dir(p) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("read dir {}", p.display()),
                        source: e,
                    })
                }
            };
            for ent in rd {
                let child = ent.ctx(|| format!("read dir {}", p.display()))?.path();
                remove_guarded(cx, &child)?;
            }
            Ok(())
        }
    }
}

fn rel(cx: &Ctx<'_>, p: &Path) -> String {
    p.strip_prefix(cx.dest)
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn forget(cx: &mut Ctx<'_>, p: &Path) {
    let r = rel(cx, p);
    if let Some(t) = cx.tracker.as_deref_mut() {
        t.remove(&r);
        let prefix = format!("{r}/");
        let doomed: Vec<String> = t
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            t.remove(&k);
        }
    }
}

/// Removes everything under `dir` that this layer did not create.
fn prune(cx: &mut Ctx<'_>, dir: &Path) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Io {
                context: format!("read dir {}", dir.display()),
                source: e,
            })
        }
    };
    let mut children: Vec<PathBuf> = Vec::new();
    for ent in rd {
        children.push(ent.ctx(|| format!("read dir {}", dir.display()))?.path());
    }
    children.sort();
    for c in children {
        if cx.created.contains(&c) {
            if fs::symlink_metadata(&c).is_ok_and(|m| m.is_dir()) {
                prune(cx, &c)?;
            }
        } else {
            remove_guarded(cx, &c)?;
            forget(cx, &c);
        }
    }
    Ok(())
}

fn pax_map<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut m = BTreeMap::new();
    if let Some(exts) = entry.pax_extensions().ctx(|| "read PAX header")? {
        for ext in exts {
            let ext = ext.ctx(|| "read PAX record")?;
            if let Ok(k) = ext.key() {
                m.insert(k.to_string(), ext.value_bytes().to_vec());
            }
        }
    }
    Ok(m)
}

fn pax_num<T: std::str::FromStr>(pax: &BTreeMap<String, Vec<u8>>, key: &str) -> Option<T> {
    let s = std::str::from_utf8(pax.get(key)?).ok()?;
    s.split('.').next()?.parse().ok()
}

fn extract_one<R: Read>(cx: &mut Ctx<'_>, entry: &mut tar::Entry<'_, R>) -> Result<()> {
    let raw = entry.path().ctx(|| "read entry path")?.into_owned();
    let comps = components(&raw)?;
    let Some((name, parent)) = comps.split_last() else {
        return Ok(()); // the root itself ("./")
    };
    let pax = pax_map(entry)?;
    let h = entry.header();
    let kind = h.entry_type();
    let mode = h.mode().ctx(|| format!("mode of {}", raw.display()))? & 0o7777;
    let uid = pax_num(&pax, "uid").unwrap_or(h.uid().unwrap_or(0));
    let gid = pax_num(&pax, "gid").unwrap_or(h.gid().unwrap_or(0));
    let mtime: i64 = pax_num(&pax, "mtime").unwrap_or(h.mtime().unwrap_or(0) as i64);
    let major = h.device_major().ok().flatten().unwrap_or(0);
    let minor = h.device_minor().ok().flatten().unwrap_or(0);
    let xattrs: Vec<(String, Vec<u8>)> = pax
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("SCHILY.xattr.")?.to_string(), v.clone())))
        .collect();

    if !cx.opts.protected.is_empty() && name != OPAQUE_MARKER {
        let target = match name.strip_prefix(WHITEOUT_PREFIX) {
            Some(victim) => {
                let mut t = parent.to_vec();
                t.push(victim.to_string());
                t
            }
            None => comps.clone(),
        };
        match protection(cx, &target.join("/")) {
            Protection::Inside => return Ok(()),
            // Only a directory can stand where a protected path's parent is.
            Protection::Ancestor
                if !name.starts_with(WHITEOUT_PREFIX)
                    && h.entry_type() != tar::EntryType::Directory =>
            {
                return Ok(())
            }
            _ => {}
        }
    }
    if name == OPAQUE_MARKER {
        if protection(cx, &parent.join("/")) == Protection::Inside {
            return Ok(());
        }
        let Some(dir) = resolve_dir(cx.dest, parent, true)? else {
            return Ok(());
        };
        cx.created.insert(dir.clone());
        ensure_writable(cx, &dir)?;
        return prune(cx, &dir);
    }
    if let Some(victim) = name.strip_prefix(WHITEOUT_PREFIX) {
        if victim.is_empty() || victim == "." || victim == ".." || victim.contains('/') {
            return Err(unsafe_entry(&raw, "invalid whiteout name"));
        }
        if let Some(dir) = resolve_dir(cx.dest, parent, false)? {
            ensure_writable(cx, &dir)?;
            let target = dir.join(victim);
            remove_guarded(cx, &target)?;
            forget(cx, &target);
        }
        return Ok(());
    }

    let dir = resolve_dir(cx.dest, parent, true)?.unwrap_or_else(|| cx.dest.to_path_buf());
    ensure_writable(cx, &dir)?;
    let path = dir.join(name);
    let existing = fs::symlink_metadata(&path).ok();
    let export = cx.tracker.is_some();
    let record = |cx: &mut Ctx<'_>, k: EntryKind| {
        let r = rel(cx, &path);
        if let Some(t) = cx.tracker.as_deref_mut() {
            t.insert(
                r.clone(),
                LayerEntry {
                    path: r,
                    kind: k,
                    mode,
                    uid,
                    gid,
                    mtime,
                    xattrs: xattrs.clone(),
                },
            );
        }
    };

    use tar::EntryType as T;
    match kind {
        T::Directory => {
            if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                remove_guarded(cx, &path)?;
                fs::create_dir(&path).ctx(|| format!("mkdir {}", path.display()))?;
            }
            set_xattrs(&path, &xattrs);
            cx.dirs.push(DeferredDir {
                path: path.clone(),
                mode: if export { mode | 0o700 } else { mode },
                uid,
                gid,
                mtime,
            });
            record(cx, EntryKind::Dir);
        }
        T::Regular | T::Continuous | T::GNUSparse => {
            remove_guarded(cx, &path)?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)
                .ctx(|| format!("create {}", path.display()))?;
            let size = io::copy(entry, &mut f).ctx(|| format!("write {}", path.display()))?;
            drop(f);
            let m = if export { mode | 0o600 } else { mode };
            finish_meta(cx, &path, m, uid, gid, mtime, false)?;
            // After the chown: the kernel drops security.capability on
            // every chown, so file capabilities must be set last.
            set_xattrs(&path, &xattrs);
            record(
                cx,
                EntryKind::File {
                    source: path.clone(),
                    size,
                },
            );
        }
        T::Symlink => {
            let target = entry
                .link_name()
                .ctx(|| "read link target")?
                .ok_or_else(|| unsafe_entry(&raw, "symlink without target"))?
                .into_owned();
            remove_guarded(cx, &path)?;
            std::os::unix::fs::symlink(&target, &path)
                .ctx(|| format!("symlink {}", path.display()))?;
            finish_meta(cx, &path, mode, uid, gid, mtime, true)?;
            record(
                cx,
                EntryKind::Symlink {
                    target: target.to_string_lossy().into_owned(),
                },
            );
        }
        T::Link => {
            let target = entry
                .link_name()
                .ctx(|| "read link target")?
                .ok_or_else(|| unsafe_entry(&raw, "hardlink without target"))?
                .into_owned();
            let tcomps = components(&target)?;
            let Some((tname, tparent)) = tcomps.split_last() else {
                return Err(unsafe_entry(&raw, "hardlink to the root"));
            };
            let tdir = resolve_dir(cx.dest, tparent, false)?
                .ok_or_else(|| unsafe_entry(&raw, "hardlink target does not exist"))?;
            let tpath = tdir.join(tname);
            if path == tpath {
                return Ok(());
            }
            remove_guarded(cx, &path)?;
            fs::hard_link(&tpath, &path)
                .ctx(|| format!("link {} to {}", path.display(), tpath.display()))?;
            let trel = rel(cx, &tpath);
            record(cx, EntryKind::Hardlink { target: trel });
        }
        T::Char | T::Block | T::Fifo => {
            remove_guarded(cx, &path)?;
            let (ft, k) = match kind {
                T::Char => (
                    rustix::fs::FileType::CharacterDevice,
                    EntryKind::CharDevice { major, minor },
                ),
                T::Block => (
                    rustix::fs::FileType::BlockDevice,
                    EntryKind::BlockDevice { major, minor },
                ),
                _ => (rustix::fs::FileType::Fifo, EntryKind::Fifo),
            };
            match rustix::fs::mknodat(
                CWD,
                &path,
                ft,
                rustix::fs::Mode::from_raw_mode(0o600),
                rustix::fs::makedev(major, minor),
            ) {
                Ok(()) => finish_meta(cx, &path, mode, uid, gid, mtime, false)?,
                Err(e) if e == rustix::io::Errno::PERM || e == rustix::io::Errno::ACCESS => {
                    tracing::warn!(path = %path.display(), "skipping device node: not permitted");
                }
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("mknod {}", path.display()),
                        source: e.into(),
                    })
                }
            }
            record(cx, k);
        }
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
        other => {
            tracing::warn!(path = %raw.display(), kind = ?other, "skipping unsupported tar entry type");
        }
    }
    cx.created.insert(path);
    Ok(())
}

/// Without root, a directory a lower layer made read-only (e.g. `0555`) cannot take new
/// entries: make it owner-writable for the duration of this layer.
fn ensure_writable(cx: &mut Ctx<'_>, dir: &Path) -> Result<()> {
    if cx.root {
        return Ok(());
    }
    let m = fs::symlink_metadata(dir).ctx(|| format!("stat {}", dir.display()))?;
    let mode = m.permissions().mode() & 0o7777;
    if mode & 0o300 != 0o300 && !cx.widened.iter().any(|(p, _)| p == dir) {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700))
            .ctx(|| format!("chmod {}", dir.display()))?;
        cx.widened.push((dir.to_path_buf(), mode));
    }
    Ok(())
}

fn set_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) {
    for (k, v) in xattrs {
        if let Err(e) = rustix::fs::lsetxattr(path, k.as_str(), v, rustix::fs::XattrFlags::empty())
        {
            tracing::warn!(path = %path.display(), xattr = %k, error = %e, "could not set xattr");
        }
    }
}

/// Ownership (when permitted), then mode (chown clears setuid), then mtime.
fn finish_meta(
    cx: &Ctx<'_>,
    path: &Path,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    symlink: bool,
) -> Result<()> {
    if cx.opts.same_owner {
        let u = u32::try_from(uid).map_err(|_| unsafe_entry(path, "uid out of range"))?;
        let g = u32::try_from(gid).map_err(|_| unsafe_entry(path, "gid out of range"))?;
        rustix::fs::chownat(
            CWD,
            path,
            Some(rustix::fs::Uid::from_raw(u)),
            Some(rustix::fs::Gid::from_raw(g)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .ctx(|| format!("chown {}", path.display()))?;
    }
    if !symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .ctx(|| format!("chmod {}", path.display()))?;
    }
    let ts = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .ctx(|| format!("set mtime of {}", path.display()))?;
    Ok(())
}

/// Whether two paths are the same inode (used when flattening hardlinks).
pub(crate) fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).expect("compress");
        enc.finish().expect("compress")
    }

    /// Bytes that do not repeat, across `chunks` read-ahead chunks and a
    /// part of one.
    fn sample(chunks: usize) -> Vec<u8> {
        (0..(chunks * AHEAD_CHUNK + 12345) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn read_ahead_yields_the_whole_stream_in_order() {
        let data = sample(3);
        let z = gzip(&data);
        let mut r =
            read_ahead(Box::new(flate2::read::GzDecoder::new(io::Cursor::new(z)))).expect("thread");
        let mut out = Vec::new();
        // Odd-sized reads cross the chunk boundaries.
        let mut buf = [0u8; 7777];
        loop {
            let n = r.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out.len(), data.len());
        assert!(out == data, "the stream came out changed");
        assert_eq!(r.read(&mut buf).expect("read after the end"), 0);
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_a_short_read() {
        let data = sample(3);
        let z = gzip(&data);
        let cut = z[..z.len() / 2].to_vec();
        let mut r = read_ahead(Box::new(flate2::read::GzDecoder::new(io::Cursor::new(cut))))
            .expect("thread");
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).expect_err("a cut stream must fail");
        assert!(out.len() < data.len());
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        // And it keeps failing: a second read does not look like the end.
        assert!(r.read(&mut [0u8; 16]).is_err());
    }

    /// A source that reports when the decompressing thread drops it.
    struct Watched<R>(R, std::sync::mpsc::Sender<()>);
    impl<R: Read> Read for Watched<R> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.0.read(b)
        }
    }
    impl<R> Drop for Watched<R> {
        fn drop(&mut self) {
            let _ = self.1.send(());
        }
    }

    #[test]
    fn a_reader_that_stops_early_lets_the_thread_end() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // A stream without end: only the reader going away stops the thread.
        let src = Watched(io::repeat(7), done_tx);
        let mut r = read_ahead(Box::new(src)).expect("thread");
        let mut first = [0u8; 10];
        r.read_exact(&mut first).expect("read");
        assert_eq!(first, [7u8; 10]);
        drop(r);
        done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the decompressing thread ended");
    }

    #[test]
    fn a_thread_that_dies_is_an_error_not_the_end() {
        /// Gives a few bytes, then panics.
        struct Dies(usize);
        impl Read for Dies {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    panic!("decoder bug");
                }
                let n = b.len().min(self.0);
                b[..n].fill(1);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut r = read_ahead(Box::new(Dies(1000))).expect("thread");
        let mut out = Vec::new();
        let err = r
            .read_to_end(&mut out)
            .expect_err("a dead thread must fail the read");
        assert!(err.to_string().contains("stopped"), "{err}");
        assert!(r.read(&mut [0u8; 4]).is_err());
    }
}
