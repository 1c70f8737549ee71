//! Layer extraction onto a root filesystem directory: whiteouts and opaque dirs, hard
//! and symbolic links, devices, fifos, xattrs, ownership, modes and mtimes. Every write
//! goes through [`crate::root::Root`]: parent paths are resolved inside the destination
//! (symlinks followed as if `dest` were `/`), the final component is never followed, and
//! metadata is set through descriptors, so no entry reaches outside `dest`. Directory
//! metadata is applied after the layer (children change a directory's mtime) and is
//! forgotten as soon as a later entry replaces or removes that directory.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::layer::{EntryKind, LayerEntry, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::root::{Dir, NewDir, Protection, Root, RootError};
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

struct DeferredDir {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
}

struct Ctx<'a> {
    root: Root,
    opts: &'a ApplyOptions,
    /// Paths (below the root) this layer wrote: an opaque directory keeps only these.
    created: HashSet<String>,
    /// Directory metadata applied after the layer, keyed by path below the root; an
    /// entry is dropped as soon as a later entry replaces or removes that path, so it
    /// can never land on whatever stands there at the end.
    dirs: BTreeMap<String, DeferredDir>,
    /// Directories made owner-writable so a non-root user can fill them: (path, mode).
    widened: Vec<(String, u32)>,
    is_root: bool,
    tracker: Option<&'a mut Tracker>,
}

impl From<RootError> for Error {
    fn from(e: RootError) -> Self {
        match e {
            RootError::Io { op, path, source } => Error::Io {
                context: format!("{op} {path}"),
                source,
            },
            other => Error::UnsafeEntry {
                path: other.path().to_string(),
                reason: other.to_string(),
            },
        }
    }
}

