//! Stage root filesystems: materializing, keeping and handing over roots, snapshots before
//! context steps, and the identity of sources.

use super::*;

impl Executor<'_> {
    /// Applies the stage's layers that are not yet on disk.
    pub(crate) fn ensure_rootfs(&mut self, state: &mut StageState) -> Result<(), BuildError> {
        self.ensure_rootfs_then(state, false)
    }

    /// [`Executor::ensure_rootfs`] for a step that only reads the root
    /// until it next settles (a RUN: the root is its overlay's lower
    /// directory, and its merge waits for the stage's snapshot threads).
    /// The copy of a freshly unpacked base image is then linked while the
    /// step runs.
    pub(crate) fn ensure_rootfs_to_read(
        &mut self,
        state: &mut StageState,
    ) -> Result<(), BuildError> {
        self.ensure_rootfs_then(state, true)
    }

    pub(super) fn ensure_rootfs_then(
        &mut self,
        state: &mut StageState,
        only_reads: bool,
    ) -> Result<(), BuildError> {
        if state.applied < state.layers.len() {
            // Applying layers changes the root a pending writer reads.
            self.settle(state)?;
        }
        if let Some(root) = &self.shared.in_place {
            return root.prepare(self.req.store, &state.layers, &mut state.applied);
        }
        // Unpacked from nothing: the base image's files are kept too, for
        // the next stage or build on the same base.
        let base = match (state.applied, state.states.first()) {
            (0, Some((n, key))) if *n > 0 => Some((*n, key.clone())),
            _ => None,
        };
        let restored = |state: &StageState, n: usize| {
            self.req.progress.info(&format!(
                "files of {} of the stage's {} layer(s) restored from a kept snapshot",
                n,
                state.layers.len()
            ));
        };
        if let (0, Some(snaps)) = (state.applied, &self.shared.snapshots) {
            // The latest state a previous build kept, instead of unpacking
            // the layers below it.
            let found = state.states.iter().rev().find(|(n, key)| {
                *n > 0 && *n <= state.layers.len() && snaps.take(key, &state.rootfs)
            });
            if let Some((n, _)) = found {
                restored(state, *n);
                state.applied = *n;
            }
        }
        // Held until the base is unpacked and kept: a stage on the same
        // base that started at the same time waits, then takes the copy
        // (a rename) instead of unpacking it a second time beside it.
        let base_lock = match (state.applied, &base, &self.shared.snapshots) {
            (0, Some((_, key)), Some(snaps)) if snaps.reuses() => self
                .shared
                .base_locks
                .lock()
                .ok()
                .map(|mut m| m.entry(key.clone()).or_default().clone()),
            _ => None,
        };
        let mut base_guard = base_lock.as_ref().and_then(crate::snapshots::Gate::hold);
        if base_guard.is_some() {
            if let (Some((n, key)), Some(snaps)) = (&base, &self.shared.snapshots) {
                // Kept by the stage that held the lock before.
                if snaps.take(key, &state.rootfs) {
                    restored(state, *n);
                    state.applied = *n;
                    drop(base_guard.take());
                }
            }
        }
        let opts = kiln_image::ApplyOptions {
            same_owner: Self::same_owner(),
            protected: Vec::new(),
        };
        let base = base.filter(|_| state.applied == 0);
        if base.is_none() {
            drop(base_guard.take());
        }
        if state.applied < state.layers.len() {
            Self::join_snapshots(state);
        }
        let started = std::time::Instant::now();
        while let Some(digest) = state.layers.get(state.applied).map(|l| l.digest.clone()) {
            // A copy of the base being linked reads the root as it is.
            Self::join_snapshots(state);
            kiln_image::apply_layer(self.req.store, &digest, &state.rootfs, &opts)?;
            state.applied += 1;
            if let (Some((n, key)), Some(snaps)) = (&base, &self.shared.snapshots) {
                if *n == state.applied {
                    self.req.progress.info(&format!(
                        "unpacked the base image's {n} layer(s) in {:.2}s",
                        started.elapsed().as_secs_f64()
                    ));
                    let background = only_reads && state.applied == state.layers.len();
                    Self::keep_base(state, snaps, key, base_guard.take(), background);
                }
            }
        }
        Ok(())
    }

    /// Keeps a copy of the base image's files, just unpacked in the stage
    /// root, for the next stage or build on that base; `hold` (the base's
    /// gate) is let go once it is kept. In the `background` the copy is
    /// linked while the stage's next step runs, which must not change the
    /// root before [`Executor::join_snapshots`] (that step may see the
    /// link counts of the base's files go up meanwhile; layers do not
    /// record them).
    pub(super) fn keep_base(
        state: &mut StageState,
        snaps: &crate::snapshots::Snapshots,
        key: &str,
        hold: Option<crate::snapshots::GateHold>,
        background: bool,
    ) {
        let keep = {
            let (snaps, key, root) = (snaps.clone(), key.to_string(), state.rootfs.clone());
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
            Ok(thread) => state.snapshotting.push(SnapshotJob {
                thread,
                frozen: None,
            }),
            Err(e) => tracing::debug!("no snapshot of the base image's files: {e}"),
        }
    }

    /// Keeps a hard-link copy of the stage's root as it is before a step
    /// that reads the build context: where a rebuild after an edit starts.
    /// When the step only writes entries of the `frozen` directory, the
    /// copy is linked on a background thread while the step runs (in
    /// `space`, which holds the links to the entries it replaces).
    pub(super) fn snapshot_before_context_step(
        &self,
        state: &mut StageState,
        frozen: Option<crate::snapshots::Frozen>,
        space: Option<tempfile::TempDir>,
    ) {
        let Some(snaps) = &self.shared.snapshots else {
            return;
        };
        if state.applied != state.layers.len() || state.pending.iter().any(|p| !p.on_disk) {
            return;
        }
        let Some(frozen) = frozen else {
            if let Err(e) = snaps.keep_linked(&state.key, &state.rootfs, None) {
                tracing::debug!("no snapshot of the stage root: {e}");
            }
            return;
        };
        let (snaps, key, root, f) = (
            snaps.clone(),
            state.key.clone(),
            state.rootfs.clone(),
            frozen.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("kiln-snapshot".into())
            .spawn(move || {
                let made = match space {
                    Some(space) => snaps.keep_linked_in(&key, &root, Some(&f), space),
                    None => snaps.keep_linked(&key, &root, Some(&f)),
                };
                if let Err(e) = made {
                    tracing::debug!("no snapshot of the stage root: {e}");
                }
            });
        match thread {
            Ok(thread) => state.snapshotting.push(SnapshotJob {
                thread,
                frozen: Some(frozen),
            }),
            Err(e) => tracing::debug!("no snapshot of the stage root: {e}"),
        }
    }

    /// Waits for the snapshots still being linked: the root is about to
    /// change where they would see it.
    pub(super) fn join_snapshots(state: &mut StageState) {
        for job in state.snapshotting.drain(..) {
            if job.thread.join().is_err() {
                tracing::debug!("a snapshot thread panicked");
            }
        }
    }

    /// Whether finished stage `index` may leave its last layers unsettled
    /// for the stage built on it: it is not the target, and that stage is
    /// its only reader, is built, reads it through `FROM` alone (a `--from`
    /// would read its files or layers elsewhere) and has its own root (not
    /// in place).
    pub(super) fn hands_over(&self, index: usize) -> bool {
        let mut readers = self.graph.stages.iter().filter(|n| n.deps.contains(&index));
        let only = match (readers.next(), readers.next()) {
            (Some(r), None) => r,
            _ => return false,
        };
        self.shared.in_place.is_none()
            && index != self.graph.target
            && self.graph.order.contains(&only.index)
            && matches!(only.base, Base::Stage(i) if i == index)
            && !only.from_deps.contains(&index)
    }

    /// Moves the pending layers of finished stage `index` to the build's
    /// deferred list when nothing needs them before the build ends: the
    /// stage is outside the image, not in place, no stage is built `FROM`
    /// it (its readers take files by `--from`, which are all on disk), and
    /// it has no ONBUILD triggers. Its layers then only feed the caches.
    pub(super) fn defers(&self, index: usize, state: &mut StageState) -> bool {
        let outside = self.shared.in_place.is_none()
            && !self.shared.target_chain.contains(&index)
            && state.config.config.on_build.is_empty()
            && state.applied == state.layers.len()
            && state.pending.iter().all(|p| p.on_disk)
            && !self
                .graph
                .stages
                .iter()
                .any(|n| matches!(n.base, Base::Stage(i) if i == index));
        if !outside || state.pending.is_empty() {
            return false;
        }
        match self.shared.deferred.lock() {
            Ok(mut d) => {
                d.extend(state.pending.drain(..));
                true
            }
            Err(_) => false,
        }
    }

    /// Moves finished stage `index`'s root filesystem to `into` when no
    /// other stage reads that stage; returns how many of its layers are
    /// thereby on disk (0 when it could not be taken). The parent is marked
    /// unmaterialized, so should anything still read it, its layers are
    /// applied again.
    pub(super) fn take_over(&self, index: usize, parent: &StageResult, into: &Path) -> usize {
        let readers = self
            .graph
            .stages
            .iter()
            .filter(|n| n.deps.contains(&index))
            .count();
        if readers != 1 {
            return 0;
        }
        let Ok(mut applied) = parent.applied.lock() else {
            return 0;
        };
        if *applied == 0 {
            return 0;
        }
        // `into` is a fresh empty directory: replace it with the parent's.
        if std::fs::remove_dir(into).is_err() || std::fs::rename(&parent.rootfs, into).is_err() {
            let _ = std::fs::create_dir_all(into);
            return 0;
        }
        let n = *applied;
        *applied = 0;
        n
    }

    /// A finished stage's root filesystem, with all its layers applied.
    pub(crate) fn stage_root(&self, r: &StageResult) -> Result<PathBuf, BuildError> {
        let opts = kiln_image::ApplyOptions {
            same_owner: Self::same_owner(),
            protected: Vec::new(),
        };
        let mut applied = r
            .applied
            .lock()
            .map_err(|_| BuildError::Poisoned("stage root"))?;
        if let (0, Some(snaps)) = (*applied, &self.shared.snapshots) {
            // The stage's finished root, kept by a previous build.
            if !r.image.layers.is_empty() && snaps.take(&r.key, &r.rootfs) {
                *applied = r.image.layers.len();
                self.req.progress.info(&format!(
                    "files of a finished stage ({} layer(s)) restored from a kept snapshot",
                    r.image.layers.len()
                ));
            }
        }
        while let Some(layer) = r.image.layers.get(*applied) {
            kiln_image::apply_layer(self.req.store, &layer.digest, &r.rootfs, &opts)?;
            *applied += 1;
        }
        Ok(r.rootfs.clone())
    }

    /// What a `--from=` (COPY, or a RUN mount) names, for a cache key: the
    /// stage's key or the image's digest. `None` reads the context.
    pub(crate) fn source_identity(
        &mut self,
        from: Option<&str>,
        stage: usize,
        results: &Results,
        span: Span,
    ) -> Result<String, BuildError> {
        let Some(from) = from else {
            return Ok("context".into());
        };
        if let Some(i) = self.graph.lookup(from, stage) {
            let r = results.get(&i).ok_or_else(|| {
                self.loc
                    .at(span, format!("--from={from}: stage was not built"))
            })?;
            return Ok(format!("stage:{}", r.key));
        }
        if let Some(d) = self.known_digest(from) {
            return Ok(format!("image:{d}"));
        }
        let (_, digest) = self.resolve_image(from, span)?;
        if let Ok(mut m) = self.shared.image_digests.lock() {
            m.insert(from.to_string(), digest.clone());
        }
        Ok(format!("image:{digest}"))
    }

    pub(super) fn known_digest(&self, reference: &str) -> Option<String> {
        self.shared
            .image_digests
            .lock()
            .ok()
            .and_then(|m| m.get(reference).cloned())
    }

    /// Adds the context paths `rel` (and everything below them, after
    /// `.dockerignore`) to a key.
    pub(crate) fn hash_context(&self, key: &mut KeyBuilder, rel: &str) -> Result<(), BuildError> {
        let root = self.req.context.root();
        hash_tree(
            key,
            root,
            rel,
            self.req.context.ignore(),
            self.req.stat_cache,
        )
        .map_err(|source| BuildError::Io {
            path: root.join(rel),
            source,
        })
    }
}
