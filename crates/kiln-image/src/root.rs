//! The one way kiln writes inside a root filesystem.
//!
//! Every create, chmod, chown, link, rename or removal that kiln makes inside a stage
//! root, an ADD destination, a cache mount or the in-place root goes through a [`Root`]:
//! a path is resolved with the root as its boundary (symlinks, absolute ones included,
//! are followed as if the root were `/`, and `..` never climbs above it), and the
//! operation then acts on the resolved directory's file descriptor and a single final
//! name (`*at` calls that never follow that name), never on a path string the kernel
//! resolves again. A hostile layer or Dockerfile can therefore make kiln write only
//! inside the root, whatever symlinks it plants.
//!
//! Resolution takes one `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` call for the common case (a path with no symlink and no `..`,
//! whose resolved form is then the path itself). Anything else — a symlink on the way, a
//! missing directory to create, or a kernel or seccomp profile without `openat2` — takes
//! the component walk: each step is an `openat(O_PATH | O_NOFOLLOW)` relative to the
//! previous directory's descriptor, symlinks are read with `readlinkat` and expanded by
//! hand, and `..` pops kiln's own stack of descriptors, so the walk needs no kernel
//! feature and cannot be redirected by a symlink swapped in behind it. The walk is
//! written by hand because no maintained crate offers chroot-style resolution that also
//! reports the resolved path and creates what is missing.
//!
//! Modes are set through the descriptor itself (`fchmodat2(fd, "", AT_EMPTY_PATH)`,
//! falling back to the descriptor's `/proc/self/fd` entry on kernels before 6.6), owners
//! and times with `AT_SYMLINK_NOFOLLOW` on the final name.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

/// Symlinks followed while resolving one path before giving up (the kernel's limit).
const MAX_LINKS: usize = 40;

