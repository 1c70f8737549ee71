//! Reading an overlay upper dir: [`upper_changes`] turns it into layer
//! entries, [`merge_upper`] applies it onto the stage rootfs.
//!
//! Both walk only the upper dir, so their cost follows the size of the change,
//! never the size of the lower. Overlay metadata is recognised in both the
//! privileged (`trusted.overlay.*`) and the user-namespace (`user.overlay.*`,
//! `userxattr`) spelling: whiteouts are 0/0 character devices, opaque
//! directories carry `overlay.opaque = "y"`. Overlay's own xattrs never reach
//! a layer or the rootfs.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_image::root::{Dir, Root, RootError};
use kiln_image::{EntryKind, LayerEntry};
use nix::sys::stat::{major, minor};
use rustix::fs::{AtFlags, FileType};

use crate::error::{IoContext, Result, SandboxError};
use crate::idmap::IdMap;

const OVERLAY_XATTR_PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];
const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// Whether `path` is an overlay whiteout (a 0/0 character device).
fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Whether the directory at `path` is marked opaque.
pub(crate) fn is_opaque(path: &Path) -> bool {
    OPAQUE_XATTRS.iter().any(|name| {
        let mut buf = [0u8; 4];
        matches!(rustix::fs::lgetxattr(path, *name, &mut buf), Ok(1) if buf.first() == Some(&b'y'))
    })
}

