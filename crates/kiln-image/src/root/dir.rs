//! What a resolved [`Dir`] does: every operation acts on the directory's descriptor
//! and one final name that is never followed, and modes are set through the
//! entry's own descriptor.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

use super::{join, Dir, RootError, RootResult};

/// Sets the permission bits of the inode `fd` refers to (an `O_PATH` descriptor is
/// enough) without any path lookup.
pub fn chmod_fd(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    // fchmodat2 (Linux 6.6): the only chmod that takes an O_PATH descriptor directly.
    // SAFETY: plain syscall with a valid descriptor and a NUL-terminated empty path.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            (mode & 0o7777) as libc::c_uint,
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::EINVAL) => {}
        _ => return Err(err),
    }
    // Older kernels (or a seccomp profile without fchmodat2): the descriptor's own
    // /proc entry names exactly this inode.
    rustix::fs::chmod(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        Mode::from_raw_mode(mode & 0o7777),
    )
    .map_err(io::Error::from)
}

/// Sets the permission bits of the entry at `path` itself, for code that walks a tree
/// it made and holds no [`Dir`]: a symlink found there is left alone, never followed.
pub fn chmod_nofollow(path: &Path, mode: u32) -> io::Result<()> {
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) == FileType::Symlink {
        return Ok(());
    }
    chmod_fd(&fd, mode)
}

