//! Low-level filesystem helpers for COPY/ADD: resolving paths inside a root
//! directory as if it were `/` (symlinks included), creating directories and
//! entries, and setting owner, mode, times and xattrs on what was written.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Timestamps, CWD};

/// How a resolution that climbs above the root is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `..` at the root stays at the root (chroot semantics).
    Clamp,
    /// `..` at the root is an error.
    Reject,
}

/// A path resolved inside a root.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Components below the root (no `.`/`..`/symlinks among the existing ones).
    pub rel: Vec<OsString>,
}

impl Resolved {
    pub fn host(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(&self.rel);
        p
    }
    /// The path relative to the root, `/`-separated ("" for the root).
    pub fn rel_string(&self) -> String {
        rel_string(&self.rel)
    }
}

pub fn rel_string(parts: &[OsString]) -> String {
    let v: Vec<String> = parts
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    v.join("/")
}

/// Resolution failed.
#[derive(Debug)]
pub enum ResolveError {
    Escapes,
    TooManyLinks,
    Io(io::Error),
}

/// Resolves `path` (absolute or relative, interpreted from the root) inside
/// `root`, following symlinks (the last component too when `follow_last`),
/// with absolute link targets taken from the root. Components that do not
/// exist are kept as written.
pub fn resolve_in_root(
    root: &Path,
    path: &str,
    follow_last: bool,
    escape: Escape,
) -> Result<Resolved, ResolveError> {
    use kiln_image::root::{Root, RootError};
    let conv = |e: RootError| match e {
        RootError::Escapes { .. } => ResolveError::Escapes,
        RootError::TooManyLinks { .. } => ResolveError::TooManyLinks,
        RootError::Io { source, .. } => ResolveError::Io(source),
        other => ResolveError::Io(io::Error::other(other.to_string())),
    };
    let r = Root::open(root).map_err(conv)?;
    let rel = r
        .resolve(path, follow_last, escape == Escape::Reject)
        .map_err(conv)?;
    Ok(Resolved { rel })
}

/// Lexically cleans a `/`-separated path into components; `None` when `..`
/// climbs above the start.
pub fn clean_components(path: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop()?;
            }
            _ => {}
        }
    }
    Some(out)
}

/// The owner, mode and times to give an entry.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits incl. setuid/setgid/sticky; ignored for symlinks.
    pub perm: u32,
    /// (seconds, nanoseconds); `None` leaves the times as they are.
    pub mtime: Option<(i64, i64)>,
    pub atime: Option<(i64, i64)>,
}

/// Applies `meta` to the entry `name` of a directory resolved inside a root: owner
/// first (a chown clears setuid bits), then mode, then times. Every call acts on the
/// directory's descriptor and never follows `name`. A chown refused because this
/// process is unprivileged is ignored: the intended owner is still reported to the
/// layer.
pub fn apply_meta_at(
    dir: &kiln_image::root::Dir,
    name: &OsStr,
    meta: &Meta,
    is_symlink: bool,
) -> Result<(), kiln_image::root::RootError> {
    match dir.chown(name, meta.uid, meta.gid) {
        Ok(()) => {}
        Err(e)
            if e.kind() == Some(io::ErrorKind::PermissionDenied)
                || e.kind() == Some(io::ErrorKind::InvalidInput) => {}
        Err(e) => return Err(e),
    }
    if !is_symlink {
        dir.chmod(name, meta.perm & 0o7777)?;
    }
    if let Some(m) = meta.mtime {
        dir.set_times(name, meta.atime.unwrap_or(m), m)?;
    }
    Ok(())
}

/// [`apply_meta_at`] on a file kiln just created and still holds open: owner, mode and
/// times set through the descriptor, nothing looked up by name.
pub fn apply_meta_fd(file: &std::fs::File, meta: &Meta) -> io::Result<()> {
    match rustix::fs::fchown(
        file,
        Some(rustix::fs::Uid::from_raw(meta.uid)),
        Some(rustix::fs::Gid::from_raw(meta.gid)),
    ) {
        Ok(()) | Err(rustix::io::Errno::PERM) | Err(rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    rustix::fs::fchmod(file, rustix::fs::Mode::from_raw_mode(meta.perm & 0o7777))?;
    if let Some(m) = meta.mtime {
        let a = meta.atime.unwrap_or(m);
        let ts = |(s, n): (i64, i64)| rustix::fs::Timespec {
            tv_sec: s,
            tv_nsec: n as _,
        };
        rustix::fs::futimens(
            file,
            &Timestamps {
                last_access: ts(a),
                last_modification: ts(m),
            },
        )?;
    }
    Ok(())
}

/// Sets access and modification times, not following a final symlink.
pub fn set_times(
    path: &Path,
    atime: Option<(i64, i64)>,
    mtime: Option<(i64, i64)>,
) -> io::Result<()> {
    let Some(m) = mtime else { return Ok(()) };
    let a = atime.unwrap_or(m);
    let ts = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: a.0,
            tv_nsec: a.1 as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: m.0,
            tv_nsec: m.1 as _,
        },
    };
    rustix::fs::utimensat(CWD, path, &ts, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

/// Times of a file's metadata as (seconds, nanoseconds).
pub fn mtime_of(md: &std::fs::Metadata) -> (i64, i64) {
    (md.mtime(), md.mtime_nsec())
}
pub fn atime_of(md: &std::fs::Metadata) -> (i64, i64) {
    (md.atime(), md.atime_nsec())
}

/// The current time as (seconds, nanoseconds).
pub fn now() -> (i64, i64) {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
        Err(_) => (0, 0),
    }
}

/// Copies extended attributes from `src` to `dst` (neither followed), best
/// effort: a filesystem that refuses one (e.g. `security.*` unprivileged)
/// loses that attribute, as Docker's builder logs and goes on.
pub fn copy_xattrs(src: &Path, dst: &Path) {
    for (name, value) in read_xattrs(src) {
        let _ = rustix::fs::lsetxattr(dst, name.as_str(), &value, rustix::fs::XattrFlags::empty());
    }
}

/// [`copy_xattrs`] onto the entry `name` of a directory resolved inside a root.
pub fn copy_xattrs_at(src: &Path, dir: &kiln_image::root::Dir, name: &OsStr) {
    for (key, value) in read_xattrs(src) {
        let _ = dir.set_xattr(name, &key, &value);
    }
}

/// [`copy_xattrs`] onto a file kiln holds open.
pub fn copy_xattrs_fd(src: &Path, file: &std::fs::File) {
    for (key, value) in read_xattrs(src) {
        let _ = rustix::fs::fsetxattr(file, key.as_str(), &value, rustix::fs::XattrFlags::empty());
    }
}

/// Extended attributes of `path` (not followed), best effort.
pub fn read_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::RANGE) => {
            let Ok(size) = rustix::fs::llistxattr(path, &mut [0u8; 0][..]) else {
                return Vec::new();
            };
            names = vec![0u8; size];
            match rustix::fs::llistxattr(path, &mut names[..]) {
                Ok(n) => n,
                Err(_) => return Vec::new(),
            }
        }
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    for name in names.get(..n).unwrap_or(&[]).split(|b| *b == 0) {
        if name.is_empty() {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        // Linux caps a value at 64 KiB.
        let mut value = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(path, name, &mut value[..]) {
            value.truncate(len);
            out.push((name.to_string(), value));
        }
    }
    out.sort();
    out
}
