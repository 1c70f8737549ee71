//! One stage's run: its steps in order, variable expansion and history.

use super::*;

impl Executor<'_> {
    pub(super) fn run_stage(
        &mut self,
        index: usize,
        name: &str,
        from: &Instruction,
        instructions: &[Instruction],
        results: &Results,
    ) -> Result<StageResult, BuildError> {
        let node = self.graph.stages.get(index).ok_or(BuildError::NoStages)?;
        let total = instructions.len() + 1;
        let id = self.next_step();
        let t = Instant::now();
        self.req
            .progress
            .step_started(id, &format!("{name} 1/{total}"), &from.original);
        let mut inherited_args = BTreeMap::new();
        // Layers of the parent stage still being written (see `handoff`).
        let mut handed = LayerQueue::default();
        let platform = platform_string(&self.req.platform);
        let (image, base_key) = match &node.base {
            Base::Scratch => {
                let config = ImageConfig {
                    architecture: self.req.platform.architecture.clone(),
                    os: self.req.platform.os.clone(),
                    variant: self.req.platform.variant.clone(),
                    ..ImageConfig::default()
                };
                let image = Image {
                    config,
                    layers: Vec::new(),
                };
                let key = KeyBuilder::new("FROM")
                    .field("scratch")
                    .field(&platform)
                    .finish();
                (image, key)
            }
            Base::Stage(i) => {
                let parent = results.get(i).ok_or(BuildError::NoStages)?;
                inherited_args = parent.args.clone();
                if let Ok(mut q) = parent.handoff.lock() {
                    handed = std::mem::take(&mut *q);
                }
                (parent.image.clone(), parent.key.clone())
            }
            Base::Image(reference) => {
                let base_platform = match &node.platform {
                    Some(p) => parse_platform(p).ok_or_else(|| {
                        self.loc.at(
                            from.span,
                            format!("FROM --platform={p}: expected os/arch[/variant]"),
                        )
                    })?,
                    None => self.req.platform.clone(),
                };
                let (image, digest) =
                    self.resolve_image_for(reference, &base_platform, from.span)?;
                let key = KeyBuilder::new("FROM")
                    .field(&digest)
                    .field(&platform)
                    .finish();
                (image, key)
            }
        };
        // Filled lazily: only a step that runs needs the files. In place,
        // the stage's root is kiln's own.
        let shared = self.shared;
        let mut rootfs = match shared.roots.new_root(&mut || self.stage_dir("stage-")) {
            Ok(dir) => dir,
            Err(e) => {
                handed.join_all();
                return Err(e);
            }
        };
        // A parent stage that only this stage reads hands over its files
        // (one rename) instead of having its layers applied again. With
        // layers still being written, which read the parent's root by
        // path, the root is used where it is.
        let mut applied = 0;
        if let (Base::Stage(i), true) = (&node.base, self.shared.roots.private()) {
            if let Some(parent) = results.get(i) {
                if handed.is_empty() {
                    applied = self.take_over(*i, parent, &rootfs);
                } else if let Ok(mut a) = parent.applied.lock() {
                    let _ = std::fs::remove_dir(&rootfs);
                    rootfs = parent.rootfs.clone();
                    applied = std::mem::take(&mut *a);
                }
            }
        }
        self.req
            .progress
            .step_finished(id, StepOutcome::Done, t.elapsed());

        let mut config = image.config;
        // A new image: its own timestamps, the platform it is built for.
        config.created = None;
        if config.config.env.iter().all(|e| !e.starts_with("PATH=")) && config.os == "linux" {
            config.config.env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        let triggers = std::mem::take(&mut config.config.on_build);
        let mut state = StageState {
            index,
            applied,
            key: base_key,
            rootfs,
            config,
            layers: image.layers,
            args: inherited_args,
            cmd_set: false,
            pending: handed,
            unrecorded: None,
            states: Vec::new(),
            last_files_step: false,
            snapshotting: Vec::new(),
        };
        state
            .states
            .push((state.layers.len() + state.pending.len(), state.key.clone()));

        // ONBUILD triggers of the base image run first, as if written
        // right after FROM.
        for trigger in &triggers {
            let text = format!("FROM scratch\n{trigger}\n");
            let parsed = match kiln_dockerfile::parse("ONBUILD trigger", &text) {
                Ok(parsed) => parsed,
                Err(e) => {
                    // Layers handed over and snapshots being linked are
                    // waited for: nothing outlives the build.
                    self.abandon(&mut state);
                    return Err(self.loc.at(
                        from.span,
                        format!("ONBUILD trigger `{trigger}` of the base image: {e}"),
                    ));
                }
            };
            if let Some(ins) = parsed.instructions.get(1) {
                let relocated = Instruction {
                    span: from.span,
                    original: ins.original.clone(),
                    kind: ins.kind.clone(),
                };
                if let Err(e) = self.run_step(&mut state, &relocated, "ONBUILD", results) {
                    self.abandon(&mut state);
                    return Err(e);
                }
            }
        }

        let last_files_step = instructions.iter().rposition(|i| {
            matches!(
                i.kind,
                InstructionKind::Run(_)
                    | InstructionKind::Copy(_)
                    | InstructionKind::Add(_)
                    | InstructionKind::Workdir(_)
            )
        });
        for (n, ins) in instructions.iter().enumerate() {
            let label = format!("{name} {}/{total}", n + 2);
            state.last_files_step = last_files_step == Some(n)
                && index == self.graph.target
                && self.shared.roots.private();
            if let Err(e) = self.run_step(&mut state, ins, &label, results) {
                self.abandon(&mut state);
                return Err(e);
            }
        }
        // The root is handed on, moved or kept as it is: no snapshot may
        // still be reading it.
        Self::join_snapshots(&mut state);
        // (Not with ONBUILD triggers: run in the next stage, one could read
        // this stage by a `--from` the stage graph cannot see.)
        let hand_over = !state.pending.is_empty()
            && state.config.config.on_build.is_empty()
            && self.hands_over(index);
        if !hand_over && !self.defers(index, &mut state) {
            self.settle(&mut state)?;
        }

        state.config.created = Some(self.clock(&state));
        state.config.rootfs.diff_ids = state.layers.iter().map(|l| l.diff_id.clone()).collect();
        let shared = self.shared;
        let (rootfs, applied) =
            shared
                .roots
                .finished_root(state.rootfs, state.applied, &mut || {
                    self.stage_dir("stage-")
                })?;
        Ok(StageResult {
            image: Image {
                config: state.config,
                layers: state.layers,
            },
            rootfs,
            applied: std::sync::Mutex::new(applied),
            key: state.key,
            args: state.args,
            handoff: Mutex::new(state.pending),
        })
    }

    pub(super) fn next_step(&mut self) -> usize {
        self.shared.step_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(super) fn run_step(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        label: &str,
        results: &Results,
    ) -> Result<(), BuildError> {
        let id = self.next_step();
        let t = Instant::now();
        self.req.progress.step_started(id, label, &ins.original);
        match self.apply(state, ins, id, results) {
            Ok(outcome) => {
                self.req.progress.step_finished(id, outcome, t.elapsed());
                Ok(())
            }
            Err(e) => {
                self.req
                    .progress
                    .step_finished(id, StepOutcome::Failed, t.elapsed());
                Err(self.loc.locate(ins.span, e))
            }
        }
    }

    pub(crate) fn expand(
        &self,
        state: &StageState,
        word: &str,
        span: Span,
    ) -> Result<String, BuildError> {
        let vars = StageVars {
            env: &state.config.config.env,
            args: &state.args,
        };
        expand_word(word, &vars, self.df.directives.escape)
            .map(|e| e.value)
            .map_err(|e| self.loc.at(span, e.message))
    }

    pub(crate) fn history(&self, state: &mut StageState, created_by: String, empty_layer: bool) {
        state.config.history.push(History {
            created: Some(self.created()),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer,
            ..History::default()
        });
    }

    /// The time metadata instructions take: that of the latest history
    /// entry (a step that ran now, a cached step's original time, or the
    /// base image's), so a rebuild that reuses everything is identical.
    pub(crate) fn clock(&self, state: &StageState) -> String {
        if self.req.source_date_epoch.is_some() {
            return self.created();
        }
        state
            .config
            .history
            .last()
            .and_then(|h| h.created.clone())
            .unwrap_or_else(|| self.created())
    }

    pub(super) fn history_meta(&self, state: &mut StageState, created_by: String) {
        let created = self.clock(state);
        state.config.history.push(History {
            created: Some(created),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: true,
            ..History::default()
        });
    }
}