/// All xattrs of `path` (not followed) except overlay's own, sorted by name.
pub(crate) fn xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let names = list_xattrs(path)?;
    let mut out = Vec::new();
    for name in names {
        if OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let mut size = 256;
        loop {
            let mut buf = vec![0u8; size];
            match rustix::fs::lgetxattr(path, name.as_str(), &mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    out.push((name, buf));
                    break;
                }
                Err(rustix::io::Errno::RANGE) if size < 1 << 20 => size *= 4,
                // Removed meanwhile.
                Err(rustix::io::Errno::NODATA) => break,
                Err(e) => {
                    return Err(SandboxError::Io {
                        context: format!("read xattr {name} of {}", path.display()),
                        source: e.into(),
                    })
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn list_xattrs(path: &Path) -> Result<Vec<String>> {
    list_xattrs_with(path, |buf| rustix::fs::llistxattr(path, buf))
}

/// The xattr names `list` reads (a `listxattr` call) of the entry at `path`.
fn list_xattrs_with(
    path: &Path,
    mut list: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> Result<Vec<String>> {
    let mut size = 1024;
    loop {
        let mut buf = vec![0u8; size];
        match list(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect());
            }
            Err(rustix::io::Errno::RANGE) if size < 1 << 20 => size *= 4,
            // No xattr support, or the entry vanished meanwhile (a live
            // root walked in place).
            Err(rustix::io::Errno::NOTSUP) | Err(rustix::io::Errno::NOENT) => return Ok(Vec::new()),
            Err(e) => {
                return Err(SandboxError::Io {
                    context: format!("list xattrs of {}", path.display()),
                    source: e.into(),
                })
            }
        }
    }
}

/// Directory entries sorted by name, so layers list paths deterministically.
fn sorted_names(dir: &Path) -> Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)
        .ctx(|| format!("read dir {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()
        .ctx(|| format!("read dir {}", dir.display()))?;
    names.sort();
    Ok(names)
}

/// Turns the upper dir of a finished run into layer entries, in path order.
///
/// - whiteouts become [`EntryKind::Whiteout`];
/// - an opaque dir becomes [`EntryKind::Dir`] plus [`EntryKind::OpaqueDir`]
///   for the same path;
/// - regular files become [`EntryKind::File`] whose `source` is the file in
///   the upper dir (read when the layer is written, so write the layer
///   before [`merge_upper`]); a file with several names in the upper dir is
///   a `File` at its first path and [`EntryKind::Hardlink`]s to it elsewhere;
/// - symlinks, devices and FIFOs keep their kind; sockets are skipped (a tar
///   cannot hold them);
/// - mode keeps setuid/setgid/sticky; xattrs are kept except overlay's own;
/// - uid/gid are translated from host ids to container ids with `ids`
///   ([`IdMap::identity`] in root mode, [`crate::RunResult::id_map`] in userns).
pub fn upper_changes(upper: &Path, ids: &IdMap) -> Result<Vec<LayerEntry>> {
    let mut out = Vec::new();
    let mut links = HashMap::new();
    walk(upper, "", None, ids, &mut out, &mut links)?;
    Ok(out)
}

/// Like [`upper_changes`], but leaves out non-directory entries that
/// overlayfs copied up without changing them, judged against `lower` (the
/// run's lower dir, before [`merge_upper`]).
///
/// Copy-up happens for more than writes: `ln lower-file new-name` copies
/// the lower file up so both names can share an inode. Docker's builder
/// compares such entries with the lower one (type and permission bits,
/// owner, device number, xattrs, size, mtime, and the content when both
/// mtimes have no sub-second part) and leaves unchanged ones out of the
/// layer; kiln does the same, so `ln` onto an existing file adds only the
/// new name, as a plain file, and the layer holds no hardlink to a file it
/// does not contain.
pub fn upper_changes_since(upper: &Path, lower: &Path, ids: &IdMap) -> Result<Vec<LayerEntry>> {
    let mut out = Vec::new();
    let mut links = HashMap::new();
    walk(upper, "", Some(lower), ids, &mut out, &mut links)?;
    Ok(out)
}

/// Whether the upper entry `up` (metadata `um`) is an unchanged copy of
/// the lower entry `low`.
fn unchanged_copy_up(up: &Path, um: &fs::Metadata, low: &Path) -> Result<bool> {
    let Ok(lm) = fs::symlink_metadata(low) else {
        return Ok(false);
    };
    if um.mode() != lm.mode()
        || um.uid() != lm.uid()
        || um.gid() != lm.gid()
        || um.rdev() != lm.rdev()
        || um.len() != lm.len()
        || um.mtime() != lm.mtime()
        || um.file_type().is_dir()
        || lm.file_type().is_dir()
    {
        return Ok(false);
    }
    if xattrs(up)? != xattrs(low)? {
        return Ok(false);
    }
    if um.mtime_nsec() != 0 || lm.mtime_nsec() != 0 {
        return Ok(um.mtime_nsec() == lm.mtime_nsec());
    }
    // Whole-second times may have been truncated: compare the content.
    if um.file_type().is_symlink() {
        let a = fs::read_link(up).ctx(|| format!("read symlink {}", up.display()))?;
        let b = fs::read_link(low).ctx(|| format!("read symlink {}", low.display()))?;
        return Ok(a == b);
    }
    if !um.file_type().is_file() || um.len() == 0 {
        return Ok(true);
    }
    same_content(up, low)
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let open = |p: &Path| fs::File::open(p).ctx(|| format!("open {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba).ctx(|| format!("read {}", a.display()))?;
        let nb = read_full(&mut fb, &mut bb).ctx(|| format!("read {}", b.display()))?;
        if ba.get(..na) != bb.get(..nb) {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }

    fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}

fn walk(
    dir: &Path,
    prefix: &str,
    lower: Option<&Path>,
    ids: &IdMap,
    out: &mut Vec<LayerEntry>,
    links: &mut HashMap<(u64, u64), String>,
) -> Result<()> {
    for name in sorted_names(dir)? {
        let abs = dir.join(&name);
        let name = name
            .to_str()
            .ok_or_else(|| SandboxError::NonUtf8Path(abs.clone()))?;
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let md = fs::symlink_metadata(&abs).ctx(|| format!("stat {}", abs.display()))?;
        let mut entry = LayerEntry {
            path: rel.clone(),
            kind: EntryKind::Dir,
            mode: md.mode() & 0o7777,
            uid: u64::from(ids.uid_to_container(md.uid())),
            gid: u64::from(ids.gid_to_container(md.gid())),
            mtime: md.mtime(),
            xattrs: Vec::new(),
        };
        let ft = md.file_type();
        if is_whiteout(&md) {
            entry.kind = EntryKind::Whiteout;
            entry.mode = 0;
            entry.uid = 0;
            entry.gid = 0;
            out.push(entry);
            continue;
        }
        if ft.is_socket() {
            continue;
        }
        entry.xattrs = xattrs(&abs)?;
        let lower_entry = lower.map(|l| l.join(name));
        if ft.is_dir() {
            let opaque = is_opaque(&abs);
            out.push(entry.clone());
            if opaque {
                entry.kind = EntryKind::OpaqueDir;
                out.push(entry);
            }
            // Below an opaque dir, or where the lower entry is not a real
            // directory, nothing of the lower shows through.
            let lower_dir = lower_entry.filter(|l| {
                !opaque && fs::symlink_metadata(l).is_ok_and(|m| m.file_type().is_dir())
            });
            walk(&abs, &rel, lower_dir.as_deref(), ids, out, links)?;
            continue;
        }
        if let Some(low) = &lower_entry {
            if unchanged_copy_up(&abs, &md, low)? {
                continue;
            }
        }
        entry.kind = if ft.is_file() {
            match (md.nlink() > 1)
                .then(|| links.get(&(md.dev(), md.ino())))
                .flatten()
            {
                Some(first) => EntryKind::Hardlink {
                    target: first.clone(),
                },
                None => {
                    if md.nlink() > 1 {
                        links.insert((md.dev(), md.ino()), rel.clone());
                    }
                    EntryKind::File {
                        source: abs.clone(),
                        size: md.len(),
                    }
                }
            }
        } else if ft.is_symlink() {
            let t = fs::read_link(&abs).ctx(|| format!("read symlink {}", abs.display()))?;
            EntryKind::Symlink {
                target: t
                    .to_str()
                    .ok_or_else(|| SandboxError::NonUtf8Path(abs.clone()))?
                    .to_string(),
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = (major(md.rdev()) as u32, minor(md.rdev()) as u32);
            if ft.is_char_device() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            continue;
        };
        out.push(entry);
    }
    Ok(())
}

/// Applies the changes in `upper` onto `rootfs` so the next step's lower dir
/// equals the merged view of this run: whiteouts delete, opaque dirs replace,
/// new and changed entries move in (a rename: `upper` and `rootfs` must be on
/// the same filesystem), changed directories take the upper's mode, owner,
/// xattrs and times. Overlay's own xattrs are dropped.
///
/// Both trees are walked through directory descriptors ([`Root`], [`Dir`]):
/// every rename, link, removal and metadata change acts on an open
/// directory and one final name that is never followed, and the walk
/// descends into a rootfs directory only where `lstat` found a real one. A
/// rootfs whose directories were swapped for symlinks (by the step, or by
/// anything else) therefore never receives a write outside itself.
///
/// This consumes `upper` (entries are moved out of it): write the layer from
/// [`upper_changes`] first, then merge, then delete the upper dir.
pub fn merge_upper(upper: &Path, rootfs: &Path) -> Result<()> {
    merge(upper, rootfs, None)
}

/// [`merge_upper`] that moves what the step deleted or replaced into
/// `discard` (a directory on the rootfs's filesystem) instead of deleting
/// it: a rename costs a fraction of an unlink (which frees blocks, slow on
/// disks with online discard), and the caller deletes the discard directory
/// later, off the build's critical path.
pub fn merge_upper_discarding(upper: &Path, rootfs: &Path, discard: &Path) -> Result<()> {
    fs::create_dir_all(discard).ctx(|| format!("create {}", discard.display()))?;
    merge(upper, rootfs, Some(discard))
}

fn merge(upper: &Path, rootfs: &Path, discard: Option<&Path>) -> Result<()> {
    let top = |p: &Path| {
        Root::open(p)
            .and_then(|r| r.top())
            .map_err(|e| in_tree(p)(e))
    };
    let m = Merge {
        upper,
        rootfs,
        discard: discard.map(top).transpose()?,
    };
    m.dir(&top(upper)?, &top(rootfs)?)
}

/// Turns a [`RootError`] (which names the path below its root) into an
/// error that names the tree too.
fn in_tree(tree: &Path) -> impl Fn(RootError) -> SandboxError + '_ {
    move |e| SandboxError::Io {
        context: tree.display().to_string(),
        source: e.into(),
    }
}

/// The path naming `name` in `dir` by the directory's descriptor, for the
/// xattr calls, which take no directory descriptor: only `name` is looked
/// up, and the `l*xattr` calls never follow it.
pub(crate) fn at(dir: &Dir, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.fd().as_raw_fd()));
    p.push(name);
    p
}

/// One merge: the trees' paths (for messages) and where replaced and
/// deleted entries go (`None`: deleted at once).
struct Merge<'a> {
    upper: &'a Path,
    rootfs: &'a Path,
    discard: Option<Dir>,
}

static DISCARDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn discard_name() -> OsString {
    let n = DISCARDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    OsString::from(format!("d{n}"))
}

impl Merge<'_> {
    /// Keeps a hard link to the file `name` in `root` (not a directory) in
    /// the discard directory; whether it did.
    fn keep(&self, root: &Dir, name: &OsStr) -> bool {
        let Some(d) = &self.discard else {
            return false;
        };
        d.link_from(&discard_name(), root, name).is_ok()
    }

    /// Takes `name` out of `root`: renamed into the discard directory, or
    /// removed when there is none or the rename fails.
    fn take(&self, root: &Dir, name: &OsStr) -> Result<()> {
        if let Some(d) = &self.discard {
            if root.rename(name, d, &discard_name()).is_ok() {
                return Ok(());
            }
        }
        root.remove_all(name).map_err(in_tree(self.rootfs))
    }

    /// Merges the upper directory `up` into the rootfs directory `root`.
    fn dir(&self, up: &Dir, root: &Dir) -> Result<()> {
        let mut names = up.names().map_err(in_tree(self.upper))?;
        names.sort();
        for name in names {
            let md =
                rustix::fs::statat(up.fd(), &name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
                    SandboxError::Io {
                        context: format!("stat {}", self.upper.join(up.rel_of(&name)).display()),
                        source: e.into(),
                    }
                })?;
            let kind = FileType::from_raw_mode(md.st_mode);
            let existing = root.lstat(&name).ok().flatten();
            if kind == FileType::CharacterDevice && md.st_rdev == 0 {
                // A whiteout.
                if existing.is_some() {
                    self.take(root, &name)?;
                }
                continue;
            }
            if kind == FileType::Directory {
                let opaque = is_opaque(&at(up, &name));
                match existing {
                    Some(e) if e.is_dir() && !opaque => {
                        let sub_up = up.subdir(&name).map_err(in_tree(self.upper))?;
                        let sub_root = root.subdir(&name).map_err(in_tree(self.rootfs))?;
                        self.dir(&sub_up, &sub_root)?;
                        self.dir_metadata(up, root, &sub_root, &name, &md)?;
                        continue;
                    }
                    Some(_) => self.take(root, &name)?,
                    None => {}
                }
                // A new (or opaque) dir holds only new entries: move it whole,
                // after dropping overlay xattrs anywhere inside.
                self.strip_overlay_xattrs_tree(up, &name)?;
                self.move_into(up, root, &name)?;
                continue;
            }
            strip_overlay_xattrs(up, &name)?;
            if let Some(e) = existing {
                // A replaced file is kept in the discard dir too (renaming over
                // it would free its blocks right here), by a hard link, so that
                // the rename over it is atomic: a layer writer that reads the
                // path meanwhile finds the old file or the new one, never none.
                let kept = !e.is_dir() && self.keep(root, &name);
                if !kept && (e.is_dir() || self.discard.is_some()) {
                    self.take(root, &name)?;
                }
            }
            self.move_into(up, root, &name)?;
        }
        Ok(())
    }

    fn move_into(&self, up: &Dir, root: &Dir, name: &OsStr) -> Result<()> {
        up.rename(name, root, name).map_err(|e| {
            let hint = if e.kind() == Some(ErrorKind::CrossesDevices) {
                " (the upper dir and the rootfs must be on the same filesystem)"
            } else {
                ""
            };
            SandboxError::Io {
                context: format!(
                    "move {} to {}{hint}",
                    self.upper.join(up.rel_of(name)).display(),
                    self.rootfs.join(root.rel_of(name)).display()
                ),
                source: e.into(),
            }
        })
    }

    /// Gives the rootfs directory `name` in `root` (open as `dst`) the
    /// owner, mode, xattrs and times of its upper counterpart (`md`, `name`
    /// in `up`).
    fn dir_metadata(
        &self,
        up: &Dir,
        root: &Dir,
        dst: &Dir,
        name: &OsStr,
        md: &rustix::fs::Stat,
    ) -> Result<()> {
        let err = in_tree(self.rootfs);
        let d = dst.stat_self().map_err(&err)?;
        if (d.uid, d.gid) != (md.st_uid, md.st_gid) {
            root.chown(name, md.st_uid, md.st_gid).map_err(&err)?;
        }
        if d.mode != md.st_mode & 0o7777 {
            dst.chmod_self(md.st_mode & 0o7777).map_err(&err)?;
        }
        let want = xattrs(&at(up, name))?;
        let have = xattrs(&at(root, name))?;
        for (key, _) in have
            .iter()
            .filter(|(k, _)| !want.iter().any(|(w, _)| w == k))
        {
            root.remove_xattr(name, key).map_err(&err)?;
        }
        for (key, value) in want.iter().filter(|x| !have.contains(x)) {
            root.set_xattr(name, key, value).map_err(&err)?;
        }
        // The stat fields' types differ between targets.
        #[allow(clippy::unnecessary_cast)]
        root.set_times(
            name,
            (md.st_atime as i64, md.st_atime_nsec as i64),
            (md.st_mtime as i64, md.st_mtime_nsec as i64),
        )
        .map_err(&err)
    }

    /// Drops overlay's xattrs from `name` in `up` and everything below it.
    fn strip_overlay_xattrs_tree(&self, up: &Dir, name: &OsStr) -> Result<()> {
        strip_overlay_xattrs(up, name)?;
        let err = in_tree(self.upper);
        let mut stack = vec![up.subdir(name).map_err(&err)?];
        while let Some(dir) = stack.pop() {
            for n in dir.names().map_err(&err)? {
                let Some(st) = dir.lstat(&n).map_err(&err)? else {
                    continue;
                };
                if st.is_symlink() {
                    continue;
                }
                strip_overlay_xattrs(&dir, &n)?;
                if st.is_dir() {
                    stack.push(dir.subdir(&n).map_err(&err)?);
                }
            }
        }
        Ok(())
    }
}

