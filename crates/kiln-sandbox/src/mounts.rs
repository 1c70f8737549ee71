//! The container's mount table: resolving mount targets inside the rootfs,
//! the stubs (missing mount points) that have to be created for them, the
//! mounts themselves (overlay root, /proc, /dev, /sys, /etc files, RUN
//! mounts), and removing the stubs from the upper dir after the run so they
//! never reach a layer.
//!
//! Targets are resolved against the lower dir before the run: the upper dir
//! is empty then, so the merged view equals the lower and every mount point
//! (and which of its components are missing) is known up front. Cleanup runs
//! on the upper dir directly once the container is gone: a stub is removed
//! when it is still an empty dir or empty file, the directory it was created
//! in gets its timestamps back, and directories that overlayfs copied up only
//! to hold stubs (empty, not opaque, metadata equal to the lower's) are
//! removed as well, so an untouched `/etc` does not show up as a change.
//!
//! No device node is usable outside kiln's own `/dev` nodes: the overlay
//! root, every bind mount (RUN mounts, cache mounts, the /etc files), the
//! tmpfs mounts and the `/dev` tmpfs itself are `nodev`; the standard nodes
//! are bind mounts of the host's. The /etc files are `nosuid` too; the
//! root and RUN bind mounts are not (setuid programs of the image work, as
//! under Docker).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_image::root::{Dir, Root, RootError};
use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use serde::{Deserialize, Serialize};

use crate::confine::{MASKED_PATHS, READONLY_PATHS};
use crate::error::{IoContext, Result, SandboxError};
use crate::spec::{Isolation, MountKind, Network, RunSpec, SecretData};

/// Resolves `path` (absolute, container view) inside `root` the way the
/// kernel would after a chroot: `..` never leaves the root and absolute
/// symlinks restart at the root. Returns the path relative to the root, with
/// no symlink components; missing trailing components are kept as given.
/// This is [`kiln_image::root::Root::resolve`], the resolution every write
/// into a root uses.
pub(crate) fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    let r = kiln_image::root::Root::open(root)
        .map_err(|e| SandboxError::InvalidSpec(format!("resolve {path}: {e}")))?;
    let rel = r
        .resolve(path, true, false)
        .map_err(|e| SandboxError::InvalidSpec(format!("resolve {path}: {e}")))?;
    Ok(rel.iter().collect())
}

/// What to mount at one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum What {
    Proc,
    Dev,
    Sys,
    /// A generated file (/etc/hosts, …) bind-mounted read-write.
    File(PathBuf),
    Bind {
        source: PathBuf,
        readonly: bool,
    },
    Tmpfs {
        size: Option<u64>,
    },
    Secret {
        data: SecretData,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// One mount, resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Planned {
    /// Target relative to the root, without symlinks.
    pub rel: PathBuf,
    pub what: What,
    /// Missing components to create before mounting: (relative path, is_dir).
    pub create: Vec<(PathBuf, bool)>,
}

/// Timestamps (seconds, nanoseconds) of a directory a stub was created in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Times {
    pub rel: PathBuf,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
}

/// All mounts of a run, in mount order, plus what to restore afterwards.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub mounts: Vec<Planned>,
    pub parents: Vec<Times>,
}

/// Generated files bind-mounted over the image's.
pub(crate) struct EtcFiles<'a> {
    pub hosts: &'a Path,
    pub resolv: &'a Path,
    pub hostname: &'a Path,
}