pub(super) fn chown_fd(fd: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::chownat(
        fd,
        "",
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

/// What [`Dir::lstat`] found.
#[derive(Debug, Clone, Copy)]
pub struct EntryStat {
    pub kind: FileType,
    /// Permission bits incl. setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
}

impl EntryStat {
    fn from(st: &Stat) -> Self {
        EntryStat {
            kind: FileType::from_raw_mode(st.st_mode),
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }

    pub fn is_symlink(&self) -> bool {
        self.kind == FileType::Symlink
    }
}

impl Dir {
    /// The directory's path below the root, `/`-separated (`""` for the root).
    pub fn rel(&self) -> String {
        join(&self.rel)
    }

    /// The path below the root of `name` in this directory.
    pub fn rel_of(&self, name: &OsStr) -> String {
        let mut r = self.rel();
        if !r.is_empty() {
            r.push('/');
        }
        r.push_str(&name.to_string_lossy());
        r
    }

    /// The directory's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn err(&self, op: &'static str, name: &OsStr, e: impl Into<io::Error>) -> RootError {
        RootError::io(op, format!("/{}", self.rel_of(name)), e)
    }

    /// The entry `name` here, without following it; `None` when absent.
    pub fn lstat(&self, name: &OsStr) -> RootResult<Option<EntryStat>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(EntryStat::from(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.err("stat", name, e)),
        }
    }

    /// This directory's own metadata.
    pub fn stat_self(&self) -> RootResult<EntryStat> {
        rustix::fs::fstat(&self.fd)
            .map(|st| EntryStat::from(&st))
            .map_err(|e| RootError::io("stat", format!("/{}", self.rel()), e))
    }

    /// Opens the subdirectory `name` (never following a symlink there).
    pub fn subdir(&self, name: &OsStr) -> RootResult<Dir> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err("open", name, e))?;
        let mut rel = self.rel.clone();
        rel.push(name.to_os_string());
        Ok(Dir { fd, rel })
    }

    /// Creates the regular file `name` (it must not exist) for writing.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> RootResult<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| self.err("create", name, e))?;
        Ok(File::from(fd))
    }

    /// Opens the existing regular file `name` for reading (never through a symlink).
    pub fn open_file(&self, name: &OsStr) -> RootResult<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err("open", name, e))?;
        Ok(File::from(fd))
    }

    /// Creates the directory `name`.
    pub fn mkdir(&self, name: &OsStr, mode: u32) -> RootResult<()> {
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode))
            .map_err(|e| self.err("mkdir", name, e))
    }

    /// Creates the symlink `name` pointing at `target` (stored as given, never followed).
    pub fn symlink(&self, name: &OsStr, target: &OsStr) -> RootResult<()> {
        rustix::fs::symlinkat(target, &self.fd, name).map_err(|e| self.err("symlink", name, e))
    }

    /// Makes `name` a hard link to `src_name` in `src` (a symlink is linked itself).
    pub fn link_from(&self, name: &OsStr, src: &Dir, src_name: &OsStr) -> RootResult<()> {
        rustix::fs::linkat(&src.fd, src_name, &self.fd, name, AtFlags::empty())
            .map_err(|e| self.err("link", name, e))
    }

    /// Makes `name` a hard link to `src`, a file outside every root kiln writes (a
    /// finished stage's or an image's own file); `src` itself is never followed.
    pub fn link_path(&self, name: &OsStr, src: &Path) -> RootResult<()> {
        rustix::fs::linkat(rustix::fs::CWD, src, &self.fd, name, AtFlags::empty())
            .map_err(|e| self.err("link", name, e))
    }

    /// Another handle on the same directory.
    pub fn try_clone(&self) -> RootResult<Dir> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| RootError::io("dup", format!("/{}", self.rel()), e))?;
        Ok(Dir {
            fd,
            rel: self.rel.clone(),
        })
    }

    /// Creates a device node or fifo.
    pub fn mknod(&self, name: &OsStr, kind: FileType, mode: u32, dev: u64) -> RootResult<()> {
        rustix::fs::mknodat(&self.fd, name, kind, Mode::from_raw_mode(mode), dev)
            .map_err(|e| self.err("mknod", name, e))
    }

    /// Renames `name` here to `to_name` in `to` (replacing a non-directory there).
    pub fn rename(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> RootResult<()> {
        rustix::fs::renameat(&self.fd, name, &to.fd, to_name)
            .map_err(|e| self.err("rename", name, e))
    }

    /// Names of the entries in this directory.
    pub fn names(&self) -> RootResult<Vec<OsString>> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootError::io("open", format!("/{}", self.rel()), e))?;
        let mut out = Vec::new();
        let rd = rustix::fs::Dir::read_from(&fd)
            .map_err(|e| RootError::io("read dir", format!("/{}", self.rel()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| RootError::io("read dir", format!("/{}", self.rel()), e))?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        Ok(out)
    }

    /// Removes whatever is at `name` (a directory with everything below it; symlinks are
    /// removed, never followed). Absent is fine.
    pub fn remove_all(&self, name: &OsStr) -> RootResult<()> {
        let Some(st) = self.lstat(name)? else {
            return Ok(());
        };
        if st.is_dir() {
            let sub = self.subdir(name)?;
            for child in sub.names()? {
                match sub.remove_all(&child) {
                    Err(RootError::Io { source, .. })
                        if source.kind() == io::ErrorKind::PermissionDenied =>
                    {
                        // A read-only directory (unprivileged): make it writable, retry.
                        chmod_fd(&sub.fd, sub.stat_self()?.mode | 0o700)
                            .map_err(|e| self.err("chmod", name, e))?;
                        sub.remove_all(&child)?;
                    }
                    r => r?,
                }
            }
            drop(sub);
            match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(self.err("remove", name, e)),
            }
        } else {
            match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(self.err("remove", name, e)),
            }
        }
    }

    /// Removes the directory `name` if it is empty (an error otherwise).
    pub fn remove_empty_dir(&self, name: &OsStr) -> RootResult<()> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)
            .map_err(|e| self.err("remove", name, e))
    }

    /// Sets the owner of `name` (never following it).
    pub fn chown(&self, name: &OsStr, uid: u32, gid: u32) -> RootResult<()> {
        rustix::fs::chownat(
            &self.fd,
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.err("chown", name, e))
    }

    /// Sets the permission bits of `name` through a descriptor of the entry itself;
    /// a symlink's (meaningless) mode is left alone.
    pub fn chmod(&self, name: &OsStr, mode: u32) -> RootResult<()> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err("chmod", name, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.err("chmod", name, e))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            return Ok(());
        }
        chmod_fd(&fd, mode).map_err(|e| self.err("chmod", name, e))
    }

    /// Sets this directory's own permission bits.
    pub fn chmod_self(&self, mode: u32) -> RootResult<()> {
        chmod_fd(&self.fd, mode).map_err(|e| RootError::io("chmod", format!("/{}", self.rel()), e))
    }

    /// Sets the access and modification times of `name` (never following it).
    pub fn set_times(&self, name: &OsStr, atime: (i64, i64), mtime: (i64, i64)) -> RootResult<()> {
        let ts = |(s, n): (i64, i64)| Timespec {
            tv_sec: s,
            tv_nsec: n as _,
        };
        rustix::fs::utimensat(
            &self.fd,
            name,
            &Timestamps {
                last_access: ts(atime),
                last_modification: ts(mtime),
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.err("set times of", name, e))
    }

    /// Sets an extended attribute on `name` (never following it): through this
    /// directory's `/proc/self/fd` entry, so only the last name is looked up.
    pub fn set_xattr(&self, name: &OsStr, key: &str, value: &[u8]) -> RootResult<()> {
        let mut p = format!("/proc/self/fd/{}/", self.fd.as_raw_fd()).into_bytes();
        p.extend_from_slice(name.as_bytes());
        rustix::fs::lsetxattr(
            OsStr::from_bytes(&p),
            key,
            value,
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| self.err("set xattr on", name, e))
    }

    /// Removes an extended attribute from `name` (never following it), the way
    /// [`Dir::set_xattr`] sets one. Absent is fine.
    pub fn remove_xattr(&self, name: &OsStr, key: &str) -> RootResult<()> {
        let mut p = format!("/proc/self/fd/{}/", self.fd.as_raw_fd()).into_bytes();
        p.extend_from_slice(name.as_bytes());
        match rustix::fs::lremovexattr(OsStr::from_bytes(&p), key) {
            Ok(()) | Err(Errno::NODATA) => Ok(()),
            Err(e) => Err(self.err("remove xattr from", name, e)),
        }
    }

    /// Reads the symlink `name`.
    pub fn read_link(&self, name: &OsStr) -> RootResult<OsString> {
        rustix::fs::readlinkat(&self.fd, name, Vec::new())
            .map(|c| OsStr::from_bytes(c.as_bytes()).to_os_string())
            .map_err(|e| self.err("readlink", name, e))
    }
}
