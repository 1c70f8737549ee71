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

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_image::root::{Dir, NewDir, Root, RootError};

use kiln_image::{BlobStore, Digest, Layer};
use kiln_sandbox::{IgnoreSet, Mount, MountKind};

use super::{Materialize, RootCx, StageRoots};
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
            .map_err(|_| BuildError::Poisoned("in-place root"))?;
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

    /// The container root as a [`Root`] that refuses to create anything at
    /// or below the paths an in-place build must not touch.
    pub(crate) fn open_root(&self) -> Result<Root, BuildError> {
        Root::open(Path::new("/"))
            .map(|r| r.protecting(self.protected.clone()))
            .map_err(|source| BuildError::Root {
                what: "in-place root".into(),
                source,
            })
    }
}

impl StageRoots for InPlaceRoot {
    fn private(&self) -> bool {
        false
    }

    /// One root filesystem: one stage at a time.
    fn max_jobs(&self, _wanted: usize) -> usize {
        1
    }

    fn kept(&self) -> Option<&super::kept::Snapshots> {
        None
    }

    /// The container's own root.
    fn new_root(
        &self,
        _fresh: &mut dyn FnMut() -> Result<PathBuf, BuildError>,
    ) -> Result<PathBuf, BuildError> {
        Ok(PathBuf::from("/"))
    }

    /// The root belongs to the next stage: a later stage that reads this
    /// one gets its own copy, made from the layers.
    fn finished_root(
        &self,
        _root: PathBuf,
        _applied: usize,
        fresh: &mut dyn FnMut() -> Result<PathBuf, BuildError>,
    ) -> Result<(PathBuf, usize), BuildError> {
        Ok((fresh()?, 0))
    }

    fn materialize(
        &self,
        cx: &RootCx<'_>,
        target: Materialize<'_>,
        _only_reads: bool,
    ) -> Result<(), BuildError> {
        self.prepare(cx.store, target.layers, target.applied)
    }

    fn holds(&self, layers: &[Layer]) {
        if let Ok(mut current) = self.current.lock() {
            *current = layers.iter().map(|l| l.digest.clone()).collect();
        }
    }

    fn in_place(&self) -> Option<&InPlaceRoot> {
        Some(self)
    }
}

/// What [`place_mounts`] changed, undone by [`Placed::restore`] (or on drop).
/// Every entry is held as the directory it is in (a descriptor) and its
/// name there, so undoing never re-resolves a path the step may have
/// changed (a RUN could replace a parent with a symlink).
#[derive(Default)]
pub(crate) struct Placed {
    /// Targets created for mounts, removed afterwards.
    targets: Vec<(Dir, OsString)>,
    /// (directory, original name, aside name): entries moved out of the way.
    moved: Vec<(Dir, OsString, OsString)>,
    /// Parent directories created for targets, deepest last.
    parents: Vec<(Dir, OsString)>,
    done: bool,
}

