//! In-place (Kaniko-style) builds: where neither user namespaces nor
//! CAP_SYS_ADMIN exist, kiln's own container root *is* the stage's root.
//!
//! This module owns that root: which layers are on it now
//! ([`InPlaceRoot::prepare`] wipes it and applies a stage's layers, or only
//! the missing ones when the root already holds a prefix of them), the
//! paths it must never touch (`/proc`, `/sys`, `/dev`, kiln's own
//! directories, every mount point, `--ignore-path`), and how `RUN --mount`
//! is emulated without mount namespaces ([`place_mounts`]): a directory
//! mount becomes a symlink to its source, a file mount a copy, a tmpfs an
//! empty directory; whatever stood at the target is moved aside and put
//! back afterwards, and the targets stay out of the step's snapshot.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_image::{BlobStore, Digest, Layer};
use kiln_sandbox::{IgnoreSet, Mount, MountKind};

use crate::BuildError;

/// kiln's own directory in its image; never part of a build.
pub const KILN_DIR: &str = "/kiln";
/// Kaniko's directory: existing Job specs mount configuration under it.
pub const KANIKO_DIR: &str = "/kaniko";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The container root an in-place build works on.
pub(crate) struct InPlaceRoot {
    pub(crate) ignore: IgnoreSet,
    /// The ignored paths relative to `/`, for layer application.
    protected: Vec<String>,
    /// The layers (in order) the root holds now.
    current: Mutex<Vec<Digest>>,
}

impl InPlaceRoot {
    /// The ignore set: always-ignored paths, kiln's and Kaniko's
    /// directories, every mount point, and `keep` (kiln's cache, scratch
    /// and context directories, its executable, `--ignore-path`).
    pub(crate) fn new(keep: &[PathBuf]) -> Result<Self, BuildError> {
        let mut extra: Vec<PathBuf> = vec![PathBuf::from(KANIKO_DIR)];
        for p in keep {
            // Keep what kiln uses under its real name and as given.
            if let Ok(c) = std::fs::canonicalize(p) {
                extra.push(c);
            }
            extra.push(p.clone());
        }
        let ignore = IgnoreSet::from_current_mounts(Path::new("/"), Path::new(KILN_DIR), &extra)?;
        let protected = ignore
            .paths()
            .iter()
            .map(|p| p.to_string_lossy().trim_start_matches('/').to_string())
            .filter(|p| !p.is_empty())
            .collect();
        Ok(InPlaceRoot {
            ignore,
            protected,
            current: Mutex::new(Vec::new()),
        })
    }

    /// Makes the root hold exactly `layers[..]`: when it already holds a
    /// prefix of them only the rest are applied, otherwise it is wiped
    /// (sparing the ignored paths) and all are applied. `applied` is the
    /// caller's count of layers known to be on the root.
    pub(crate) fn prepare(
        &self,
        store: &BlobStore,
        layers: &[Layer],
        applied: &mut usize,
    ) -> Result<(), BuildError> {
        let mut current = self
            .current
            .lock()
            .map_err(|_| BuildError::Message("in-place root lock poisoned".into()))?;
        let is_prefix = current.len() <= layers.len()
            && current.iter().zip(layers).all(|(a, b)| *a == b.digest);
        if is_prefix {
            *applied = current.len();
        } else {
            tracing::info!("in-place: clearing the root filesystem for the next stage");
            kiln_sandbox::wipe_root(Path::new("/"), &self.ignore, true)?;
            current.clear();
            *applied = 0;
        }
        let opts = kiln_image::ApplyOptions {
            same_owner: rustix::process::geteuid().is_root(),
            protected: self.protected.clone(),
        };
        while let Some(layer) = layers.get(*applied) {
            kiln_image::apply_layer(store, &layer.digest, Path::new("/"), &opts)?;
            current.push(layer.digest.clone());
            *applied += 1;
        }
        Ok(())
    }

    /// Records that a step which ran on the root left it holding `layers`.
    pub(crate) fn holds(&self, layers: &[Layer]) {
        if let Ok(mut current) = self.current.lock() {
            *current = layers.iter().map(|l| l.digest.clone()).collect();
        }
    }
}

/// What [`place_mounts`] changed, undone by [`Placed::restore`] (or on drop).
#[derive(Default)]
pub(crate) struct Placed {
    /// Targets created for mounts, removed afterwards.
    targets: Vec<PathBuf>,
    /// (original, aside): entries moved out of the way.
    moved: Vec<(PathBuf, PathBuf)>,
    /// Parent directories created for targets, deepest last.
    parents: Vec<PathBuf>,
    done: bool,
}

