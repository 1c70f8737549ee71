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
        // The files the writer will read from the stage root: a later
        // COPY that writes none of them need not wait for it.
        let files = if on_disk {
            entries
                .iter()
                .filter_map(|e| match &e.kind {
                    kiln_image::EntryKind::File { source, .. } => Some(source.clone()),
                    _ => None,
                })
                .collect()
        } else {
            HashSet::new()
        };
        let store = self.req.store.clone();
        let options = self.layer_options(state.index);
        let moved: Arc<Mutex<HashMap<PathBuf, PathBuf>>> = Arc::default();
        let table = moved.clone();
        let writer = std::thread::Builder::new()
            .name("kiln-layer".into())
            .spawn(move || {
                // Opened under the lock: a file is either where it was or
                // already kept aside when the writer looks.
                let open = |source: &Path| {
                    let moved = table
                        .lock()
                        .map_err(|_| std::io::Error::other("a layer writer's file table broke"))?;
                    kiln_image::open_source(moved.get(source).map_or(source, |p| p.as_path()))
                };
                kiln_image::write_layer_opening(&store, entries, &options, &open)
            })
            .map_err(BuildError::LayerWriter)?;
        state.pending.push_back(PendingLayer {
            writer,
            step: id,
            key: None,
            history: state.config.history.last().cloned(),
            on_disk,
            files,
            stage: state.index,
            moved,
        });
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
        // Below `dest`, only under the entries `names` (when known).
        let written = |dest: &Path, f: &Path| match (f.strip_prefix(dest), names) {
            (Err(_), _) => false,
            (Ok(_), None) => true,
            (Ok(rel), Some(names)) => rel
                .components()
                .next()
                .is_none_or(|first| names.contains(first.as_os_str())),
        };
        let dest = match dest {
            Some(dest)
                if state.applied == state.layers.len()
                    && state.pending.iter().all(|p| p.on_disk) =>
            {
                dest
            }
            _ => return self.settle(state),
        };
        // Layers settle in step order: up to the last one that reads a file
        // the COPY may write; those after it go on being written.
        while state
            .pending
            .iter()
            .any(|p| p.files.iter().any(|f| written(dest, f)))
        {
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
        if state.pending.is_empty() {
            return Ok(());
        }
        let read: Option<BTreeSet<String>> = (state.applied == state.layers.len()
            && state.pending.iter().all(|p| p.on_disk))
        .then(|| {
            state
                .pending
                .iter()
                .flat_map(|p| p.files.iter())
                .filter_map(|f| f.strip_prefix(&state.rootfs).ok())
                .map(|r| r.to_string_lossy().into_owned())
                .collect()
        });
        let Some(read) = read else {
            return self.settle(state);
        };
        // A change that is not a directory (a deletion, a replacement by a
        // file or link, an opaque directory) removes everything below it.
        let below_a_removal = changes.iter().any(|c| {
            let below = format!("{}/", c.path);
            !matches!(c.kind, kiln_image::EntryKind::Dir)
                && read
                    .range(below.clone()..)
                    .next()
                    .is_some_and(|r| r.starts_with(&below))
        });
        if below_a_removal {
            return self.settle(state);
        }
        // Files the step replaced or deleted themselves: their writers read
        // links kept to them.
        let replaced: BTreeSet<&str> = changes
            .iter()
            .map(|c| c.path.as_str())
            .filter(|p| read.contains(*p))
            .collect();
        if replaced.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.keep_for_writers(state, &replaced) {
            tracing::debug!("waiting for the layers being written: {e}");
            return self.settle(state);
        }
        Ok(())
    }

    /// Keeps a hard link to each of `replaced` (paths relative to the
    /// stage root, read by pending layers) in the build's discard
    /// directory, and points the pending writers that read the file there:
    /// the merge that follows may then replace or delete it. A writer that
    /// opened the file before keeps reading what it opened; the merge only
    /// starts once every link is made and recorded.
    pub(super) fn keep_for_writers(
        &self,
        state: &StageState,
        replaced: &BTreeSet<&str>,
    ) -> std::io::Result<()> {
        let kept = self.req.work_dir.join("discarded");
        std::fs::create_dir_all(&kept)?;
        for rel in replaced {
            let source = state.rootfs.join(rel);
            // A writer that has a link already keeps it: the file as its
            // step left it (the path may have been deleted since).
            let readers: Vec<&PendingLayer> = state
                .pending
                .iter()
                .filter(|p| p.files.contains(&source))
                .filter(|p| p.moved.lock().is_ok_and(|m| !m.contains_key(&source)))
                .collect();
            if readers.is_empty() {
                continue;
            }
            let n = KEPT_FOR_WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let link = kept.join(format!("w{}-{n}", std::process::id()));
            std::fs::hard_link(&source, &link)?;
            for p in readers {
                let mut moved = p
                    .moved
                    .lock()
                    .map_err(|_| std::io::Error::other("a layer writer's file table broke"))?;
                moved.entry(source.clone()).or_insert_with(|| link.clone());
            }
        }
        Ok(())
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
        for p in std::mem::take(&mut state.pending) {
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