/// Resolves every mount of `spec` against the (still unchanged) lower dir.
pub(crate) fn plan(spec: &RunSpec, etc: &EtcFiles<'_>) -> Result<Plan> {
    let lower = &spec.rootfs;
    let mut wanted: Vec<(String, What, bool)> = vec![
        ("/proc".into(), What::Proc, true),
        ("/dev".into(), What::Dev, true),
        ("/sys".into(), What::Sys, true),
        (
            "/etc/hosts".into(),
            What::File(etc.hosts.to_path_buf()),
            false,
        ),
        (
            "/etc/resolv.conf".into(),
            What::File(etc.resolv.to_path_buf()),
            false,
        ),
        (
            "/etc/hostname".into(),
            What::File(etc.hostname.to_path_buf()),
            false,
        ),
    ];
    for m in &spec.mounts {
        let target = if m.target.starts_with('/') {
            m.target.clone()
        } else {
            format!("{}/{}", spec.cwd.trim_end_matches('/'), m.target)
        };
        let (what, is_dir) = match &m.kind {
            MountKind::Bind { source, readonly } => {
                let md = fs::metadata(source)
                    .ctx(|| format!("bind mount source {}", source.display()))?;
                (
                    What::Bind {
                        source: source.clone(),
                        readonly: *readonly,
                    },
                    md.is_dir(),
                )
            }
            MountKind::Tmpfs { size } => (What::Tmpfs { size: *size }, true),
            MountKind::Secret {
                data,
                mode,
                uid,
                gid,
            } => (
                What::Secret {
                    data: data.clone(),
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                },
                false,
            ),
        };
        wanted.push((target, what, is_dir));
    }

    let mut plan = Plan::default();
    let mut created: HashSet<PathBuf> = HashSet::new();
    let mut parents_seen: HashSet<PathBuf> = HashSet::new();
    for (target, what, is_dir) in wanted {
        let rel = resolve_in_root(lower, &target)?;
        if rel.as_os_str().is_empty() {
            return Err(SandboxError::InvalidSpec(format!(
                "mount target {target} resolves to the root"
            )));
        }
        let mut create = Vec::new();
        let mut prefix = PathBuf::new();
        let mut parent_of_first_missing: Option<PathBuf> = None;
        let n = rel.components().count();
        for (i, c) in rel.components().enumerate() {
            let parent = prefix.clone();
            prefix.push(c);
            if created.contains(&prefix) {
                continue;
            }
            if fs::symlink_metadata(lower.join(&prefix)).is_err() {
                if parent_of_first_missing.is_none() {
                    parent_of_first_missing = Some(parent);
                }
                create.push((prefix.clone(), i + 1 < n || is_dir));
                created.insert(prefix.clone());
            }
        }
        if let Some(p) = parent_of_first_missing {
            if !created.contains(&p) && parents_seen.insert(p.clone()) {
                let md = fs::symlink_metadata(lower.join(&p))
                    .ctx(|| format!("stat {}", lower.join(&p).display()))?;
                plan.parents.push(Times {
                    rel: p,
                    atime: (md.atime(), md.atime_nsec()),
                    mtime: (md.mtime(), md.mtime_nsec()),
                });
            }
        }
        plan.mounts.push(Planned { rel, what, create });
    }
    Ok(plan)
}

fn ms(e: nix::Error, what: impl FnOnce() -> String) -> SandboxError {
    SandboxError::Setup(format!("{}: {e}", what()))
}

/// Mounts `source` on `target` with the given fs type, flags and data.
fn do_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(source, target, fstype, flags, data).map_err(|e| {
        ms(e, || {
            format!(
                "mount {} ({}) on {}",
                source.map(|s| s.display().to_string()).unwrap_or_default(),
                fstype.unwrap_or("bind"),
                target.display()
            )
        })
    })
}

/// Makes an existing mount at `target` read-only, keeping the flags the
/// kernel locks in a user namespace (nosuid, nodev, noexec, atime).
fn remount_readonly(target: &Path) -> Result<()> {
    remount_bind(target, MsFlags::MS_RDONLY)
}

/// Adds `extra` (`MS_RDONLY`, `MS_NODEV`, `MS_NOSUID`, …) to the bind
/// mount at `target`, keeping the flags it has (the kernel locks them in a
/// user namespace: nosuid, nodev, noexec, read-only, atime).
fn remount_bind(target: &Path, extra: MsFlags) -> Result<()> {
    let st = statvfs(target).map_err(|e| ms(e, || format!("statvfs {}", target.display())))?;
    let f = st.flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra;
    for (sf, mf) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(sf) {
            flags |= mf;
        }
    }
    do_mount(None, target, None, flags, None)
}