/// `listxattrat(2)` (Linux 6.13), whose number is the same on every
/// architecture kiln builds for; libc does not name it yet.
const SYS_LISTXATTRAT: libc::c_long = 465;

/// Set once `listxattrat` turned out to be missing (an older kernel, or a
/// seccomp profile that refuses it).
static NO_LISTXATTRAT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The xattr names of `name` in `dir`, never following it: one
/// `listxattrat` relative to the descriptor, or `llistxattr` on the
/// descriptor's `/proc/self/fd` entry where that call is missing.
fn list_xattrs_in(dir: &Dir, name: &OsStr) -> Result<Vec<String>> {
    use std::sync::atomic::Ordering::Relaxed;
    let path = at(dir, name);
    if !NO_LISTXATTRAT.load(Relaxed) {
        if let Ok(c) = std::ffi::CString::new(name.as_bytes()) {
            let got = list_xattrs_with(&path, |buf| {
                // SAFETY: a valid descriptor, a NUL-terminated name and a
                // buffer passed with its length; the kernel writes at most
                // that many bytes.
                #[allow(unsafe_code)]
                let r = unsafe {
                    libc::syscall(
                        SYS_LISTXATTRAT,
                        dir.fd().as_raw_fd(),
                        c.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                        buf.as_mut_ptr(),
                        buf.len(),
                    )
                };
                usize::try_from(r).map_err(|_| {
                    rustix::io::Errno::from_raw_os_error(
                        std::io::Error::last_os_error()
                            .raw_os_error()
                            .unwrap_or(libc::EIO),
                    )
                })
            });
            match got {
                Err(SandboxError::Io { source, .. })
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::ENOSYS) | Some(libc::EPERM)
                    ) =>
                {
                    NO_LISTXATTRAT.store(true, Relaxed);
                }
                r => return r,
            }
        }
    }
    list_xattrs(&path)
}

