//! Private stage roots: a directory per stage under the build's work dir,
//! filled from layers, from a root kept by an earlier build, or from the
//! copy of a base image another stage just unpacked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::kept::{join_all, Gate, GateHold, SnapshotJob, Snapshots};
use super::{Materialize, RootCx, StageRoots};
use crate::BuildError;

/// See the module doc.
pub(crate) struct PrivateRoots {
    /// Stage roots kept between builds (`None`: no snapshot directory).
    kept: Option<Snapshots>,
    /// One lock per base image state: stages on the same base that start
    /// together unpack it once; the others take the kept copy.
    base_locks: Mutex<HashMap<String, Arc<Gate>>>,
}

impl PrivateRoots {
    pub(crate) fn new(kept: Option<Snapshots>) -> Self {
        PrivateRoots {
            kept,
            base_locks: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps a copy of the base image's files, just unpacked in the stage
    /// root, for the next stage or build on that base; `hold` (the base's
    /// gate) is let go once it is kept. In the `background` the copy is
    /// linked while the stage's next step runs, which must not change the
    /// root before the snapshots are joined (that step may see the
    /// link counts of the base's files go up meanwhile; layers do not
    /// record them).
    fn keep_base(
        rootfs: &Path,
        snapshotting: &mut Vec<SnapshotJob>,
        snaps: &Snapshots,
        key: &str,
        hold: Option<GateHold>,
        background: bool,
    ) {
        let keep = {
            let (snaps, key, root) = (snaps.clone(), key.to_string(), rootfs.to_path_buf());
            move || {
                if let Err(e) = snaps.keep_linked(&key, &root, None) {
                    tracing::debug!("no snapshot of the base image's files: {e}");
                }
                drop(hold);
            }
        };
        if !background {
            keep();
            return;
        }
        match std::thread::Builder::new()
            .name("kiln-snapshot".into())
            .spawn(keep)
        {
            Ok(thread) => snapshotting.push(SnapshotJob {
                thread,
                frozen: None,
            }),
            Err(e) => tracing::debug!("no snapshot of the base image's files: {e}"),
        }
    }
}

impl StageRoots for PrivateRoots {
    fn private(&self) -> bool {
        true
    }

    fn max_jobs(&self, wanted: usize) -> usize {
        wanted
    }

    fn kept(&self) -> Option<&Snapshots> {
        self.kept.as_ref()
    }

    fn new_root(
        &self,
        fresh: &mut dyn FnMut() -> Result<PathBuf, BuildError>,
    ) -> Result<PathBuf, BuildError> {
        fresh()
    }

    fn finished_root(
        &self,
        root: PathBuf,
        applied: usize,
        _fresh: &mut dyn FnMut() -> Result<PathBuf, BuildError>,
    ) -> Result<(PathBuf, usize), BuildError> {
        Ok((root, applied))
    }

    fn materialize(
        &self,
        cx: &RootCx<'_>,
        t: Materialize<'_>,
        only_reads: bool,
    ) -> Result<(), BuildError> {
        // Unpacked from nothing: the base image's files are kept too, for
        // the next stage or build on the same base.
        let base = match (*t.applied, t.states.first()) {
            (0, Some((n, key))) if *n > 0 => Some((*n, key.clone())),
            _ => None,
        };
        let restored = |n: usize| {
            cx.progress.info(&format!(
                "files of {} of the stage's {} layer(s) restored from a kept snapshot",
                n,
                t.layers.len()
            ));
        };
        if let (0, Some(snaps)) = (*t.applied, &self.kept) {
            // The latest state a previous build kept, instead of unpacking
            // the layers below it.
            let found = t
                .states
                .iter()
                .rev()
                .find(|(n, key)| *n > 0 && *n <= t.layers.len() && snaps.take(key, t.rootfs));
            if let Some((n, _)) = found {
                restored(*n);
                *t.applied = *n;
            }
        }
        // Held until the base is unpacked and kept: a stage on the same
        // base that started at the same time waits, then takes the copy
        // (a rename) instead of unpacking it a second time beside it.
        let base_lock = match (*t.applied, &base, &self.kept) {
            (0, Some((_, key)), Some(snaps)) if snaps.reuses() => self
                .base_locks
                .lock()
                .ok()
                .map(|mut m| m.entry(key.clone()).or_default().clone()),
            _ => None,
        };
        let mut base_guard = base_lock.as_ref().and_then(Gate::hold);
        if base_guard.is_some() {
            if let (Some((n, key)), Some(snaps)) = (&base, &self.kept) {
                // Kept by the stage that held the lock before.
                if snaps.take(key, t.rootfs) {
                    restored(*n);
                    *t.applied = *n;
                    drop(base_guard.take());
                }
            }
        }
        let opts = kiln_image::ApplyOptions {
            same_owner: rustix::process::geteuid().is_root(),
            protected: Vec::new(),
        };
        let base = base.filter(|_| *t.applied == 0);
        if base.is_none() {
            drop(base_guard.take());
        }
        if *t.applied < t.layers.len() {
            join_all(t.snapshotting);
        }
        let started = std::time::Instant::now();
        while let Some(digest) = t.layers.get(*t.applied).map(|l| l.digest.clone()) {
            // A copy of the base being linked reads the root as it is.
            join_all(t.snapshotting);
            kiln_image::apply_layer(cx.store, &digest, t.rootfs, &opts)?;
            *t.applied += 1;
            if let (Some((n, key)), Some(snaps)) = (&base, &self.kept) {
                if *n == *t.applied {
                    cx.progress.info(&format!(
                        "unpacked the base image's {n} layer(s) in {:.2}s",
                        started.elapsed().as_secs_f64()
                    ));
                    let background = only_reads && *t.applied == t.layers.len();
                    Self::keep_base(
                        t.rootfs,
                        t.snapshotting,
                        snaps,
                        key,
                        base_guard.take(),
                        background,
                    );
                }
            }
        }
        Ok(())
    }
}
