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
use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_image::{EntryKind, LayerEntry};
use nix::sys::stat::{major, minor};

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
    let mut size = 1024;
    loop {
        let mut buf = vec![0u8; size];
        match rustix::fs::llistxattr(path, &mut buf) {
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
/// This consumes `upper` (entries are moved out of it): write the layer from
/// [`upper_changes`] first, then merge, then delete the upper dir.
pub fn merge_upper(upper: &Path, rootfs: &Path) -> Result<()> {
    merge_dir(upper, rootfs, &Discard(None))?;
    Ok(())
}

/// [`merge_upper`] that moves what the step deleted or replaced into
/// `discard` (a directory on the rootfs's filesystem) instead of deleting
/// it: a rename costs a fraction of an unlink (which frees blocks, slow on
/// disks with online discard), and the caller deletes the discard directory
/// later, off the build's critical path.
pub fn merge_upper_discarding(upper: &Path, rootfs: &Path, discard: &Path) -> Result<()> {
    fs::create_dir_all(discard).ctx(|| format!("create {}", discard.display()))?;
    merge_dir(upper, rootfs, &Discard(Some(discard)))?;
    Ok(())
}

/// Where replaced and deleted entries go (`None`: deleted at once).
struct Discard<'a>(Option<&'a Path>);

static DISCARDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Discard<'_> {
    /// Takes `path` out of the tree: renamed into the discard directory,
    /// or removed when there is none or the rename fails.
    /// Keeps a hard link to the file at `path` (not a directory) in the
    /// discard directory; whether it did.
    fn keep(&self, path: &Path) -> bool {
        let Some(dir) = self.0 else {
            return false;
        };
        let n = DISCARDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        fs::hard_link(path, dir.join(format!("d{n}"))).is_ok()
    }

    fn take(&self, path: &Path, md: &fs::Metadata) -> Result<()> {
        if let Some(dir) = self.0 {
            let n = DISCARDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if fs::rename(path, dir.join(format!("d{n}"))).is_ok() {
                return Ok(());
            }
        }
        remove_any(path, md)
    }
}

fn merge_dir(up: &Path, root: &Path, discard: &Discard) -> Result<()> {
    for name in sorted_names(up)? {
        let src = up.join(&name);
        let dst = root.join(&name);
        let md = fs::symlink_metadata(&src).ctx(|| format!("stat {}", src.display()))?;
        let existing = fs::symlink_metadata(&dst).ok();
        if is_whiteout(&md) {
            if let Some(e) = existing {
                discard.take(&dst, &e)?;
            }
            continue;
        }
        if md.is_dir() {
            let opaque = is_opaque(&src);
            match existing {
                Some(e) if e.is_dir() && !opaque => {
                    merge_dir(&src, &dst, discard)?;
                    copy_dir_metadata(&src, &dst, &md)?;
                    continue;
                }
                Some(e) => discard.take(&dst, &e)?,
                None => {}
            }
            // A new (or opaque) dir holds only new entries: move it whole,
            // after dropping overlay xattrs anywhere inside.
            strip_overlay_xattrs_tree(&src)?;
            move_into(&src, &dst)?;
            continue;
        }
        strip_overlay_xattrs(&src)?;
        if let Some(e) = existing {
            // A replaced file is kept in the discard dir too (renaming over
            // it would free its blocks right here), by a hard link, so that
            // the rename over it is atomic: a layer writer that reads the
            // path meanwhile finds the old file or the new one, never none.
            let kept = !e.is_dir() && discard.keep(&dst);
            if !kept && (e.is_dir() || discard.0.is_some()) {
                discard.take(&dst, &e)?;
            }
        }
        move_into(&src, &dst)?;
    }
    Ok(())
}

fn remove_any(path: &Path, md: &fs::Metadata) -> Result<()> {
    if md.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .ctx(|| format!("remove {}", path.display()))
}

fn move_into(src: &Path, dst: &Path) -> Result<()> {
    fs::rename(src, dst).map_err(|e| {
        let hint = if e.kind() == ErrorKind::CrossesDevices {
            " (the upper dir and the rootfs must be on the same filesystem)"
        } else {
            ""
        };
        SandboxError::Io {
            context: format!("move {} to {}{hint}", src.display(), dst.display()),
            source: e,
        }
    })
}

fn copy_dir_metadata(src: &Path, dst: &Path, md: &fs::Metadata) -> Result<()> {
    let d = fs::symlink_metadata(dst).ctx(|| format!("stat {}", dst.display()))?;
    if (d.uid(), d.gid()) != (md.uid(), md.gid()) {
        std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()))
            .ctx(|| format!("chown {}", dst.display()))?;
    }
    if d.mode() & 0o7777 != md.mode() & 0o7777 {
        kiln_image::root::chmod_nofollow(dst, md.mode() & 0o7777).map_err(|e| {
            SandboxError::Io {
                context: format!("chmod {}", dst.display()),
                source: e,
            }
        })?;
    }
    let want = xattrs(src)?;
    let have = xattrs(dst)?;
    for (name, _) in have
        .iter()
        .filter(|(n, _)| !want.iter().any(|(w, _)| w == n))
    {
        rustix::fs::lremovexattr(dst, name.as_str()).map_err(|e| SandboxError::Io {
            context: format!("remove xattr {name} of {}", dst.display()),
            source: e.into(),
        })?;
    }
    for (name, value) in want.iter().filter(|x| !have.contains(x)) {
        rustix::fs::lsetxattr(dst, name.as_str(), value, rustix::fs::XattrFlags::empty()).map_err(
            |e| SandboxError::Io {
                context: format!("set xattr {name} of {}", dst.display()),
                source: e.into(),
            },
        )?;
    }
    let ts = |s: i64, ns: i64| rustix::fs::Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        dst,
        &rustix::fs::Timestamps {
            last_access: ts(md.atime(), md.atime_nsec()),
            last_modification: ts(md.mtime(), md.mtime_nsec()),
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| SandboxError::Io {
        context: format!("set times of {}", dst.display()),
        source: e.into(),
    })
}

fn strip_overlay_xattrs(path: &Path) -> Result<()> {
    for name in list_xattrs(path)? {
        if OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)) {
            match rustix::fs::lremovexattr(path, name.as_str()) {
                Ok(()) | Err(rustix::io::Errno::NODATA) => {}
                Err(e) => {
                    return Err(SandboxError::Io {
                        context: format!("remove xattr {name} of {}", path.display()),
                        source: e.into(),
                    })
                }
            }
        }
    }
    Ok(())
}

fn strip_overlay_xattrs_tree(path: &Path) -> Result<()> {
    strip_overlay_xattrs(path)?;
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for name in sorted_names(&dir)? {
            let p = dir.join(name);
            let md = fs::symlink_metadata(&p).ctx(|| format!("stat {}", p.display()))?;
            if md.file_type().is_symlink() {
                continue;
            }
            strip_overlay_xattrs(&p)?;
            if md.is_dir() {
                stack.push(p);
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
}