impl Placed {
    /// Removes the placed targets and puts back what was moved aside.
    pub(crate) fn restore(&mut self) -> Result<(), BuildError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        for t in self.targets.iter().rev() {
            remove(t)?;
        }
        for (original, aside) in self.moved.iter().rev() {
            std::fs::rename(aside, original).map_err(io(original))?;
        }
        for p in self.parents.iter().rev() {
            // Only if still empty: the step may have put files there, and
            // those are part of its layer.
            let _ = std::fs::remove_dir(p);
        }
        Ok(())
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            tracing::warn!("in-place: could not undo a RUN mount: {e}");
        }
    }
}

fn remove(p: &Path) -> Result<(), BuildError> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(io(p)),
        Ok(_) => std::fs::remove_file(p).map_err(io(p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(p)(e)),
    }
}

/// Puts each mount's source at its target under `root` (see the module
/// doc) and adds the targets to `ignore` so the step's snapshot leaves
/// them out. Parents that had to be created are listed so they can be
/// removed when the step left them empty.
pub(crate) fn place_mounts(
    root: &Path,
    mounts: &[Mount],
    ignore: &mut IgnoreSet,
) -> Result<Placed, BuildError> {
    let mut placed = Placed::default();
    for (n, m) in mounts.iter().enumerate() {
        let rel = m.target.trim_start_matches('/');
        if rel.is_empty() {
            return Err(BuildError::Message(
                "RUN --mount: in-place builds cannot mount over /".into(),
            ));
        }
        // The target is resolved inside the root first (symlinks the image
        // planted are followed there, never out of it), and judged on where
        // it leads: a mount may not stand on kiln's own files or a mount point.
        let fail = |e: kiln_image::root::RootError| {
            BuildError::Message(format!("RUN --mount target {}: {e}", m.target))
        };
        let r = kiln_image::root::Root::open(root).map_err(fail)?;
        let resolved: PathBuf = r.resolve(rel, false, false).map_err(fail)?.iter().collect();
        if resolved.as_os_str().is_empty()
            || ignore.is_ignored(&resolved)
            || ignore.has_ignored_below(&resolved)
        {
            return Err(BuildError::Message(format!(
                "RUN --mount target {} leads to /{}, which an in-place build must not touch",
                m.target,
                resolved.display()
            )));
        }
        let target = root.join(&resolved);
        // Create missing parents (recorded) and move an existing entry aside.
        if let Some(parent) = resolved.parent() {
            let made = r
                .dir(
                    &parent.to_string_lossy(),
                    Some(kiln_image::root::NewDir::default()),
                )
                .map_err(fail)?;
            if let Some(made) = made {
                placed
                    .parents
                    .extend(made.created.iter().map(|c| root.join(c)));
            }
        }
        if std::fs::symlink_metadata(&target).is_ok() {
            let aside = target.with_file_name(format!(
                ".kiln-aside-{n}-{}",
                target
                    .file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_default()
            ));
            std::fs::rename(&target, &aside).map_err(io(&target))?;
            ignore.insert(&Path::new("/").join(aside.strip_prefix(root).unwrap_or(&aside)));
            placed.moved.push((target.clone(), aside));
        }
        // Listed before it is made: whatever fails below, `restore` (or
        // the drop) removes it.
        placed.targets.push(target.clone());
        match &m.kind {
            MountKind::Bind { source, .. } => {
                let meta = std::fs::metadata(source).map_err(io(source))?;
                if meta.is_dir() {
                    std::os::unix::fs::symlink(source, &target).map_err(io(&target))?;
                } else {
                    std::fs::copy(source, &target).map_err(io(&target))?;
                    use std::os::unix::fs::MetadataExt;
                    let _ = std::os::unix::fs::chown(&target, Some(meta.uid()), Some(meta.gid()));
                    std::fs::set_permissions(&target, meta.permissions()).map_err(io(&target))?;
                }
            }
            MountKind::Tmpfs { .. } => {
                std::fs::create_dir(&target).map_err(io(&target))?;
            }
            MountKind::Secret {
                data,
                mode,
                uid,
                gid,
            } => {
                // Without mounts the value has to be a file in the root for
                // the step: created private (never a wider mode), and
                // removed by `restore` on every path.
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&target)
                    .map_err(io(&target))?;
                f.write_all(&data.0).map_err(io(&target))?;
                let _ = rustix::fs::fchown(
                    &f,
                    Some(rustix::fs::Uid::from_raw(*uid)),
                    Some(rustix::fs::Gid::from_raw(*gid)),
                );
                rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(*mode & 0o7777))
                    .map_err(|e| io(&target)(e.into()))?;
            }
        }
        ignore.insert(Path::new(&m.target));
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_files_removed_on_every_path() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        let secret = |target: &str| Mount {
            target: target.into(),
            kind: MountKind::Secret {
                data: kiln_sandbox::SecretData(b"s3cr3t".to_vec()),
                mode: 0o440,
                uid: 0,
                gid: 0,
            },
        };
        let mut ignore = IgnoreSet::new(&root, Path::new("/kiln"), &[]);
        let mut placed =
            place_mounts(&root, &[secret("/run/secrets/tok")], &mut ignore).expect("place");
        let file = root.join("run/secrets/tok");
        assert_eq!(std::fs::read(&file).expect("read"), b"s3cr3t");
        assert_eq!(
            std::fs::metadata(&file).expect("stat").mode() & 0o7777,
            0o440
        );
        assert!(ignore.is_ignored(Path::new("run/secrets/tok")));
        placed.restore().expect("restore");
        assert!(!root.join("run").exists());
        // A later mount failing: the secret placed before it goes with the
        // error (the drop).
        let bad = Mount {
            target: "/etc/missing-source".into(),
            kind: MountKind::Bind {
                source: tmp.path().join("no-such-file"),
                readonly: true,
            },
        };
        let mut ignore = IgnoreSet::new(&root, Path::new("/kiln"), &[]);
        assert!(place_mounts(&root, &[secret("/run/secrets/tok"), bad], &mut ignore).is_err());
        assert!(!root.join("run/secrets/tok").exists());
        assert!(!root.join("etc/missing-source").exists());
    }

    #[test]
    fn mounts_are_placed_and_everything_is_put_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("var/cache/apt")).expect("mkdir");
        std::fs::write(root.join("var/cache/apt/image-file"), "from image").expect("write");
        let cache = tmp.path().join("cache");
        std::fs::create_dir(&cache).expect("mkdir");
        std::fs::write(cache.join("pkg.deb"), "cached").expect("write");
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "s3cr3t").expect("write");
        let mounts = vec![
            Mount {
                target: "/var/cache/apt".into(),
                kind: MountKind::Bind {
                    source: cache.clone(),
                    readonly: false,
                },
            },
            Mount {
                target: "/run/secrets/token".into(),
                kind: MountKind::Bind {
                    source: secret.clone(),
                    readonly: true,
                },
            },
            Mount {
                target: "/scratch".into(),
                kind: MountKind::Tmpfs { size: None },
            },
        ];
        let mut ignore = IgnoreSet::new(&root, Path::new("/kiln"), &[]);
        let mut placed = place_mounts(&root, &mounts, &mut ignore).expect("place");
        assert_eq!(
            std::fs::read_to_string(root.join("var/cache/apt/pkg.deb")).expect("read"),
            "cached"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("run/secrets/token")).expect("read"),
            "s3cr3t"
        );
        assert!(root.join("scratch").is_dir());
        assert!(ignore.is_ignored(Path::new("var/cache/apt")));
        assert!(ignore.is_ignored(Path::new("run/secrets/token")));
        // The step writes through the cache symlink.
        std::fs::write(root.join("var/cache/apt/new.deb"), "new").expect("write");
        placed.restore().expect("restore");
        assert_eq!(
            std::fs::read_to_string(root.join("var/cache/apt/image-file")).expect("read"),
            "from image",
            "the image's directory is back"
        );
        assert!(!root.join("var/cache/apt/new.deb").exists());
        assert_eq!(
            std::fs::read_to_string(cache.join("new.deb")).expect("read"),
            "new",
            "the cache kept what the step wrote"
        );
        assert!(!root.join("run").exists(), "created parents are removed");
        assert!(!root.join("scratch").exists());
        let names: Vec<_> = std::fs::read_dir(root.join("var/cache"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("apt")],
            "no aside left"
        );
    }

    #[test]
    fn a_mount_target_through_an_image_symlink_cannot_reach_kilns_files() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("kiln")).expect("mkdir");
        std::fs::write(root.join("kiln/executor"), "kiln").expect("write");
        std::os::unix::fs::symlink("/kiln", root.join("kl")).expect("symlink");
        std::os::unix::fs::symlink("../../kiln", root.join("up")).expect("symlink");
        let src = tmp.path().join("src");
        std::fs::write(&src, "hostile").expect("write");
        for target in ["/kl/executor", "/up/new/x"] {
            let mounts = vec![Mount {
                target: target.into(),
                kind: MountKind::Bind {
                    source: src.clone(),
                    readonly: true,
                },
            }];
            let mut ignore = IgnoreSet::new(&root, Path::new("/kiln"), &[]);
            let err = match place_mounts(&root, &mounts, &mut ignore) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{target}: placed through the symlink"),
            };
            assert!(err.contains("must not touch"), "{target}: {err}");
            assert_eq!(
                std::fs::read_to_string(root.join("kiln/executor")).expect("read"),
                "kiln"
            );
            assert!(!root.join("kiln/new").exists());
        }
    }
}
