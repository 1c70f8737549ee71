//! Step cache lookups and records: reusing a recorded layer, remembering a step's result.

use super::meta::put_record;
use super::*;

impl Executor<'_> {
    /// Looks `key` up in the caches; on a hit, adds the recorded layer and
    /// history entry to the stage and returns true.
    pub(crate) fn reuse(
        &mut self,
        state: &mut StageState,
        key: &str,
        id: usize,
    ) -> Result<bool, BuildError> {
        for (n, backend) in self.req.cache.iter().enumerate() {
            let Some(record) = backend.get(key, self.req.store) else {
                continue;
            };
            // A damaged layer blob is never used: it is dropped (so it is
            // fetched or made again) and the lookup goes on.
            if let Some(layer) = &record.layer {
                if let kiln_image::Integrity::Corrupt(why) =
                    self.req.store.check(&layer.digest, layer.size)
                {
                    self.req.progress.step_info(
                        id,
                        &format!(
                            "warning: the {} cache's layer {} is damaged ({why}); not used",
                            backend.describe(),
                            layer.digest
                        ),
                    );
                    if let Err(e) = self.req.store.remove(&layer.digest) {
                        self.req.progress.step_info(id, &format!("warning: {e}"));
                    }
                    continue;
                }
            }
            // The hit's layer goes on top of the one still being written.
            self.settle(state)?;
            if n > 0 {
                // A remote hit: keep it locally too.
                if let Some(local) = self.req.cache.first() {
                    let _ = local.put(key, &record, self.req.store);
                }
            }
            // A layer cached compressed another way (a stage that was not
            // part of the image then, or another --compression) is
            // re-encoded for the image; its diffID, and so the image
            // config, stays the same.
            let mut record = record;
            let opts = self.layer_options(state.index);
            if let Some(layer) = record
                .layer
                .clone()
                .filter(|_| self.shared.target_chain.contains(&state.index))
            {
                if !opts.compression.matches_media_type(&layer.media_type) {
                    match kiln_image::recompress_layer(self.req.store, &layer, &opts) {
                        Ok(l) => {
                            self.req.progress.step_info(
                                id,
                                &format!(
                                    "re-encoded cached layer {} as {}",
                                    layer.digest, l.media_type
                                ),
                            );
                            record.layer = Some(l);
                            // So the next build finds it ready.
                            if let Some(local) = self.req.cache.first() {
                                let _ = local.put(key, &record, self.req.store);
                            }
                        }
                        Err(e) => {
                            self.req.progress.step_info(
                                id,
                                &format!("warning: cached layer {} not used: {e}", layer.digest),
                            );
                            continue;
                        }
                    }
                }
            }
            let what = match &record.layer {
                Some(l) => format!("CACHED ({}): layer {}", backend.describe(), l.digest),
                None => format!("CACHED ({})", backend.describe()),
            };
            self.req.progress.step_info(id, &what);
            if let Some(layer) = &record.layer {
                state.layers.push(layer.clone());
                self.announce(state.index, layer);
            }
            state.config.history.push(record.history.clone());
            state.key = key.to_string();
            state.states.push((state.layers.len(), state.key.clone()));
            self.hits += 1;
            self.entries.push((state.index, key.to_string(), record));
            return Ok(true);
        }
        Ok(false)
    }

    /// Hands a new layer of the target image to `on_layer`.
    pub(super) fn announce(&self, stage: usize, layer: &Layer) {
        if let Some(f) = self.req.on_layer {
            if self.shared.target_chain.contains(&stage) {
                f(layer);
            }
        }
    }

    /// Records what a step that ran produced (its layer, if it made one,
    /// and its history entry) under `key`. A layer still being written is
    /// recorded when it is settled.
    pub(crate) fn remember(
        &mut self,
        state: &mut StageState,
        key: String,
    ) -> Result<(), BuildError> {
        self.misses += 1;
        state.key = key.clone();
        // The step ran again: files kept from an earlier run of it must
        // not meet its new cache record.
        if let Some(snaps) = self.shared.roots.kept() {
            snaps.invalidate(&key);
        }
        let queued = state.pending.len();
        if let Some(p) = state.pending.newest_unkeyed() {
            p.key = Some(key.clone());
            state.states.push((state.layers.len() + queued, key));
            return Ok(());
        }
        if queued > 0 && state.unrecorded.is_none() && self.shared.roots.private() {
            // A step that made no layer, after layers still being written:
            // recorded at once, without waiting for them.
            state
                .states
                .push((state.layers.len() + queued, key.clone()));
            if let Some(history) = state.config.history.last().cloned() {
                self.store_record(
                    state.index,
                    key,
                    StepRecord {
                        layer: None,
                        history,
                    },
                );
            }
            return Ok(());
        }
        self.settle(state)?;
        state.states.push((state.layers.len(), key.clone()));
        // The step ran on the materialized root: its layer is on disk.
        state.applied = state.layers.len();
        self.shared.roots.holds(&state.layers);
        let Some(history) = state.config.history.last().cloned() else {
            return Ok(());
        };
        let layer = state.unrecorded.take();
        self.store_record(state.index, key, StepRecord { layer, history });
        Ok(())
    }

    /// Puts a step that ran into every cache and the build's cache entries.
    pub(super) fn store_record(&mut self, stage: usize, key: String, record: StepRecord) {
        put_record(self.req, &key, &record);
        self.entries.push((stage, key, record));
    }
}
