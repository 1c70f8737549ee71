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
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::sys::time::TimeSpec;
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
    for m in &plan.mounts {
        for (rel, is_dir) in &m.create {
            let p = root.join(rel);
            if *is_dir {
                fs::create_dir(&p).ctx(|| format!("create mount point {}", p.display()))?;
            } else {
                fs::File::create(&p).ctx(|| format!("create mount point {}", p.display()))?;
            }
        }
        let target = root.join(&m.rel);
        let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        match &m.what {
            What::Proc => do_mount(
                Some(Path::new("proc")),
                &target,
                Some("proc"),
                nosuid_nodev_noexec,
                None,
            )?,
            What::Dev => {
                mount_dev(&target)?;
                if plan
                    .mounts
                    .iter()
                    .any(|m| matches!(m.what, What::Secret { .. }))
                {
                    secrets = Some(SecretStage::new(&target)?);
                }
            }
            What::Sys => {
                // A fresh sysfs needs a network namespace owned by our user
                // namespace; otherwise bind the host's read-only.
                let fresh = isolation == Isolation::Root || network == Network::None;
                let fresh_ok = fresh
                    && do_mount(
                        Some(Path::new("sysfs")),
                        &target,
                        Some("sysfs"),
                        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
                        None,
                    )
                    .is_ok();
                if !fresh_ok {
                    let bound = do_mount(
                        Some(Path::new("/sys")),
                        &target,
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None,
                    )
                    .and_then(|()| remount_readonly(&target));
                    if let Err(e) = bound {
                        if isolation == Isolation::Root {
                            return Err(e);
                        }
                        notes.push(format!("/sys not mounted in the user namespace: {e}"));
                    }
                }
            }
            What::File(source) => {
                do_mount(Some(source), &target, None, MsFlags::MS_BIND, None)?;
                remount_bind(&target, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
            }
            What::Bind { source, readonly } => {
                do_mount(
                    Some(source),
                    &target,
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
                remount_bind(&target, extra)?;
            }
            What::Tmpfs { size } => {
                let mut data = "mode=1777".to_string();
                if let Some(s) = size {
                    data.push_str(&format!(",size={s}"));
                }
                do_mount(
                    Some(Path::new("tmpfs")),
                    &target,
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
                do_mount(Some(&source), &target, None, MsFlags::MS_BIND, None)?;
                remount_readonly(&target)?;
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
    fn new(dev: &Path) -> Result<SecretStage> {
        use rustix::fs::{Mode as RMode, OFlags};
        let err = |what: &str, e: rustix::io::Errno| {
            SandboxError::Setup(format!("{what} {}/{SECRET_STAGE}: {e}", dev.display()))
        };
        let dev_fd = rustix::fs::open(
            dev,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            RMode::empty(),
        )
        .map_err(|e| err("open", e))?;
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

/// A tmpfs /dev with the standard nodes, pts, shm and the usual symlinks.
///
/// The tmpfs is `nodev`, so a node the step makes there (it has
/// CAP_MKNOD, as under Docker, which relies on the devices cgroup instead)
/// cannot be opened; the standard nodes are bind mounts of the host's,
/// which keep their own (device-permitting) mount flags.
fn mount_dev(dev: &Path) -> Result<()> {
    do_mount(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let p = dev.join(name);
        fs::File::create(&p).ctx(|| format!("create {}", p.display()))?;
        let host = Path::new("/dev").join(name);
        do_mount(Some(&host), &p, None, MsFlags::MS_BIND, None)?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts).ctx(|| format!("create {}", pts.display()))?;
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    // gid=5 (tty) is not mapped in a single-id user namespace: retry without.
    do_mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        pts_flags,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .or_else(|_| {
        do_mount(
            Some(Path::new("devpts")),
            &pts,
            Some("devpts"),
            pts_flags,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
    })?;
    let shm = dev.join("shm");
    fs::create_dir(&shm).ctx(|| format!("create {}", shm.display()))?;
    do_mount(
        Some(Path::new("shm")),
        &shm,
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
        let p = dev.join(link);
        std::os::unix::fs::symlink(target, &p).ctx(|| format!("symlink {}", p.display()))?;
    }
    let _ = fs::set_permissions(dev, fs::Permissions::from_mode(0o755));
    Ok(())
}

/// Hides [`MASKED_PATHS`] and makes [`READONLY_PATHS`] read-only under the
/// step's `/proc` and `/sys` (mounted below `root` by [`mount_all`]), as
/// Docker does; see the `confine` module. Paths this kernel lacks (or a
/// `/sys` a user namespace could not mount) are skipped.
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
pub(crate) fn cleanup_stubs(plan: &Plan, upper: &Path, lower: &Path) -> Result<()> {
    let mut created: Vec<&PathBuf> = plan
        .mounts
        .iter()
        .flat_map(|m| m.create.iter().map(|(p, _)| p))
        .collect();
    created.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for rel in created {
        let p = upper.join(rel);
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            // Not empty: the command put something there; keep it.
            let _ = fs::remove_dir(&p);
        } else if md.is_file() && md.len() == 0 {
            fs::remove_file(&p).ctx(|| format!("remove mount stub {}", p.display()))?;
        }
    }
    let mut parents: Vec<&Times> = plan.parents.iter().collect();
    parents.sort_by_key(|t| std::cmp::Reverse(t.rel.components().count()));
    for t in parents {
        let p = upper.join(&t.rel);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            utimensat(
                nix::fcntl::AT_FDCWD,
                &p,
                &TimeSpec::new(t.atime.0, t.atime.1),
                &TimeSpec::new(t.mtime.0, t.mtime.1),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| ms(e, || format!("restore times of {}", p.display())))?;
        }
        let mut rel = t.rel.clone();
        while !rel.as_os_str().is_empty() && redundant_copy_up(&upper.join(&rel), &lower.join(&rel))
        {
            fs::remove_dir(upper.join(&rel))
                .ctx(|| format!("remove copied-up dir {}", upper.join(&rel).display()))?;
            rel.pop();
        }
    }
    Ok(())
}

/// An upper dir that overlayfs copied up without any change of its own.
fn redundant_copy_up(up: &Path, low: &Path) -> bool {
    let (Ok(u), Ok(l)) = (fs::symlink_metadata(up), fs::symlink_metadata(low)) else {
        return false;
    };
    u.is_dir()
        && l.is_dir()
        && fs::read_dir(up).is_ok_and(|mut d| d.next().is_none())
        && !crate::snapshot::is_opaque(up)
        && u.mode() == l.mode()
        && u.uid() == l.uid()
        && u.gid() == l.gid()
        && u.mtime() == l.mtime()
        && u.mtime_nsec() == l.mtime_nsec()
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
}