pub(crate) fn apply_inner(
    store: &BlobStore,
    layer: &Digest,
    dest: &Path,
    opts: &ApplyOptions,
    tracker: Option<&mut Tracker>,
) -> Result<()> {
    fs::create_dir_all(dest).ctx(|| format!("create {}", dest.display()))?;
    let mut archive = tar::Archive::new(crate::blobread::open_layer(store, layer)?);
    let mut cx = Ctx {
        root: Root::open(dest)?.protecting(opts.protected.clone()),
        opts,
        created: HashSet::new(),
        dirs: BTreeMap::new(),
        widened: Vec::new(),
        is_root: rustix::process::geteuid().is_root(),
        tracker,
    };
    let entries = archive.entries().ctx(|| format!("read layer {layer}"))?;
    for entry in entries {
        let mut entry = entry.ctx(|| format!("read layer {layer}"))?;
        match extract_one(&mut cx, &mut entry) {
            // An entry that would need a directory made inside a protected path.
            Err(Error::UnsafeEntry { reason, .. }) if reason.ends_with("is protected") => {}
            r => r?,
        }
    }
    // Directory modes, owners and mtimes last (children change a dir's mtime), deepest
    // first; each found again from the root, and only if it is still a directory.
    for (rel, mode) in std::mem::take(&mut cx.widened).iter().rev() {
        if let Some(r) = cx.root.dir(rel, None)? {
            r.dir.chmod_self(*mode)?;
        }
    }
    let dirs = std::mem::take(&mut cx.dirs);
    for (rel, d) in dirs.iter().rev() {
        let Some((p, name)) = cx.root.parent(rel, None)? else {
            continue;
        };
        if p.dir.lstat(&name)?.is_some_and(|s| s.is_dir()) {
            finish_meta(&cx, &p.dir, &name, d.mode, d.uid, d.gid, d.mtime, false)?;
        }
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

/// Drops what kiln remembers of `rel` and everything below it: deferred directory
/// metadata and tracked entries. Called whenever a path is replaced or removed.
fn forget(cx: &mut Ctx<'_>, rel: &str) {
    let prefix = format!("{rel}/");
    let below = |m: &BTreeMap<String, _>| -> Vec<String> {
        m.range(prefix.clone()..)
            .take_while(|(k, _): &(&String, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect()
    };
    cx.dirs.remove(rel);
    for k in below(&cx.dirs) {
        cx.dirs.remove(&k);
    }
    if let Some(t) = cx.tracker.as_deref_mut() {
        t.remove(rel);
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

/// Removes whatever is at `name` in `dir`, sparing protected paths: an ancestor of one
/// keeps itself and its protected descendants, losing everything else.
fn remove_guarded(cx: &mut Ctx<'_>, dir: &Dir, name: &OsStr) -> Result<()> {
    let rel = dir.rel_of(name);
    match cx.root.protection(&rel) {
        Protection::Free => {
            dir.remove_all(name)?;
            forget(cx, &rel);
        }
        Protection::Inside => {}
        Protection::Ancestor => match dir.lstat(name)? {
            Some(st) if st.is_dir() => {
                let sub = dir.subdir(name)?;
                for child in sub.names()? {
                    remove_guarded(cx, &sub, &child)?;
                }
            }
            Some(_) => {
                dir.remove_all(name)?;
                forget(cx, &rel);
            }
            None => {}
        },
    }
    Ok(())
}

/// Removes everything under `dir` that this layer did not create.
fn prune(cx: &mut Ctx<'_>, dir: &Dir) -> Result<()> {
    let mut children = dir.names()?;
    children.sort();
    for c in children {
        if cx.created.contains(&dir.rel_of(&c)) {
            if dir.lstat(&c)?.is_some_and(|s| s.is_dir()) {
                let sub = dir.subdir(&c)?;
                prune(cx, &sub)?;
            }
        } else {
            remove_guarded(cx, dir, &c)?;
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
    let parent_path = parent.join("/");

    if name == OPAQUE_MARKER {
        let Some(r) = cx.root.dir(&parent_path, Some(NewDir::default()))? else {
            return Ok(());
        };
        if cx.root.protection(&r.dir.rel()) == Protection::Inside {
            return Ok(());
        }
        cx.created.insert(r.dir.rel());
        ensure_writable(cx, &r.dir)?;
        return prune(cx, &r.dir);
    }
    if let Some(victim) = name.strip_prefix(WHITEOUT_PREFIX) {
        if victim.is_empty() || victim == "." || victim == ".." || victim.contains('/') {
            return Err(unsafe_entry(&raw, "invalid whiteout name"));
        }
        if let Some(r) = cx.root.dir(&parent_path, None)? {
            ensure_writable(cx, &r.dir)?;
            remove_guarded(cx, &r.dir, OsStr::new(victim))?;
        }
        return Ok(());
    }

    let dir = match cx.root.dir(&parent_path, Some(NewDir::default()))? {
        Some(r) => r.dir,
        None => cx.root.top()?,
    };
    let oname = OsStr::new(name.as_str());
    let rel = dir.rel_of(oname);
    // Protection is judged on the resolved path: a symlink planted by the layer
    // cannot lead an entry into a protected directory.
    match cx.root.protection(&rel) {
        Protection::Inside => return Ok(()),
        // Only a directory can stand where a protected path's parent is.
        Protection::Ancestor if kind != tar::EntryType::Directory => return Ok(()),
        _ => {}
    }
    ensure_writable(cx, &dir)?;
    let existing = dir.lstat(oname)?;
    let export = cx.tracker.is_some();
    let host = cx.root.path().join(&rel);
    let record = |cx: &mut Ctx<'_>, k: EntryKind| {
        if let Some(t) = cx.tracker.as_deref_mut() {
            t.insert(
                rel.clone(),
                LayerEntry {
                    path: rel.clone(),
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
            if !existing.is_some_and(|m| m.is_dir()) {
                remove_guarded(cx, &dir, oname)?;
                dir.mkdir(oname, 0o700)?;
            }
            set_xattrs(&dir, oname, &xattrs);
            cx.dirs.insert(
                rel.clone(),
                DeferredDir {
                    mode: if export { mode | 0o700 } else { mode },
                    uid,
                    gid,
                    mtime,
                },
            );
            record(cx, EntryKind::Dir);
        }
        T::Regular | T::Continuous | T::GNUSparse => {
            remove_guarded(cx, &dir, oname)?;
            let mut f = dir.create_file(oname, 0o600)?;
            let size = io::copy(entry, &mut f).ctx(|| format!("write {}", host.display()))?;
            drop(f);
            let m = if export { mode | 0o600 } else { mode };
            finish_meta(cx, &dir, oname, m, uid, gid, mtime, false)?;
            // After the chown: the kernel drops security.capability on
            // every chown, so file capabilities must be set last.
            set_xattrs(&dir, oname, &xattrs);
            record(cx, EntryKind::File { source: host, size });
        }
        T::Symlink => {
            let target = entry
                .link_name()
                .ctx(|| "read link target")?
                .ok_or_else(|| unsafe_entry(&raw, "symlink without target"))?
                .into_owned();
            remove_guarded(cx, &dir, oname)?;
            dir.symlink(oname, target.as_os_str())?;
            finish_meta(cx, &dir, oname, mode, uid, gid, mtime, true)?;
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
            let tdir = cx
                .root
                .dir(&tparent.join("/"), None)?
                .ok_or_else(|| unsafe_entry(&raw, "hardlink target does not exist"))?
                .dir;
            let tname = OsStr::new(tname.as_str());
            let trel = tdir.rel_of(tname);
            if trel == rel {
                return Ok(());
            }
            if cx.root.protection(&trel) == Protection::Inside {
                tracing::warn!(path = %raw.display(), target = %trel, "skipping hardlink to a protected path");
                return Ok(());
            }
            remove_guarded(cx, &dir, oname)?;
            dir.link_from(oname, &tdir, tname)?;
            record(cx, EntryKind::Hardlink { target: trel });
        }
        T::Char | T::Block | T::Fifo => {
            remove_guarded(cx, &dir, oname)?;
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
            match dir.mknod(oname, ft, 0o600, rustix::fs::makedev(major, minor)) {
                Ok(()) => finish_meta(cx, &dir, oname, mode, uid, gid, mtime, false)?,
                Err(RootError::Io { source, .. })
                    if source.kind() == io::ErrorKind::PermissionDenied =>
                {
                    tracing::warn!(path = %raw.display(), "skipping device node: not permitted");
                }
                Err(e) => return Err(e.into()),
            }
            record(cx, k);
        }
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => return Ok(()),
        other => {
            tracing::warn!(path = %raw.display(), kind = ?other, "skipping unsupported tar entry type");
            return Ok(());
        }
    }
    cx.created.insert(rel);
    Ok(())
}

/// Without root, a directory a lower layer made read-only (e.g. `0555`) cannot take new
/// entries: make it owner-writable for the duration of this layer.
fn ensure_writable(cx: &mut Ctx<'_>, dir: &Dir) -> Result<()> {
    if cx.is_root {
        return Ok(());
    }
    let mode = dir.stat_self()?.mode;
    let rel = dir.rel();
    if mode & 0o300 != 0o300 && !cx.widened.iter().any(|(p, _)| *p == rel) {
        dir.chmod_self(mode | 0o700)?;
        cx.widened.push((rel, mode));
    }
    Ok(())
}

fn set_xattrs(dir: &Dir, name: &OsStr, xattrs: &[(String, Vec<u8>)]) {
    for (k, v) in xattrs {
        if let Err(e) = dir.set_xattr(name, k, v) {
            tracing::warn!(error = %e, xattr = %k, "could not set xattr");
        }
    }
}

/// Ownership (when permitted), then mode (chown clears setuid), then mtime; all through
/// the directory's descriptor, never following `name`.
#[allow(clippy::too_many_arguments)]
fn finish_meta(
    cx: &Ctx<'_>,
    dir: &Dir,
    name: &OsStr,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    symlink: bool,
) -> Result<()> {
    if cx.opts.same_owner {
        let p = Path::new(name);
        let u = u32::try_from(uid).map_err(|_| unsafe_entry(p, "uid out of range"))?;
        let g = u32::try_from(gid).map_err(|_| unsafe_entry(p, "gid out of range"))?;
        dir.chown(name, u, g)?;
    }
    if !symlink {
        dir.chmod(name, mode)?;
    }
    dir.set_times(name, (mtime, 0), (mtime, 0))?;
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

    /// A raw tar (entries in the given order, names unchecked) as a stored layer.
    fn raw_layer(store: &BlobStore, entries: &[(&str, tar::EntryType, u32, &str)]) -> Digest {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, mode, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_size(0);
            h.set_mtime(1);
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                if !link.is_empty() {
                    gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
                }
            }
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        }
        store.put_bytes(&b.into_inner().unwrap()).unwrap()
    }

    fn canary(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let f = dir.join("canary-file");
        let d = dir.join("canary-dir");
        fs::write(&f, b"keep").unwrap();
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();
        (f, d)
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_keeps_its_metadata_to_itself() {
        use tar::EntryType as T;
        let t = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&t.path().join("s")).unwrap();
        let (f, d) = canary(t.path());
        let (fs_, ds) = (f.display().to_string(), d.display().to_string());
        let layer = raw_layer(
            &store,
            &[
                ("a", T::Directory, 0o6777, ""),
                ("a", T::Symlink, 0o777, &fs_),
                ("b", T::Directory, 0o777, ""),
                ("b", T::Symlink, 0o777, &ds),
            ],
        );
        let root = t.path().join("root");
        apply_layer(&store, &layer, &root, &ApplyOptions::default()).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o7777, 0o750);
        assert_ne!(fs::metadata(&f).unwrap().mtime(), 1);
        assert!(fs::symlink_metadata(root.join("a")).unwrap().is_symlink());
    }

    #[test]
    fn a_protected_path_is_judged_after_symlinks_are_resolved() {
        use tar::EntryType as T;
        let t = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&t.path().join("s")).unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("kiln")).unwrap();
        fs::write(root.join("kiln/keep"), b"keep").unwrap();
        let layer = raw_layer(
            &store,
            &[
                ("kl", T::Symlink, 0o777, "/kiln"),
                ("kl/x", T::Regular, 0o755, ""),
                ("kl/sub/", T::Directory, 0o755, ""),
                ("kl/.wh.keep", T::Regular, 0o644, ""),
                ("up", T::Symlink, 0o777, "../../kiln"),
                ("up/y", T::Regular, 0o755, ""),
            ],
        );
        let opts = ApplyOptions {
            same_owner: false,
            protected: vec!["kiln".into()],
        };
        apply_layer(&store, &layer, &root, &opts).unwrap();
        let mut names: Vec<_> = fs::read_dir(root.join("kiln"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec![std::ffi::OsString::from("keep")]);
    }
}
