//! The cache directory's private state: its modes, each build's scratch
//! directory, and what is left when a build dies.
//!
//! - [`make_private`]: the cache directory and the directories kiln makes
//!   directly under it are 0700 (an existing wider mode is tightened), so
//!   files from images (setuid-root binaries from untrusted bases included)
//!   are never reachable by other local users.
//! - [`ScratchLease`]: a build's scratch directory `work/build-<pid>-<n>`,
//!   held by an exclusive `flock` on `work/build-<pid>-<n>.lock` for the
//!   build's whole life. The lock file is created and locked before the
//!   directory exists, so a directory whose lock nobody holds belongs to a
//!   build that is gone, whatever its pid (pids are reused, and builds in
//!   containers sharing one cache directory have pid namespaces of their
//!   own).
//! - [`sweep_dead`]: moves the scratch directories of dead builds into the
//!   trash (at every build's start and in `kiln cache prune`).
//! - [`full_filesystem`]: names the cache filesystem when it is full, for
//!   errors that would otherwise only name a file or an exit code.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The directories kiln makes directly under a cache directory.
pub const SUBDIRS: &[&str] = &[
    "blobs",
    "verified",
    "steps",
    "work",
    "trash",
    "snapshots",
    "mounts",
    "stat",
];

/// Creates `cache_dir` when missing and makes it, and kiln's directories
/// directly under it, mode 0700. A cache directory that cannot be made
/// private (owned by someone else) is an error: images unpacked in it
/// would be open to other users.
pub fn make_private(cache_dir: &Path) -> io::Result<()> {
    private_dir(cache_dir)?;
    for sub in SUBDIRS {
        // Made here, private, rather than by whatever first writes there.
        let p = cache_dir.join(sub);
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let m = std::fs::symlink_metadata(&p)?;
        if m.is_dir() {
            tighten(&p, &m)?;
        }
    }
    Ok(())
}

/// Lets every user pass through `top` and the directories below it down to
/// `dir` (adds search permission for group and others, never read): for an
/// in-place build, whose steps run as the image's users and reach their cache
/// mounts under the cache directory. Directories that do not exist yet are
/// left to be made.
pub fn traversable(top: &Path, dir: &Path) -> io::Result<()> {
    let Ok(below) = dir.strip_prefix(top) else {
        return Ok(());
    };
    let mut cur = top.to_path_buf();
    let mut dirs = vec![cur.clone()];
    for c in below.components() {
        cur.push(c);
        dirs.push(cur.clone());
    }
    for d in dirs {
        match std::fs::symlink_metadata(&d) {
            Ok(m) if m.is_dir() => {
                let mode = m.permissions().mode() & 0o7777;
                if mode & 0o011 != 0o011 {
                    kiln_image::root::chmod_nofollow(&d, mode | 0o011)?;
                }
            }
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates `dir` (and missing parents) with mode 0700, or tightens an
/// existing one to 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    tighten(dir, &meta)
}

fn tighten(dir: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    if meta.mode() & 0o7077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot make {} private (mode 0700): {e}", dir.display()),
            )
        })?;
    }
    Ok(())
}

/// One build's scratch directory, held while the build runs.
pub struct ScratchLease {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

/// The prefix of every scratch directory under `work/`.
const PREFIX: &str = "build-";
const LOCK_SUFFIX: &str = ".lock";

impl ScratchLease {
    /// Creates a fresh scratch directory under `<cache_dir>/work` and holds
    /// its lock.
    pub fn create(cache_dir: &Path) -> io::Result<ScratchLease> {
        let base = cache_dir.join("work");
        private_dir(&base)?;
        crate::placement::spread_subtrees(&base);
        let pid = std::process::id();
        let seed = std::collections::hash_map::RandomState::new();
        for attempt in 0u32..64 {
            let mut h = seed.build_hasher();
            h.write_u32(attempt);
            let name = format!("{PREFIX}{pid}-{:08x}", h.finish() as u32);
            let lock_path = base.join(format!("{name}{LOCK_SUFFIX}"));
            let lock = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock_path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            // Only a sweeper can hold it (briefly), and only before the
            // directory exists.
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
            // A sweeper may have taken the file for an orphan and removed
            // it in between: then this lock guards nothing.
            if !same_file(&lock, &lock_path) {
                continue;
            }
            let dir = base.join(&name);
            if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                let _ = std::fs::remove_file(&lock_path);
                return Err(e);
            }
            return Ok(ScratchLease {
                dir,
                lock_path,
                _lock: lock,
            });
        }
        Err(io::Error::other(format!(
            "cannot create a scratch directory in {}",
            base.display()
        )))
    }