/// Drops overlay's xattrs from `name` in `dir`.
fn strip_overlay_xattrs(dir: &Dir, name: &OsStr) -> Result<()> {
    let mut path = None;
    for key in list_xattrs_in(dir, name)? {
        if OVERLAY_XATTR_PREFIXES.iter().any(|p| key.starts_with(p)) {
            let path = path.get_or_insert_with(|| at(dir, name));
            match rustix::fs::lremovexattr(&*path, key.as_str()) {
                Ok(()) | Err(rustix::io::Errno::NODATA) => {}
                Err(e) => {
                    return Err(SandboxError::Io {
                        context: format!("remove xattr {key} of {}", path.display()),
                        source: e.into(),
                    })
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_mtime(p: &Path, sec: i64, nsec: i64) {
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: sec,
                    tv_nsec: nsec as _,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: sec,
                    tv_nsec: nsec as _,
                },
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    fn describe(entries: &[LayerEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File { size, .. } => format!("{} file {size}", e.path),
                EntryKind::Hardlink { target } => format!("{} link {target}", e.path),
                EntryKind::Dir => format!("{} dir", e.path),
                EntryKind::Symlink { target } => format!("{} symlink {target}", e.path),
                other => format!("{} {other:?}", e.path),
            })
            .collect()
    }

    #[test]
    fn unchanged_copy_ups_are_left_out() {
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        let (l, u) = (lower.path(), upper.path());
        for d in [l, u] {
            fs::create_dir(d.join("d")).unwrap();
        }
        // `ln d/target d/hard` over a lower d/target: copied up, unchanged.
        fs::write(l.join("d/target"), "target\n").unwrap();
        set_mtime(&l.join("d/target"), 1_700_000_000, 123_456_789);
        fs::write(u.join("d/target"), "target\n").unwrap();
        set_mtime(&u.join("d/target"), 1_700_000_000, 123_456_789);
        fs::hard_link(u.join("d/target"), u.join("d/hard")).unwrap();
        // Same size and whole-second mtime, other content: changed.
        fs::write(l.join("d/same-time"), "aaaa").unwrap();
        fs::write(u.join("d/same-time"), "bbbb").unwrap();
        // Same content and whole-second mtime: unchanged.
        fs::write(l.join("d/same"), "cccc").unwrap();
        fs::write(u.join("d/same"), "cccc").unwrap();
        for p in ["d/same-time", "d/same"] {
            set_mtime(&l.join(p), 1_600_000_000, 0);
            set_mtime(&u.join(p), 1_600_000_000, 0);
        }
        // Same content, other sub-second mtime: changed.
        fs::write(l.join("d/touched"), "t").unwrap();
        set_mtime(&l.join("d/touched"), 1_600_000_000, 1);
        fs::write(u.join("d/touched"), "t").unwrap();
        set_mtime(&u.join("d/touched"), 1_600_000_000, 2);
        // Same symlink target: unchanged; another one: changed.
        std::os::unix::fs::symlink("x", l.join("d/ls")).unwrap();
        std::os::unix::fs::symlink("x", u.join("d/ls")).unwrap();
        std::os::unix::fs::symlink("x", l.join("d/ls2")).unwrap();
        std::os::unix::fs::symlink("y", u.join("d/ls2")).unwrap();
        for p in ["d/ls", "d/ls2"] {
            set_mtime(&l.join(p), 1_600_000_000, 0);
            set_mtime(&u.join(p), 1_600_000_000, 0);
        }
        // Mode changed: kept.
        fs::write(l.join("d/mode"), "m").unwrap();
        fs::write(u.join("d/mode"), "m").unwrap();
        set_mtime(&l.join("d/mode"), 1_600_000_000, 5);
        set_mtime(&u.join("d/mode"), 1_600_000_000, 5);
        fs::set_permissions(
            u.join("d/mode"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();

        let since = upper_changes_since(u, l, &IdMap::identity()).unwrap();
        assert_eq!(
            describe(&since),
            [
                "d dir",
                "d/hard file 7",
                "d/ls2 symlink y",
                "d/mode file 1",
                "d/same-time file 4",
                "d/touched file 1",
            ]
        );
        // Without the lower, everything in the upper is a change.
        let all = upper_changes(u, &IdMap::identity()).unwrap();
        assert_eq!(
            describe(&all)[..3],
            ["d dir", "d/hard file 7", "d/ls symlink x"]
        );
        assert!(describe(&all).contains(&"d/target link d/hard".to_string()));
    }

    #[test]
    fn nothing_of_the_lower_counts_below_an_opaque_or_replaced_dir() {
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        let (l, u) = (lower.path(), upper.path());
        fs::create_dir(l.join("real")).unwrap();
        fs::write(l.join("real/f"), "f").unwrap();
        // In the lower, `link` is a symlink to `real`; in the upper a dir.
        std::os::unix::fs::symlink("real", l.join("link")).unwrap();
        fs::create_dir(u.join("link")).unwrap();
        fs::write(u.join("link/f"), "f").unwrap();
        set_mtime(&l.join("real/f"), 1_600_000_000, 0);
        set_mtime(&u.join("link/f"), 1_600_000_000, 0);
        let since = upper_changes_since(u, l, &IdMap::identity()).unwrap();
        assert_eq!(describe(&since), ["link dir", "link/f file 1"]);
    }

    #[test]
    fn a_replaced_file_never_goes_missing_during_the_merge() {
        let t = tempfile::tempdir().unwrap();
        let (root, discard) = (t.path().join("root"), t.path().join("discard"));
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/f"), "0").unwrap();
        let before = fs::metadata(root.join("d/f")).unwrap().ino();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A reader opening the path all along, as a layer writer does.
        let reader = {
            let (path, stop) = (root.join("d/f"), stop.clone());
            std::thread::spawn(move || {
                let mut missing = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if fs::File::open(&path).is_err() {
                        missing += 1;
                    }
                }
                missing
            })
        };
        for i in 1..=300 {
            let upper = t.path().join(format!("upper{i}"));
            fs::create_dir_all(upper.join("d")).unwrap();
            fs::write(upper.join("d/f"), i.to_string()).unwrap();
            merge_upper_discarding(&upper, &root, &discard).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(reader.join().unwrap(), 0, "the path was missing");
        assert_eq!(fs::read_to_string(root.join("d/f")).unwrap(), "300");
        // The first file is kept in the discard dir, whole.
        let kept: Vec<_> = fs::read_dir(&discard)
            .unwrap()
            .flatten()
            .filter(|e| e.metadata().unwrap().ino() == before)
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(fs::read_to_string(kept[0].path()).unwrap(), "0");
    }

    /// A rootfs directory the merge goes into is swapped, over and over,
    /// with a symlink to a directory outside the rootfs (as a process left
    /// running by the step could do): no entry of the upper dir may land
    /// there, and nothing there may be discarded or changed.
    #[test]
    fn a_directory_swapped_for_a_symlink_is_never_written_through() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let t = tempfile::tempdir().unwrap();
        let (root, discard, canary) = (
            t.path().join("root"),
            t.path().join("discard"),
            t.path().join("canary"),
        );
        fs::create_dir_all(root.join("d")).unwrap();
        fs::create_dir_all(&canary).unwrap();
        fs::write(canary.join("f0"), "host").unwrap();
        std::os::unix::fs::symlink(&canary, root.join("x")).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let swaps = std::sync::Arc::new(AtomicU64::new(0));
        let swapper = {
            let (root, canary, stop, swaps) =
                (root.clone(), canary.clone(), stop.clone(), swaps.clone());
            std::thread::spawn(move || {
                let is_link = |n: &str| {
                    fs::symlink_metadata(root.join(n)).is_ok_and(|m| m.file_type().is_symlink())
                };
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    // The merge may have discarded the symlink or either
                    // name: put them back.
                    if !is_link("d") && !is_link("x") {
                        n += 1;
                        let _ = fs::rename(root.join("x"), root.join(format!("old{n}")));
                        let _ = std::os::unix::fs::symlink(&canary, root.join("x"));
                    }
                    if fs::symlink_metadata(root.join("d")).is_err() {
                        let _ = fs::create_dir(root.join("d"));
                    }
                    if rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        root.join("d"),
                        rustix::fs::CWD,
                        root.join("x"),
                        rustix::fs::RenameFlags::EXCHANGE,
                    )
                    .is_ok()
                    {
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::yield_now();
                }
            })
        };
        for i in 0..100 {
            let upper = t.path().join(format!("upper{i}"));
            fs::create_dir_all(upper.join("d/sub")).unwrap();
            for j in 1..=20 {
                fs::write(upper.join(format!("d/f{j}")), "new").unwrap();
            }
            fs::write(upper.join("d/sub/f"), "new").unwrap();
            // A whiteout would delete `d/f0`.
            nix::sys::stat::mknod(
                &upper.join("d/f0"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .unwrap();
            // The merge may fail when the swap lands between its steps;
            // what counts is where it wrote.
            let _ = merge_upper_discarding(&upper, &root, &discard);
            if fs::read_dir(&canary).unwrap().count() != 1 {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        assert!(swaps.load(Ordering::Relaxed) > 0, "the swapper never ran");
        let mut found: Vec<_> = fs::read_dir(&canary)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        found.sort();
        assert_eq!(found, ["f0"], "the merge wrote outside the rootfs");
        assert_eq!(fs::read_to_string(canary.join("f0")).unwrap(), "host");
    }

    /// A rootfs directory the upper dir merges into was replaced by a
    /// symlink to a directory outside the rootfs: the symlink is replaced,
    /// never written through.
    #[test]
    fn a_directory_replaced_by_a_symlink_is_replaced_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let (root, upper, canary) = (
            t.path().join("root"),
            t.path().join("upper"),
            t.path().join("canary"),
        );
        fs::create_dir_all(root.join("a")).unwrap();
        fs::create_dir_all(&canary).unwrap();
        fs::write(canary.join("f0"), "host").unwrap();
        std::os::unix::fs::symlink(&canary, root.join("a/d")).unwrap();
        fs::create_dir_all(upper.join("a/d/sub")).unwrap();
        fs::write(upper.join("a/d/f1"), "new").unwrap();
        fs::write(upper.join("a/d/sub/f"), "new").unwrap();
        merge_upper(&upper, &root).unwrap();
        assert!(fs::symlink_metadata(root.join("a/d")).unwrap().is_dir());
        assert_eq!(fs::read_to_string(root.join("a/d/f1")).unwrap(), "new");
        let found: Vec<_> = fs::read_dir(&canary)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(found, ["f0"]);
    }
}