/// Mounts the overlay root on `merged`.
pub(crate) fn mount_overlay(spec: &RunSpec, isolation: Isolation, merged: &Path) -> Result<()> {
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        spec.rootfs.display(),
        spec.upper.display(),
        spec.work.display()
    );
    if isolation == Isolation::Userns {
        data.push_str(",userxattr");
    } else {
        // Keep every change visible as plain upper-dir entries: no redirect
        // xattrs for renamed dirs (they are copied instead), no metadata-only
        // copy-ups.
        data.push_str(",redirect_dir=off,metacopy=off");
    }
    // `volatile` (Linux 5.10+) skips the fsync overlayfs does on every
    // copy-up: a step's upper dir is scratch space that a crash discards
    // anyway, and on disks where fsync is slow a `chown -R` over thousands
    // of image files otherwise costs milliseconds per file. Older kernels
    // reject the option; mount without it there.
    // A volatile mount leaves `work/incompat/volatile` behind, and the
    // kernel refuses to mount that work dir again until it is gone (it
    // cannot tell a clean unmount from a crash). A spec may reuse its
    // upper and work dirs for several steps within one boot, where the
    // upper dir is intact, so clear the marker.
    let marker = spec.work.join("work").join("incompat");
    if marker.exists() {
        let _ = std::fs::remove_dir_all(&marker);
    }
    let volatile = format!("{data},volatile");
    // nodev: device nodes of the image (or made by the step) stay in the
    // layer but cannot be opened; only kiln's /dev works.
    do_mount(
        Some(Path::new("overlay")),
        merged,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(&volatile),
    )
    .or_else(|_| {
        do_mount(
            Some(Path::new("overlay")),
            merged,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(&data),
        )
    })
}