    /// The scratch directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Ends the lease once the directory is gone (discarded by the caller):
    /// the lock file is removed while still held.
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Takes the lock at `lock_path` when nobody holds it (the build that made
/// it is gone). `None` while a live build holds it; an error when there is
/// no such file.
fn take_abandoned(lock_path: &Path) -> io::Result<Option<File>> {
    let f = OpenOptions::new().write(true).open(lock_path)?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) if same_file(&f, lock_path) => Ok(Some(f)),
        Ok(()) => Ok(None),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether process `pid` exists in this pid namespace.
fn pid_alive(pid: i32) -> bool {
    match rustix::process::Pid::from_raw(pid) {
        None => false,
        Some(p) => match rustix::process::test_kill_process(p) {
            Ok(()) => true,
            Err(e) => e != rustix::io::Errno::SRCH,
        },
    }
}

/// Moves the scratch directories of builds that are gone from
/// `<cache_dir>/work` into `<cache_dir>/trash` (removing them in place when
/// that fails), and removes their lock files. A directory counts as dead
/// when nobody holds its lock; a directory from before scratch leases (no
/// lock file, named `build-<pid>`) when no process has that pid. Returns
/// the directories moved.
pub fn sweep_dead(cache_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let base = cache_dir.join("work");
    let rd = match std::fs::read_dir(&base) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let trash = cache_dir.join("trash");
    let mut swept = Vec::new();
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let ft = entry.file_type()?;
        if let Some(stem) = name.strip_suffix(LOCK_SUFFIX) {
            // A lock without its directory: a build that died while
            // starting or finishing.
            if ft.is_file() && !base.join(stem).exists() {
                if let Ok(Some(_held)) = take_abandoned(&entry.path()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            continue;
        }
        if !ft.is_dir() {
            continue;
        }
        let dir = entry.path();
        let lock_path = base.join(format!("{name}{LOCK_SUFFIX}"));
        let held = match take_abandoned(&lock_path) {
            Ok(Some(held)) => Some(held),
            Ok(None) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let legacy_pid = rest.parse::<i32>().ok();
                match legacy_pid {
                    Some(pid) if !pid_alive(pid) || pid == std::process::id() as i32 => None,
                    // A live process of that pid, or a name this version
                    // does not make: left alone.
                    _ => continue,
                }
            }
            Err(e) => return Err(e),
        };
        private_dir(&trash)?;
        if std::fs::rename(&dir, trash.join(&name)).is_err() {
            std::fs::remove_dir_all(&dir)?;
        }
        if held.is_some() {
            let _ = std::fs::remove_file(&lock_path);
        }
        swept.push(dir);
    }
    Ok(swept)
}

/// Removes the temporary files of blob and record writes that never
/// finished (a killed build's): `.tmp*` in `blobs/sha256`, `steps` and
/// `stat`. Only while no build runs (the caller holds the cache lock
/// exclusively): a live build's writes look the same.
pub fn remove_partial_writes(cache_dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for sub in ["blobs/sha256", "steps", "stat"] {
        let rd = match std::fs::read_dir(cache_dir.join(sub)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            if e.file_name().as_encoded_bytes().starts_with(b".tmp") && e.file_type()?.is_file() {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(removed)
}

/// Bytes free below which a filesystem counts as full.
const FULL_BELOW: u64 = 1 << 20;

/// When the filesystem holding `path` is full (less than 1 MiB or no inode
/// left), a sentence naming it: its mount point, type and what is free.
pub fn full_filesystem(path: &Path) -> Option<String> {
    let st = rustix::fs::statvfs(path).ok()?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let no_inodes = st.f_files > 0 && st.f_favail == 0;
    if free >= FULL_BELOW && !no_inodes {
        return None;
    }
    Some(describe_filesystem(path, free, no_inodes))
}

/// Names the full filesystem that holds `path`: `the cache filesystem
/// /mnt/cache (tmpfs) is full: 12 KiB free`.
fn describe_filesystem(path: &Path, free: u64, no_inodes: bool) -> String {
    let what = if no_inodes {
        "no inodes left".to_string()
    } else {
        format!("{} free", crate::progress::human_bytes(free))
    };
    format!(
        "the cache filesystem {} is full: {what}",
        filesystem_name(path)
    )
}

/// The mount point and type of the filesystem holding `path`:
/// `/mnt/cache (tmpfs)`.
pub fn filesystem_name(path: &Path) -> String {
    match mount_of(path) {
        Some((mount_point, fstype)) => format!("{} ({fstype})", mount_point.display()),
        None => path.display().to_string(),
    }
}

/// The mount point and filesystem type holding `path`, from
/// `/proc/self/mountinfo` (the longest mount point that is a prefix).
fn mount_of(path: &Path) -> Option<(PathBuf, String)> {
    let real = std::fs::canonicalize(path).ok()?;
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(PathBuf, String)> = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mp) = fields.get(4) else { continue };
        let mp = PathBuf::from(unescape_mountinfo(mp));
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let Some(fstype) = fields.get(sep + 1) else {
            continue;
        };
        if real.starts_with(&mp)
            && best
                .as_ref()
                .is_none_or(|(b, _)| mp.as_os_str().len() >= b.as_os_str().len())
        {
            best = Some((mp, fstype.to_string()));
        }
    }
    best
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether an error's chain shows a full filesystem (`ENOSPC`, `EDQUOT`),
/// as an I/O error or in a message that kept only its text.
pub fn is_no_space<'a>(chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> bool {
    let mut chain = chain;
    chain.any(|e| {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return code == rustix::io::Errno::NOSPC.raw_os_error()
                    || code == rustix::io::Errno::DQUOT.raw_os_error();
            }
        }
        let text = e.to_string();
        text.contains("No space left on device") || text.contains("Disk quota exceeded")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").mode() & 0o7777
    }

    #[test]
    fn cache_dirs_are_made_and_kept_private() {
        let t = tempfile::tempdir().expect("tmp");
        let cache = t.path().join("a/cache");
        make_private(&cache).expect("private");
        assert_eq!(mode(&cache), 0o700);
        for sub in SUBDIRS {
            assert_eq!(mode(&cache.join(sub)), 0o700, "{sub}");
        }
        // Widened since (an older kiln, a user): tightened again.
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(
            cache.join("snapshots"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        make_private(&cache).expect("private");
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&cache.join("snapshots")), 0o700);
    }

    #[test]
    fn only_dead_scratch_is_swept() {
        let t = tempfile::tempdir().expect("tmp");
        let cache = t.path();
        let live = ScratchLease::create(cache).expect("lease");
        assert_eq!(mode(live.path()), 0o700);
        let dead = ScratchLease::create(cache).expect("lease");
        let dead_dir = dead.path().to_path_buf();
        // A killed build: its lock is released by the kernel, its files stay.
        drop(dead);
        std::fs::write(dead_dir.join("file"), "x").expect("write");
        let swept = sweep_dead(cache).expect("sweep");
        assert_eq!(swept, vec![dead_dir.clone()]);
        assert!(!dead_dir.exists());
        assert!(live.path().is_dir());
        let lock = |d: &Path| PathBuf::from(format!("{}{LOCK_SUFFIX}", d.display()));
        assert!(!lock(&dead_dir).exists());
        assert!(lock(live.path()).exists());
        let live_dir = live.path().to_path_buf();
        std::fs::remove_dir_all(&live_dir).expect("rm");
        live.release();
        assert!(!lock(&live_dir).exists());
    }

    #[test]
    fn no_space_is_recognised() {
        let e = io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        let wrapped = crate::BuildError::Io {
            path: "/x".into(),
            source: e,
        };
        let mut chain =
            std::iter::successors(Some(&wrapped as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            });
        assert!(is_no_space(&mut chain));
        let other = io::Error::from_raw_os_error(rustix::io::Errno::NOENT.raw_os_error());
        let mut chain = std::iter::once(&other as &(dyn std::error::Error + 'static));
        assert!(!is_no_space(&mut chain));
    }
}