/// Why a path could not be resolved or acted on inside a root.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// More than 40 symlinks on the way.
    #[error("{path}: too many levels of symbolic links")]
    TooManyLinks { path: String },
    /// A component that must be a directory is something else.
    #[error("{path}: /{at} is not a directory")]
    NotADirectory { path: String, at: String },
    /// A `..` climbs above the root where that is refused.
    #[error("{path}: leads outside the root")]
    Escapes { path: String },
    /// A path names the root itself where an entry inside it is needed.
    #[error("{path}: names the root itself")]
    IsRoot { path: String },
    /// A directory would have to be created at or below a protected path.
    #[error("{path}: /{at} is protected")]
    Protected { path: String, at: String },
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl RootError {
    fn io(op: &'static str, path: impl Into<String>, e: impl Into<io::Error>) -> Self {
        RootError::Io {
            op,
            path: path.into(),
            source: e.into(),
        }
    }

    /// The path the error is about.
    pub fn path(&self) -> &str {
        match self {
            RootError::TooManyLinks { path }
            | RootError::NotADirectory { path, .. }
            | RootError::Protected { path, .. }
            | RootError::Escapes { path }
            | RootError::IsRoot { path }
            | RootError::Io { path, .. } => path,
        }
    }

    /// The underlying I/O error kind, if any.
    pub fn kind(&self) -> Option<io::ErrorKind> {
        match self {
            RootError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

impl From<RootError> for io::Error {
    /// Keeps the whole message (operation and path); the kind is the system call's.
    fn from(e: RootError) -> Self {
        let kind = match &e {
            RootError::Io { source, .. } => source.kind(),
            RootError::NotADirectory { .. } => io::ErrorKind::NotADirectory,
            RootError::Protected { .. } | RootError::Escapes { .. } => {
                io::ErrorKind::PermissionDenied
            }
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// Result alias for root operations.
pub type RootResult<T> = std::result::Result<T, RootError>;

/// Owner and mode given to directories a resolution creates (the owner only when this
/// process may chown: unprivileged, the intended owner is left to the caller to record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewDir {
    /// Permission bits.
    pub mode: u32,
    /// Owner to set (`None` leaves the creator's).
    pub owner: Option<(u32, u32)>,
}

impl Default for NewDir {
    fn default() -> Self {
        NewDir {
            mode: 0o755,
            owner: None,
        }
    }
}

/// A root directory: the boundary every path kiln writes is resolved in.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    protected: Vec<String>,
}

/// How a path (below a root, `/`-separated) relates to a set of protected paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Neither protected nor above a protected path.
    Free,
    /// The path is protected, or inside a protected path.
    Inside,
    /// A protected path lies below this one.
    Ancestor,
}

/// Where `rel` stands relative to `protected` (paths below the root, no leading `/`;
/// `""` protects everything).
pub fn protection(protected: &[String], rel: &str) -> Protection {
    let mut out = Protection::Free;
    for p in protected {
        if rel == p
            || p.is_empty()
            || (rel.len() > p.len()
                && rel.starts_with(p.as_str())
                && rel.as_bytes()[p.len()] == b'/')
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

/// A directory resolved inside a [`Root`], held by its descriptor, with its path below
/// the root (no symlinks, no `..`).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    rel: Vec<OsString>,
}

/// The result of resolving a directory: the directory and the ones the resolution
/// created (paths below the root, `/`-separated), outermost first.
#[derive(Debug)]
pub struct Resolved {
    pub dir: Dir,
    pub created: Vec<String>,
}

impl Root {
    /// Opens `path` (which must be a directory; it may itself be reached through
    /// symlinks: only what lies below it is confined).
    pub fn open(path: &Path) -> RootResult<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootError::io("open root", path.display().to_string(), e))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
            protected: Vec::new(),
        })
    }

    /// The same root, refusing to create directories at or below `protected` (paths
    /// below the root): an in-place build's mount points and kiln's own files.
    pub fn protecting(mut self, protected: Vec<String>) -> Root {
        self.protected = protected;
        self
    }

    /// Where `rel` (a resolved path below the root) stands relative to the protected
    /// paths.
    pub fn protection(&self, rel: &str) -> Protection {
        protection(&self.protected, rel)
    }

    /// The root's path on the host (for messages and for code that only reads).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A root at `dir` (a directory resolved inside this one): what lies below `dir` is
    /// confined to it. Archives that ADD extracts use it, as Docker's builder extracts
    /// them with the destination directory as their root.
    pub fn below(&self, dir: &Dir) -> RootResult<Root> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&dir.fd, 0)
            .map_err(|e| RootError::io("dup", format!("/{}", dir.rel()), e))?;
        Ok(Root {
            fd,
            path: self.path.join(dir.rel()),
            protected: Vec::new(),
        })
    }

    /// The root directory itself.
    pub fn top(&self) -> RootResult<Dir> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| RootError::io("dup", self.path.display().to_string(), e))?;
        Ok(Dir {
            fd,
            rel: Vec::new(),
        })
    }

    /// Resolves `path` (absolute or relative, read from the root) as a directory,
    /// following every symlink (the last component's too) inside the root. Missing
    /// directories are created with `create` when given; otherwise `Ok(None)` says one
    /// is missing.
    pub fn dir(&self, path: &str, create: Option<NewDir>) -> RootResult<Option<Resolved>> {
        let comps = split(path.as_bytes());
        if let Some(dir) = self.fast(path, &comps) {
            return Ok(Some(Resolved {
                dir,
                created: Vec::new(),
            }));
        }
        self.walk(path, comps, create)
    }

    /// Resolves the directory that holds `path`'s last component (symlinks before it
    /// are followed inside the root; the last one never is) and returns it with that
    /// name. `..` and `.` as the last component are resolved first, so the name is
    /// always a plain one. `Ok(None)` when a parent is missing and `create` is `None`.
    pub fn parent(
        &self,
        path: &str,
        create: Option<NewDir>,
    ) -> RootResult<Option<(Resolved, OsString)>> {
        let comps = split(path.as_bytes());
        if comps
            .last()
            .is_some_and(|c| c.as_bytes() == b".." || c.as_bytes() == b".")
        {
            // `a/b/..` names `a`: resolve it lexically after the symlinks before it.
            let Some(r) = self.dir(path, create)? else {
                return Ok(None);
            };
            let Some((name, parent)) = r.dir.rel.split_last() else {
                return Err(RootError::IsRoot { path: path.into() });
            };
            let joined = join(parent);
            let name = name.clone();
            return Ok(self.dir(&joined, create)?.map(|p| (p, name)));
        }
        let Some((name, parent)) = comps.split_last() else {
            return Err(RootError::IsRoot { path: path.into() });
        };
        let name = name.clone();
        let parent_path = join(parent);
        if let Some(dir) = self.fast(&parent_path, parent) {
            return Ok(Some((
                Resolved {
                    dir,
                    created: Vec::new(),
                },
                name,
            )));
        }
        Ok(self.walk(path, parent.to_vec(), create)?.map(|r| (r, name)))
    }

    /// Resolves `path` to its place below the root without creating or opening
    /// anything for writing: symlinks that exist are followed inside the root (the
    /// last one only when `follow_last`), and from the first missing or non-directory
    /// component on the rest is kept as written (`..` there is applied lexically).
    /// With `reject_escape`, a `..` that would climb above the root is an error
    /// instead of staying at the root. This is the resolution every read of an
    /// image path and every mount target uses, so reads and writes agree.
    pub fn resolve(
        &self,
        path: &str,
        follow_last: bool,
        reject_escape: bool,
    ) -> RootResult<Vec<OsString>> {
        let mut pending: std::collections::VecDeque<OsString> = split(path.as_bytes()).into();
        let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
        // Components kept as written once the tree ends.
        let mut tail: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(c) = pending.pop_front() {
            if c.as_bytes() == b"." {
                continue;
            }
            if c.as_bytes() == b".." {
                let popped = if tail.is_empty() {
                    stack.pop().is_some()
                } else {
                    tail.pop().is_some()
                };
                if !popped && reject_escape {
                    return Err(RootError::Escapes { path: path.into() });
                }
                continue;
            }
            if !tail.is_empty() {
                tail.push(c);
                continue;
            }
            let cur: BorrowedFd<'_> = match stack.last() {
                Some((fd, _)) => fd.as_fd(),
                None => self.fd.as_fd(),
            };
            let is_last = pending.iter().all(|p| p.as_bytes() == b"." || p.is_empty());
            let st = match rustix::fs::statat(cur, c.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) | Err(Errno::NOTDIR) => {
                    tail.push(c);
                    continue;
                }
                Err(e) => return Err(RootError::io("stat", here(&stack, &c), e)),
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let fd = rustix::fs::openat(
                        cur,
                        c.as_os_str(),
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| RootError::io("open", here(&stack, &c), e))?;
                    stack.push((fd, c));
                }
                FileType::Symlink if !is_last || follow_last => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(RootError::TooManyLinks { path: path.into() });
                    }
                    let target = rustix::fs::readlinkat(cur, c.as_os_str(), Vec::new())
                        .map_err(|e| RootError::io("readlink", here(&stack, &c), e))?;
                    if target.as_bytes().first() == Some(&b'/') {
                        stack.clear();
                    }
                    for t in split(target.as_bytes()).into_iter().rev() {
                        pending.push_front(t);
                    }
                }
                _ => tail.push(c),
            }
        }
        let mut out: Vec<OsString> = stack.into_iter().map(|(_, n)| n).collect();
        out.extend(tail);
        Ok(out)
    }

    /// The one-call resolution of a path with no symlink and no `..` in it.
    fn fast(&self, path: &str, comps: &[OsString]) -> Option<Dir> {
        if comps.iter().any(|c| c.as_bytes() == b"..") {
            return None;
        }
        let rel = if comps.is_empty() {
            ".".to_string()
        } else {
            path.trim_start_matches('/').to_string()
        };
        let fd = rustix::fs::openat2(
            &self.fd,
            rel.as_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .ok()?;
        Some(Dir {
            fd,
            rel: comps
                .iter()
                .filter(|c| c.as_bytes() != b".")
                .cloned()
                .collect(),
        })
    }

    /// The component walk (see the module doc).
    fn walk(
        &self,
        path: &str,
        comps: Vec<OsString>,
        create: Option<NewDir>,
    ) -> RootResult<Option<Resolved>> {
        let mut pending: std::collections::VecDeque<OsString> = comps.into();
        let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
        let mut created = Vec::new();
        let mut links = 0;
        while let Some(c) = pending.pop_front() {
            if c.as_bytes() == b"." {
                continue;
            }
            if c.as_bytes() == b".." {
                stack.pop();
                continue;
            }
            let cur: BorrowedFd<'_> = match stack.last() {
                Some((fd, _)) => fd.as_fd(),
                None => self.fd.as_fd(),
            };
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(cur, c.as_os_str(), flags, Mode::empty()) {
                Ok(fd) => {
                    stack.push((fd, c));
                    continue;
                }
                Err(Errno::NOENT) => {
                    let Some(nd) = create else {
                        return Ok(None);
                    };
                    if self.protection(&here(&stack, &c)) == Protection::Inside {
                        return Err(RootError::Protected {
                            path: path.into(),
                            at: here(&stack, &c),
                        });
                    }
                    match rustix::fs::mkdirat(cur, c.as_os_str(), Mode::from_raw_mode(0o700)) {
                        Ok(()) => {}
                        // Made meanwhile by someone else: take what is there.
                        Err(Errno::EXIST) => {
                            pending.push_front(c);
                            continue;
                        }
                        Err(e) => return Err(RootError::io("mkdir", here(&stack, &c), e)),
                    }
                    let fd = rustix::fs::openat(cur, c.as_os_str(), flags, Mode::empty())
                        .map_err(|e| RootError::io("open", here(&stack, &c), e))?;
                    if let Some((u, g)) = nd.owner {
                        match chown_fd(&fd, u, g) {
                            Ok(()) => {}
                            // Unprivileged: the intended owner is only recorded.
                            Err(e)
                                if e.kind() == io::ErrorKind::PermissionDenied
                                    || e.kind() == io::ErrorKind::InvalidInput => {}
                            Err(e) => return Err(RootError::io("chown", here(&stack, &c), e)),
                        }
                    }
                    chmod_fd(&fd, nd.mode)
                        .map_err(|e| RootError::io("chmod", here(&stack, &c), e))?;
                    created.push(here(&stack, &c));
                    stack.push((fd, c));
                }
                // A symlink (O_NOFOLLOW with O_DIRECTORY fails with ENOTDIR or ELOOP)
                // or something that is not a directory.
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    let st = rustix::fs::statat(cur, c.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| RootError::io("stat", here(&stack, &c), e))?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                        return Err(RootError::NotADirectory {
                            path: path.into(),
                            at: here(&stack, &c),
                        });
                    }
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(RootError::TooManyLinks { path: path.into() });
                    }
                    let target = rustix::fs::readlinkat(cur, c.as_os_str(), Vec::new())
                        .map_err(|e| RootError::io("readlink", here(&stack, &c), e))?;
                    let bytes = target.as_bytes();
                    if bytes.first() == Some(&b'/') {
                        stack.clear();
                    }
                    for t in split(bytes).into_iter().rev() {
                        pending.push_front(t);
                    }
                }
                Err(e) => return Err(RootError::io("open", here(&stack, &c), e)),
            }
        }
        let rel: Vec<OsString> = stack.iter().map(|(_, n)| n.clone()).collect();
        let fd = match stack.pop() {
            Some((fd, _)) => fd,
            None => rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
                .map_err(|e| RootError::io("dup", self.path.display().to_string(), e))?,
        };
        Ok(Some(Resolved {
            dir: Dir { fd, rel },
            created,
        }))
    }
}