/// Device nodes every container gets (bind mounts of the host's).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Creates the stubs and performs every planned mount under `root`.
/// Returns notes about things skipped (e.g. /sys in a user namespace).
pub(crate) fn mount_all(
    plan: &Plan,
    root: &Path,
    isolation: Isolation,
    network: Network,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut secrets: Option<SecretStage> = None;
    let r = Root::open(root).map_err(in_root(root))?;
    for m in &plan.mounts {
        for (rel, is_dir) in &m.create {
            let (parent, name) = Target::parent_of(&r, rel)?;
            // Umask 0: the modes `mkdir` and `touch` would give.
            if *is_dir {
                parent.mkdir(name, 0o777).map_err(in_root(root))?;
            } else {
                parent.create_file(name, 0o666).map_err(in_root(root))?;
            }
        }
        let place = Target::new(&r, &m.rel)?;
        let target = place.open()?;
        let target = target.path();
        let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        match &m.what {
            What::Proc => do_mount(
                Some(Path::new("proc")),
                target,
                Some("proc"),
                nosuid_nodev_noexec,
                None,
            )?,
            What::Dev => {
                let dev = mount_dev(&place, target)?;
                if plan
                    .mounts
                    .iter()
                    .any(|m| matches!(m.what, What::Secret { .. }))
                {
                    secrets = Some(SecretStage::new(&dev)?);
                }
            }
            What::Sys => {
                // A fresh sysfs needs a network namespace owned by our user
                // namespace; otherwise bind the host's read-only.
                let fresh = isolation == Isolation::Root || network == Network::None;
                let fresh_ok = fresh
                    && do_mount(
                        Some(Path::new("sysfs")),
                        target,
                        Some("sysfs"),
                        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
                        None,
                    )
                    .is_ok();
                if !fresh_ok {
                    let bound = do_mount(
                        Some(Path::new("/sys")),
                        target,
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None,
                    )
                    .and_then(|()| remount_readonly(place.open()?.path()));
                    if let Err(e) = bound {
                        if isolation == Isolation::Root {
                            return Err(e);
                        }
                        notes.push(format!("/sys not mounted in the user namespace: {e}"));
                    }
                }
            }
            What::File(source) => {
                do_mount(Some(source), target, None, MsFlags::MS_BIND, None)?;
                remount_bind(place.open()?.path(), MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
            }
            What::Bind { source, readonly } => {
                do_mount(
                    Some(source),
                    target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                // No device node that a step left in a cache mount (or
                // that a source holds) can be opened.
                let mut extra = MsFlags::MS_NODEV;
                if *readonly {
                    extra |= MsFlags::MS_RDONLY;
                }
                remount_bind(place.open()?.path(), extra)?;
            }
            What::Tmpfs { size } => {
                let mut data = "mode=1777".to_string();
                if let Some(s) = size {
                    data.push_str(&format!(",size={s}"));
                }
                do_mount(
                    Some(Path::new("tmpfs")),
                    target,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(&data),
                )?;
            }
            What::Secret {
                data,
                mode,
                uid,
                gid,
            } => {
                let stage = secrets.as_mut().ok_or_else(|| {
                    SandboxError::Setup("a secret mount without /dev to stage it on".into())
                })?;
                let source = stage.write(data, *mode, *uid, *gid)?;
                do_mount(Some(&source), target, None, MsFlags::MS_BIND, None)?;
                remount_readonly(place.open()?.path())?;
            }
        }
    }
    if let Some(stage) = secrets {
        stage.finish()?;
    }
    Ok(notes)
}

/// Where secret files are written before they are bind-mounted at their
/// targets: a directory on the step's own `/dev` tmpfs, made right after
/// that tmpfs is mounted (so before any RUN mount can cover `/dev`) and
/// reached through file descriptors from then on. Once every secret is
/// mounted the names are removed; each file lives on in its bind mount
/// only, and goes with the step's mount namespace.
struct SecretStage {
    dev: std::os::fd::OwnedFd,
    dir: std::os::fd::OwnedFd,
    names: Vec<String>,
}

const SECRET_STAGE: &str = ".kiln-secrets";

impl SecretStage {
    fn new(dev: &Dir) -> Result<SecretStage> {
        use rustix::fs::{Mode as RMode, OFlags};
        let err = |what: &str, e: rustix::io::Errno| {
            SandboxError::Setup(format!("{what} /{}/{SECRET_STAGE}: {e}", dev.rel()))
        };
        let dev_fd = rustix::io::fcntl_dupfd_cloexec(dev.fd(), 0).map_err(|e| err("open", e))?;
        rustix::fs::mkdirat(&dev_fd, SECRET_STAGE, RMode::from_raw_mode(0o700))
            .map_err(|e| err("create", e))?;
        let dir = rustix::fs::openat(
            &dev_fd,
            SECRET_STAGE,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            RMode::empty(),
        )
        .map_err(|e| err("open", e))?;
        Ok(SecretStage {
            dev: dev_fd,
            dir,
            names: Vec::new(),
        })
    }

    /// Writes one secret; returns a path to bind-mount it from.
    fn write(&mut self, data: &SecretData, mode: u32, uid: u32, gid: u32) -> Result<PathBuf> {
        use rustix::fs::{Mode as RMode, OFlags};
        use std::io::Write as _;
        use std::os::fd::AsRawFd;
        let name = self.names.len().to_string();
        let err = |what: &str, e: std::io::Error| {
            SandboxError::Setup(format!("{what} a secret file on /dev: {e}"))
        };
        let fd = rustix::fs::openat(
            &self.dir,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            RMode::from_raw_mode(0o600),
        )
        .map_err(|e| err("create", e.into()))?;
        self.names.push(name.clone());
        let mut f = fs::File::from(fd);
        f.write_all(&data.0).map_err(|e| err("write", e))?;
        rustix::fs::fchown(
            &f,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(|e| err("chown", e.into()))?;
        rustix::fs::fchmod(&f, RMode::from_raw_mode(mode & 0o7777))
            .map_err(|e| err("chmod", e.into()))?;
        Ok(PathBuf::from(format!(
            "/proc/self/fd/{}/{name}",
            self.dir.as_raw_fd()
        )))
    }

    /// Removes the staged names (the mounted files stay).
    fn finish(self) -> Result<()> {
        use rustix::fs::AtFlags;
        let err = |e: rustix::io::Errno| {
            SandboxError::Setup(format!("remove the staged secrets from /dev: {e}"))
        };
        for name in &self.names {
            rustix::fs::unlinkat(&self.dir, name.as_str(), AtFlags::empty()).map_err(err)?;
        }
        rustix::fs::unlinkat(&self.dev, SECRET_STAGE, AtFlags::REMOVEDIR).map_err(err)?;
        Ok(())
    }
}

/// A tmpfs /dev with the standard nodes, pts, shm and the usual symlinks,
/// mounted on `target` (the open mount point at `place`); returns the
/// mounted tmpfs, open, in which everything is made by descriptor.
///
/// The tmpfs is `nodev`, so a node the step makes there (it has
/// CAP_MKNOD, as under Docker, which relies on the devices cgroup instead)
/// cannot be opened; the standard nodes are bind mounts of the host's,
/// which keep their own (device-permitting) mount flags.
fn mount_dev(place: &Target, target: &Path) -> Result<Dir> {
    do_mount(
        Some(Path::new("tmpfs")),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    // Opened again: the mount point's own descriptor still names the
    // directory under the tmpfs.
    let dev = place.dir()?;
    let err = |e: RootError| SandboxError::Setup(format!("/dev: {e}"));
    for name in DEVICES {
        dev.create_file(OsStr::new(name), 0o666).map_err(err)?;
        let host = Path::new("/dev").join(name);
        let node = Target::at(&dev, name)?.open()?;
        do_mount(Some(&host), node.path(), None, MsFlags::MS_BIND, None)?;
    }
    dev.mkdir(OsStr::new("pts"), 0o777).map_err(err)?;
    let pts = Target::at(&dev, "pts")?.open()?;
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    // gid=5 (tty) is not mapped in a single-id user namespace: retry without.
    do_mount(
        Some(Path::new("devpts")),
        pts.path(),
        Some("devpts"),
        pts_flags,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .or_else(|_| {
        do_mount(
            Some(Path::new("devpts")),
            pts.path(),
            Some("devpts"),
            pts_flags,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
    })?;
    dev.mkdir(OsStr::new("shm"), 0o777).map_err(err)?;
    do_mount(
        Some(Path::new("shm")),
        Target::at(&dev, "shm")?.open()?.path(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        dev.symlink(OsStr::new(link), OsStr::new(target))
            .map_err(err)?;
    }
    let _ = dev.chmod_self(0o755);
    Ok(dev)
}

/// A mount point inside the root: the directory that holds it, open, and
/// its name there. Mounts go onto a descriptor of the mount point itself
/// (`/proc/self/fd/N`, as runc does since CVE-2021-30465), opened through
/// that directory without following the name, so no path string is
/// resolved again between the check and the mount.
pub(crate) struct Target {
    parent: Dir,
    name: OsString,
}

/// An open mount point (an `O_PATH` descriptor) and the `/proc/self/fd`
/// path that names it for mount(2).
struct Opened {
    _fd: OwnedFd,
    path: PathBuf,
}

impl Opened {
    fn path(&self) -> &Path {
        &self.path
    }
}

impl Target {
    /// The directory holding `rel` (a resolved path below the root, no
    /// symlinks in it: each component is opened without following it) and
    /// the last component.
    fn parent_of<'a>(root: &Root, rel: &'a Path) -> Result<(Dir, &'a OsStr)> {
        let bad =
            || SandboxError::InvalidSpec(format!("mount point {} names the root", rel.display()));
        let name = rel.file_name().ok_or_else(bad)?;
        let mut dir = root.top().map_err(in_root(root.path()))?;
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                let std::path::Component::Normal(c) = c else {
                    return Err(bad());
                };
                dir = dir.subdir(c).map_err(in_root(root.path()))?;
            }
        }
        Ok((dir, name))
    }

    fn new(root: &Root, rel: &Path) -> Result<Target> {
        let (parent, name) = Target::parent_of(root, rel)?;
        Ok(Target {
            name: name.to_os_string(),
            parent,
        })
    }

    /// `name` in `dir`.
    fn at(dir: &Dir, name: &str) -> Result<Target> {
        Ok(Target {
            parent: dir
                .try_clone()
                .map_err(|e| SandboxError::Setup(e.to_string()))?,
            name: OsString::from(name),
        })
    }

    /// Opens the mount point as it is now (after a mount on it: the root
    /// of what is mounted). A symlink is refused, never followed.
    fn open(&self) -> Result<Opened> {
        use rustix::fs::{Mode, OFlags};
        let err = |e: rustix::io::Errno| {
            SandboxError::Setup(format!(
                "open mount point /{}: {e}",
                self.parent.rel_of(&self.name)
            ))
        };
        let fd = rustix::fs::openat(
            self.parent.fd(),
            self.name.as_os_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        let st = rustix::fs::fstat(&fd).map_err(err)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
            return Err(err(rustix::io::Errno::LOOP));
        }
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        Ok(Opened { _fd: fd, path })
    }

    /// The mount point as a directory (after a mount on it: the root of
    /// what is mounted).
    fn dir(&self) -> Result<Dir> {
        self.parent
            .subdir(&self.name)
            .map_err(|e| SandboxError::Setup(e.to_string()))
    }
}

/// Turns a [`RootError`] (which names a path below the root) into a setup
/// error that names the root too.
fn in_root(root: &Path) -> impl Fn(RootError) -> SandboxError + '_ {
    move |e| SandboxError::Setup(format!("{}: {e}", root.display()))
}

/// Hides [`MASKED_PATHS`] and makes [`READONLY_PATHS`] read-only under the
/// step's `/proc` and `/sys` (mounted below `root` by [`mount_all`]), as
/// Docker does; see the `confine` module. Paths this kernel lacks (or a
/// `/sys` a user namespace could not mount) are skipped.
///
/// These mounts go on paths: every target lies inside the procfs or sysfs
/// that [`mount_all`] has just mounted (at a place resolved with no symlink
/// left), whose entries the image cannot shape, and nothing runs in the
/// container yet that could change the way there.
pub(crate) fn mask_paths(plan: &Plan, root: &Path) -> Result<()> {
    let mount_of = |want: fn(&What) -> bool| {
        plan.mounts
            .iter()
            .find(|m| want(&m.what))
            .map(|m| root.join(&m.rel))
    };
    let proc_dir = mount_of(|w| matches!(w, What::Proc));
    let sys_dir = mount_of(|w| matches!(w, What::Sys));
    let place = |p: &str| -> Option<PathBuf> {
        if let Some(rest) = p.strip_prefix("/proc/") {
            proc_dir.as_ref().map(|d| d.join(rest))
        } else {
            let rest = p.strip_prefix("/sys/")?;
            sys_dir.as_ref().map(|d| d.join(rest))
        }
    };
    let present = |target: &Path| match fs::symlink_metadata(target) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SandboxError::Io {
            context: format!("stat {}", target.display()),
            source: e,
        }),
    };
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for p in MASKED_PATHS {
        let Some(target) = place(p) else { continue };
        let Some(md) = present(&target)? else {
            continue;
        };
        if md.is_dir() {
            do_mount(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                hidden | MsFlags::MS_RDONLY,
                Some("size=4k,mode=555"),
            )?;
        } else {
            do_mount(
                Some(Path::new("/dev/null")),
                &target,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    for p in READONLY_PATHS {
        let Some(target) = place(p) else { continue };
        if present(&target)?.is_none() {
            continue;
        }
        do_mount(
            Some(&target),
            &target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        remount_readonly(&target)?;
    }
    Ok(())
}

/// Removes the stubs of `plan` from `upper` (see the module docs).
///
/// The upper dir holds what the step wrote: every component of a stub's
/// path is opened without following it, and a stub whose path is no longer
/// made of real directories is left alone (the step replaced it).
pub(crate) fn cleanup_stubs(plan: &Plan, upper: &Path, lower: &Path) -> Result<()> {
    use rustix::fs::AtFlags;
    let up = Root::open(upper).map_err(in_root(upper))?;
    let mut created: Vec<&PathBuf> = plan
        .mounts
        .iter()
        .flat_map(|m| m.create.iter().map(|(p, _)| p))
        .collect();
    created.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for rel in created {
        let Ok((dir, name)) = Target::parent_of(&up, rel) else {
            continue;
        };
        let Ok(Some(md)) = dir.lstat(name) else {
            continue;
        };
        if md.is_dir() {
            // Not empty: the command put something there; keep it.
            let _ = rustix::fs::unlinkat(dir.fd(), name, AtFlags::REMOVEDIR);
        } else if md.kind == rustix::fs::FileType::RegularFile && md.size == 0 {
            dir.remove_all(name).map_err(in_root(upper))?;
        }
    }
    let mut parents: Vec<&Times> = plan.parents.iter().collect();
    parents.sort_by_key(|t| std::cmp::Reverse(t.rel.components().count()));
    for t in parents {
        let here = if t.rel.as_os_str().is_empty() {
            up.top().ok()
        } else {
            Target::parent_of(&up, &t.rel)
                .ok()
                .and_then(|(d, name)| d.subdir(name).ok())
        };
        if let Some(d) = here {
            d.set_times(OsStr::new("."), t.atime, t.mtime)
                .map_err(|e| SandboxError::Setup(format!("restore times: {e}")))?;
        }
        let mut rel = t.rel.clone();
        while let Ok((dir, name)) = Target::parent_of(&up, &rel) {
            if !redundant_copy_up(&dir, name, &lower.join(&rel)) {
                break;
            }
            rustix::fs::unlinkat(dir.fd(), name, AtFlags::REMOVEDIR).map_err(|e| {
                SandboxError::Io {
                    context: format!("remove copied-up dir {}", upper.join(&rel).display()),
                    source: e.into(),
                }
            })?;
            rel.pop();
        }
    }
    Ok(())
}

/// Whether `name` in the upper directory `dir` is a directory that
/// overlayfs copied up without any change of its own (`low` is its lower
/// counterpart).
// The stat fields' types differ between targets.
#[allow(clippy::unnecessary_cast)]
fn redundant_copy_up(dir: &Dir, name: &OsStr, low: &Path) -> bool {
    let (Ok(u), Ok(l)) = (
        rustix::fs::statat(dir.fd(), name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW),
        fs::symlink_metadata(low),
    ) else {
        return false;
    };
    rustix::fs::FileType::from_raw_mode(u.st_mode) == rustix::fs::FileType::Directory
        && l.is_dir()
        && dir
            .subdir(name)
            .and_then(|d| d.names())
            .is_ok_and(|n| n.is_empty())
        && !crate::snapshot::is_opaque(&crate::snapshot::at(dir, name))
        && u.st_mode == l.mode()
        && u.st_uid == l.uid()
        && u.st_gid == l.gid()
        && u.st_mtime as i64 == l.mtime()
        && u.st_mtime_nsec as i64 == l.mtime_nsec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_symlinks_inside_the_root() -> Result<()> {
        let t = tempfile::tempdir().ctx(|| "tempdir".into())?;
        let r = t.path();
        fs::create_dir_all(r.join("real/etc")).ctx(|| "mkdir".into())?;
        std::os::unix::fs::symlink("/real/etc", r.join("etc")).ctx(|| "ln".into())?;
        std::os::unix::fs::symlink("../../../../..", r.join("up")).ctx(|| "ln".into())?;
        std::os::unix::fs::symlink("loop", r.join("loop")).ctx(|| "ln".into())?;
        assert_eq!(
            resolve_in_root(r, "/etc/hosts")?,
            PathBuf::from("real/etc/hosts")
        );
        assert_eq!(
            resolve_in_root(r, "/up/etc/x")?,
            PathBuf::from("real/etc/x")
        );
        assert_eq!(resolve_in_root(r, "/../../a/./b")?, PathBuf::from("a/b"));
        assert!(resolve_in_root(r, "/loop/x").is_err());
        Ok(())
    }

    /// The step replaced `/etc` (where a stub was made) by a symlink to a
    /// host directory: cleaning up the stubs must not remove or touch
    /// anything there.
    #[test]
    fn stub_cleanup_never_follows_a_symlink_the_step_left() -> Result<()> {
        let t = tempfile::tempdir().ctx(|| "tempdir".into())?;
        let (upper, lower, host) = (
            t.path().join("upper"),
            t.path().join("lower"),
            t.path().join("host"),
        );
        for d in [&upper, &lower, &host.join("sub")] {
            fs::create_dir_all(d).ctx(|| "mkdir".into())?;
        }
        fs::create_dir(lower.join("etc")).ctx(|| "mkdir".into())?;
        fs::write(host.join("hosts"), "").ctx(|| "write".into())?;
        std::os::unix::fs::symlink(&host, upper.join("etc")).ctx(|| "ln".into())?;
        let before = fs::metadata(host.join("sub")).ctx(|| "stat".into())?;
        let plan = Plan {
            mounts: vec![
                Planned {
                    rel: PathBuf::from("etc/hosts"),
                    what: What::Proc,
                    create: vec![(PathBuf::from("etc/hosts"), false)],
                },
                Planned {
                    rel: PathBuf::from("etc/sub/x"),
                    what: What::Proc,
                    create: vec![(PathBuf::from("etc/sub/x"), true)],
                },
            ],
            parents: vec![Times {
                rel: PathBuf::from("etc/sub"),
                atime: (1, 0),
                mtime: (1, 0),
            }],
        };
        fs::create_dir(host.join("sub/x")).ctx(|| "mkdir".into())?;
        cleanup_stubs(&plan, &upper, &lower)?;
        assert!(host.join("hosts").is_file(), "a host file was removed");
        assert!(host.join("sub/x").is_dir(), "a host dir was removed");
        let after = fs::metadata(host.join("sub")).ctx(|| "stat".into())?;
        assert_eq!(after.mtime(), before.mtime(), "host dir times changed");
        Ok(())
    }
}
