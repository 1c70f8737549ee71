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
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

mod dir;
#[cfg(test)]
mod tests;

use dir::chown_fd;
pub use dir::{chmod_fd, chmod_nofollow, EntryStat};

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
