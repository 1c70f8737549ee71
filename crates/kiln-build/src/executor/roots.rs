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
        let cx = crate::rootfs::RootCx {
            store: self.req.store,
            progress: self.req.progress,
        };
        let target = crate::rootfs::Materialize {
            rootfs: &state.rootfs,
            layers: &state.layers,
            states: &state.states,
            applied: &mut state.applied,
            snapshotting: &mut state.snapshotting,
        };
        self.shared.roots.materialize(&cx, target, only_reads)
    }

    /// Keeps a hard-link copy of the stage's root as it is before a step
    /// that reads the build context: where a rebuild after an edit starts.
    /// When the step only writes entries of the `frozen` directory, the
    /// copy is linked on a background thread while the step runs (in
    /// `space`, which holds the links to the entries it replaces).
    pub(super) fn snapshot_before_context_step(
        &self,
        state: &mut StageState,
        frozen: Option<crate::rootfs::kept::Frozen>,
        space: Option<tempfile::TempDir>,
    ) {
        let Some(snaps) = self.shared.roots.kept() else {
            return;
        };
        if state.applied != state.layers.len() || !state.pending.all_on_disk() {
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
    pub(crate) fn join_snapshots(state: &mut StageState) {
        crate::rootfs::kept::join_all(&mut state.snapshotting);
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
        self.shared.roots.private()
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
        let outside = self.shared.roots.private()
            && !self.shared.target_chain.contains(&index)
            && state.config.config.on_build.is_empty()
            && state.applied == state.layers.len()
            && state.pending.all_on_disk()
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
                d.extend(state.pending.take());
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
        if let (0, Some(snaps)) = (*applied, self.shared.roots.kept()) {
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
