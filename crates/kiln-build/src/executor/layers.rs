//! Layers of a stage: committing a step's changes, the background writers, and settling
//! them before the root changes under them.

use super::*;

impl Executor<'_> {
    pub(super) fn commit_layer(
        &mut self,
        state: &mut StageState,
        changed: &[crate::copy::Changed],
        created_by: String,
        id: usize,
    ) -> Result<(), BuildError> {
        let entries = crate::snapshot::layer_entries(&state.rootfs, changed)?;
        self.push_layer(state, entries, created_by, id)
    }

    /// Writes a step's layer (mtimes clamped by the layer writer when
    /// reproducible), adds it and its history entry to the stage.
    pub(crate) fn push_layer(
        &mut self,
        state: &mut StageState,
        entries: Vec<kiln_image::LayerEntry>,
        created_by: String,
        id: usize,
    ) -> Result<(), BuildError> {
        self.write_layer(state, entries, created_by, id, true)
    }

    /// [`Self::push_layer`]; `on_disk`: whether the entries' files are in
    /// the stage root (false for a layer made from the context).
    pub(super) fn write_layer(
        &mut self,
        state: &mut StageState,
        entries: Vec<kiln_image::LayerEntry>,
        created_by: String,
        id: usize,
        on_disk: bool,
    ) -> Result<(), BuildError> {
        self.history(state, created_by, false);
        let new = crate::layer_queue::NewLayer {
            store: self.req.store.clone(),
            options: self.layer_options(state.index),
            entries,
            on_disk,
            step: id,
            stage: state.index,
            history: state.config.history.last().cloned(),
        };
        state.pending.push(new).map_err(BuildError::LayerWriter)?;
        // A shared root: the next step changes the root the writer reads.
        if !self.shared.roots.private() {
            self.settle(state)?;
        }
        Ok(())
    }

    /// Settles the pending layers unless a COPY that writes only at or
    /// below `dest` (a host path in the stage root, symlinks resolved;
    /// when `names` is given, only below those entries of it) cannot
    /// change a file they read: then the COPY runs while they are written,
    /// and its own layer queues up behind them. Otherwise only the layers
    /// up to the last one that reads such a file are settled.
    pub(super) fn settle_unless_apart(
        &mut self,
        state: &mut StageState,
        dest: Option<&Path>,
        names: Option<&std::collections::HashSet<std::ffi::OsString>>,
    ) -> Result<(), BuildError> {
        let dest = match dest {
            Some(dest) if state.applied == state.layers.len() && state.pending.all_on_disk() => {
                dest
            }
            _ => return self.settle(state),
        };
        // Layers settle in step order: up to the last one that reads a file
        // the COPY may write; those after it go on being written.
        for _ in 0..state.pending.settle_count_for_write(dest, names) {
            if let Err(e) = self.settle_one(state) {
                self.abandon(state);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Settles the pending layers unless merging a RUN's `changes` (paths
    /// relative to the stage root) leaves every file they read in place:
    /// the same path changed, or a whiteout, an opaque directory or a
    /// non-directory over a directory holding one, would move it aside.
    pub(crate) fn settle_unless_untouched(
        &mut self,
        state: &mut StageState,
        changes: &[kiln_image::LayerEntry],
    ) -> Result<(), BuildError> {
        // The merge changes the root anywhere.
        Self::join_snapshots(state);
        if state.applied != state.layers.len() {
            return self.settle(state);
        }
        match state.pending.touched_by(&state.rootfs, changes) {
            crate::layer_queue::Touch::Nothing => Ok(()),
            crate::layer_queue::Touch::Everything => self.settle(state),
            crate::layer_queue::Touch::Replaces(replaced) => {
                // Files the step replaced or deleted themselves: their
                // writers read links kept to them.
                let kept = self.req.work_dir.join("discarded");
                if let Err(e) = state
                    .pending
                    .keep_for_writers(&state.rootfs, &replaced, &kept)
                {
                    tracing::debug!("waiting for the layers being written: {e}");
                    return self.settle(state);
                }
                Ok(())
            }
        }
    }

    /// Waits for the layers still being written, adds them to the stage in
    /// order, hands them to the uploader and records their steps in the
    /// caches.
    pub(crate) fn settle(&mut self, state: &mut StageState) -> Result<(), BuildError> {
        Self::join_snapshots(state);
        while !state.pending.is_empty() {
            if let Err(e) = self.settle_one(state) {
                self.abandon(state);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The build fails: the layers still being written are waited for (so
    /// no writer outlives the build), and the steps whose layers came out
    /// whole are still recorded in the caches, so the next build reuses
    /// them.
    pub(super) fn abandon(&mut self, state: &mut StageState) {
        Self::join_snapshots(state);
        for p in state.pending.take() {
            if let (Ok(Ok(layer)), Some(key), Some(history)) = (p.writer.join(), p.key, p.history) {
                self.store_record(
                    p.stage,
                    key,
                    StepRecord {
                        layer: Some(layer),
                        history,
                    },
                );
            }
        }
    }

    pub(super) fn settle_one(&mut self, state: &mut StageState) -> Result<(), BuildError> {
        let Some(p) = state.pending.pop_front() else {
            return Ok(());
        };
        let joined = p
            .writer
            .join()
            .map_err(|_| BuildError::Panicked("the layer writer"));
        let layer = match joined {
            Ok(Ok(layer)) => layer,
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(e),
        };
        self.req.progress.step_info(
            p.step,
            &format!("layer {} ({} bytes)", layer.digest, layer.size),
        );
        self.announce(p.stage, &layer);
        // Its files are on disk when every layer before it is.
        let on_disk = p.on_disk && state.applied == state.layers.len();
        state.layers.push(layer.clone());
        if on_disk {
            state.applied = state.layers.len();
        }
        match (p.key, p.history) {
            (Some(key), Some(history)) => self.store_record(
                p.stage,
                key,
                StepRecord {
                    layer: Some(layer),
                    history,
                },
            ),
            // Settled before its step was remembered (in place, or an ADD
            // whose key depends on what it fetched): `remember` records it.
            (None, _) => state.unrecorded = Some(layer),
            (Some(_), None) => {}
        }
        Ok(())
    }
}