impl Placed {
    /// Removes the placed targets and puts back what was moved aside.
    pub(crate) fn restore(&mut self) -> Result<(), BuildError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let fail = |source: RootError| BuildError::Root {
            what: "in-place: undo a RUN mount".into(),
            source,
        };
        for (dir, name) in self.targets.iter().rev() {
            dir.remove_all(name).map_err(fail)?;
        }
        for (dir, original, aside) in self.moved.iter().rev() {
            dir.rename(aside, dir, original).map_err(fail)?;
        }
        for (dir, name) in self.parents.iter().rev() {
            // Only if still empty: the step may have put files there, and
            // those are part of its layer.
            let _ = dir.remove_empty_dir(name);
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

/// Puts each mount's source at its target under `root` (see the module
/// doc) and adds the targets to `ignore` so the step's snapshot leaves
/// them out. Parents that had to be created are listed so they can be
/// removed when the step left them empty. Every write acts on the
/// resolved parent's descriptor.
pub(crate) fn place_mounts(
    root: &Path,
    mounts: &[Mount],
    ignore: &mut IgnoreSet,
) -> Result<Placed, BuildError> {
    let mut placed = Placed::default();
    let r = Root::open(root).map_err(|source| BuildError::Root {
        what: "in-place root".into(),
        source,
    })?;
    for (n, m) in mounts.iter().enumerate() {
        let rel = m.target.trim_start_matches('/');
        if rel.is_empty() {
            return Err(BuildError::MountTarget {
                target: m.target.clone(),
                reason: "in-place builds cannot mount over /".into(),
            });
        }
        // The target is resolved inside the root first (symlinks the image
        // planted are followed there, never out of it), and judged on where
        // it leads: a mount may not stand on kiln's own files or a mount point.
        let fail = |source: RootError| BuildError::Root {
            what: format!("RUN --mount target {}", m.target),
            source,
        };
        let resolved: PathBuf = r.resolve(rel, false, false).map_err(fail)?.iter().collect();
        if resolved.as_os_str().is_empty()
            || ignore.is_ignored(&resolved)
            || ignore.has_ignored_below(&resolved)
        {
            return Err(BuildError::MountTarget {
                target: m.target.clone(),
                reason: format!(
                    "leads to /{}, which an in-place build must not touch",
                    resolved.display()
                ),
            });
        }
        // Create missing parents (recorded) and move an existing entry aside.
        let (made, name) = r
            .parent(&resolved.to_string_lossy(), Some(NewDir::default()))
            .map_err(fail)?
            .ok_or_else(|| BuildError::MountTarget {
                target: m.target.clone(),
                reason: "its parent cannot be created".into(),
            })?;
        for c in &made.created {
            if let Some((pdir, pname)) = r.parent(c, None).map_err(fail)? {
                placed.parents.push((pdir.dir, pname));
            }
        }
        let dir = made.dir;
        let shown = format!("/{}", dir.rel_of(&name));
        if dir.lstat(&name).map_err(fail)?.is_some() {
            let mut aside = OsString::from(format!(".kiln-aside-{n}-"));
            aside.push(&name);
            dir.rename(&name, &dir, &aside).map_err(fail)?;
            ignore.insert(&Path::new("/").join(dir.rel_of(&aside)));
            placed
                .moved
                .push((dir.try_clone().map_err(fail)?, name.clone(), aside));
        }
        // Listed before it is made: whatever fails below, `restore` (or
        // the drop) removes it.
        placed
            .targets
            .push((dir.try_clone().map_err(fail)?, name.clone()));
        let write = |e: std::io::Error| BuildError::Io {
            path: PathBuf::from(&shown),
            source: e,
        };
        match &m.kind {
            MountKind::Bind { source, .. } => {
                let meta = std::fs::metadata(source).map_err(io(source))?;
                if meta.is_dir() {
                    dir.symlink(&name, source.as_os_str()).map_err(fail)?;
                } else {
                    use std::os::unix::fs::MetadataExt;
                    let mut from = std::fs::File::open(source).map_err(io(source))?;
                    let mut to = dir.create_file(&name, 0o600).map_err(fail)?;
                    std::io::copy(&mut from, &mut to).map_err(write)?;
                    let _ = rustix::fs::fchown(
                        &to,
                        Some(rustix::fs::Uid::from_raw(meta.uid())),
                        Some(rustix::fs::Gid::from_raw(meta.gid())),
                    );
                    rustix::fs::fchmod(&to, rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777))
                        .map_err(|e| write(e.into()))?;
                }
            }
            MountKind::Tmpfs { .. } => {
                dir.mkdir(&name, 0o755).map_err(fail)?;
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
                let mut f = dir.create_file(&name, 0o600).map_err(fail)?;
                f.write_all(&data.0).map_err(write)?;
                let _ = rustix::fs::fchown(
                    &f,
                    Some(rustix::fs::Uid::from_raw(*uid)),
                    Some(rustix::fs::Gid::from_raw(*gid)),
                );
                rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(*mode & 0o7777))
                    .map_err(|e| write(e.into()))?;
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