/// The `/`-separated path of `name` below the directories of `stack`.
fn here(stack: &[(OwnedFd, OsString)], name: &OsStr) -> String {
    let mut parts: Vec<&OsStr> = stack.iter().map(|(_, n)| n.as_os_str()).collect();
    parts.push(name);
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn split(bytes: &[u8]) -> Vec<OsString> {
    bytes
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| OsStr::from_bytes(c).to_os_string())
        .collect()
}

fn join(parts: &[OsString]) -> String {
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

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

fn chown_fd(fd: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    #[test]
    fn resolve_keeps_missing_components_and_follows_links_inside() {
        let (_t, root, outside) = setup();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink(&outside, root.join("abs")).unwrap();
        let r = Root::open(&root).unwrap();
        let s = |v: Vec<OsString>| join(&v);
        assert_eq!(
            s(r.resolve("/lib/x/../y", true, false).unwrap()),
            "usr/lib/y"
        );
        assert_eq!(
            s(r.resolve("/abs/f", true, false).unwrap()),
            format!("{}/f", &outside.display().to_string()[1..])
        );
        assert_eq!(s(r.resolve("/lib", false, false).unwrap()), "lib");
        assert_eq!(
            s(r.resolve("/../../lib/z", true, false).unwrap()),
            "usr/lib/z"
        );
        assert!(matches!(
            r.resolve("/../x", true, true),
            Err(RootError::Escapes { .. })
        ));
    }

    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("canary"), b"keep").unwrap();
        std::fs::set_permissions(
            outside.join("canary"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        (t, root, outside)
    }

    #[test]
    fn absolute_and_dotdot_symlinks_stay_inside() {
        let (_t, root, outside) = setup();
        symlink(&outside, root.join("abs")).unwrap();
        symlink("../../../../outside", root.join("up")).unwrap();
        let r = Root::open(&root).unwrap();
        for p in ["abs/x/y", "up/x/y", "/abs/../../x/y"] {
            let got = r.dir(p, Some(NewDir::default())).unwrap().unwrap();
            assert!(!outside.join("x").exists(), "{p} escaped");
            let (parent, name) = r.parent(&format!("{p}/f"), None).unwrap().unwrap();
            parent.dir.create_file(&name, 0o644).unwrap();
            assert!(root.join(got.dir.rel()).join("f").is_file(), "{p}");
        }
        assert_eq!(std::fs::read(outside.join("canary")).unwrap(), b"keep");
    }

    #[test]
    fn the_last_component_is_never_followed() {
        let (_t, root, outside) = setup();
        symlink(outside.join("canary"), root.join("l")).unwrap();
        let r = Root::open(&root).unwrap();
        let (p, name) = r.parent("/l", None).unwrap().unwrap();
        p.dir.chmod(&name, 0o6777).unwrap();
        p.dir.chown(&name, 4242, 4242).unwrap();
        p.dir.set_times(&name, (1, 0), (1, 0)).unwrap();
        assert!(p.dir.create_file(&name, 0o644).is_err());
        let md = std::fs::metadata(outside.join("canary")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_ne!(md.uid(), 4242);
        assert_ne!(md.mtime(), 1);
        p.dir.remove_all(&name).unwrap();
        assert!(outside.join("canary").exists());
    }

    #[test]
    fn chmod_acts_on_the_entry_itself() {
        let (_t, root, _o) = setup();
        std::fs::create_dir(root.join("d")).unwrap();
        let r = Root::open(&root).unwrap();
        let (p, name) = r.parent("d", None).unwrap().unwrap();
        p.dir.chmod(&name, 0o1777).unwrap();
        assert_eq!(
            std::fs::metadata(root.join("d")).unwrap().mode() & 0o7777,
            0o1777
        );
    }

    #[test]
    fn created_dirs_are_reported_and_owned() {
        let (_t, root, _o) = setup();
        std::fs::create_dir(root.join("a")).unwrap();
        let r = Root::open(&root).unwrap();
        let got = r
            .dir(
                "/a/b/c",
                Some(NewDir {
                    mode: 0o750,
                    owner: None,
                }),
            )
            .unwrap()
            .unwrap();
        assert_eq!(got.created, vec!["a/b".to_string(), "a/b/c".to_string()]);
        assert_eq!(got.dir.rel(), "a/b/c");
        assert_eq!(
            std::fs::metadata(root.join("a/b/c")).unwrap().mode() & 0o7777,
            0o750
        );
        assert!(r.dir("/a/x", None).unwrap().is_none());
    }

    #[test]
    fn a_file_on_the_way_is_not_a_directory() {
        let (_t, root, _o) = setup();
        std::fs::write(root.join("f"), b"").unwrap();
        let r = Root::open(&root).unwrap();
        assert!(matches!(
            r.dir("f/x", Some(NewDir::default())),
            Err(RootError::NotADirectory { .. })
        ));
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let (_t, root, _o) = setup();
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        let r = Root::open(&root).unwrap();
        assert!(matches!(
            r.dir("a/x", None),
            Err(RootError::TooManyLinks { .. })
        ));
    }

    #[test]
    fn remove_all_does_not_follow_links_inside() {
        let (_t, root, outside) = setup();
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        symlink(&outside, root.join("d/e/out")).unwrap();
        let r = Root::open(&root).unwrap();
        r.top().unwrap().remove_all(OsStr::new("d")).unwrap();
        assert!(!root.join("d").exists());
        assert!(outside.join("canary").exists());
    }

    #[test]
    fn dotdot_as_last_component_names_the_parent() {
        let (_t, root, _o) = setup();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let r = Root::open(&root).unwrap();
        let (p, name) = r.parent("a/b/..", None).unwrap().unwrap();
        assert_eq!(p.dir.rel(), "");
        assert_eq!(name, "a");
        assert!(matches!(
            r.parent("/..", None),
            Err(RootError::IsRoot { .. })
        ));
    }
}
