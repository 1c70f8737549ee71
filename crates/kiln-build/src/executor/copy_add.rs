//! COPY and ADD steps: cache keys, planning, and the copy itself through [`crate::copy`].

use super::*;

impl Executor<'_> {
    pub(super) fn copy_add(
        &mut self,
        state: &mut StageState,
        c: &CopyAdd,
        is_add: bool,
        ins: &Instruction,
        id: usize,
        results: &Results,
    ) -> Result<StepOutcome, BuildError> {
        let span = ins.span;
        let mut sources = Vec::with_capacity(c.sources.len());
        let mut heredocs = Vec::new();
        for s in &c.sources {
            if let Some(opener) = kiln_dockerfile::parser::heredoc_opener(s) {
                if let Some(h) = c.heredocs.iter().find(|h| h.name == opener.name) {
                    let content = if h.expand {
                        let vars = StageVars {
                            env: &state.config.config.env,
                            args: &state.args,
                        };
                        // Heredoc bodies always use `\` as the escape
                        // character, whatever `# escape=` says (as BuildKit).
                        expand_heredoc(&h.content, &vars, '\\')
                            .map_err(|e| self.loc.at(span, e.message))?
                    } else {
                        h.content.clone()
                    };
                    heredocs.push((h.name.clone(), content));
                    continue;
                }
            }
            sources.push(self.expand(state, s, span)?);
        }
        let dest = self.expand(state, &c.dest, span)?;
        let chown = match &c.chown {
            Some(v) => Some(self.expand(state, v, span)?),
            None => None,
        };
        let chmod = match &c.chmod {
            Some(v) => Some(self.expand(state, v, span)?),
            None => None,
        };
        let mut exclude = Vec::new();
        for e in &c.exclude {
            exclude.push(self.expand(state, e, span)?);
        }
        let checksum = match &c.checksum {
            Some(v) => Some(self.expand(state, v, span)?),
            None => None,
        };

        let from = match &c.from {
            Some(f) => Some(self.expand(state, f, span)?),
            None => None,
        };

        // The key covers everything the step reads: the expanded
        // instruction, the stage's key, and the source's content (files
        // of the context by digest, a stage by its key, an image by its
        // digest). A URL without --checksum is known only once fetched.
        let mut key = KeyBuilder::new(if is_add { "ADD" } else { "COPY" });
        key.field(&state.key)
            .list(&sources)
            .field(&dest)
            .field(&state.config.config.working_dir)
            .field(&format!(
                "{chown:?}|{chmod:?}|{exclude:?}|{checksum:?}|{}|{}|{:?}|{}",
                c.parents, c.link, c.unpack, c.keep_git_dir
            ));
        for (name, body) in &heredocs {
            key.field(name).field(body);
        }
        let identity = self.source_identity(from.as_deref(), state.index, results, span)?;
        key.field(&identity);
        let mut remote = false;
        if from.is_none() {
            let root = self.req.context.root();
            for src in &sources {
                if crate::copy::is_remote_source(src) {
                    remote = true;
                    continue;
                }
                let paths = crate::copy::source_paths(root, self.req.context.ignore(), src)?;
                key.list(&paths);
                for rel in &paths {
                    self.hash_context(&mut key, rel)?;
                }
            }
        }
        let cacheable = !remote || checksum.is_some();
        let key = key.finish();
        if cacheable && self.reuse(state, &key, id)? {
            return Ok(StepOutcome::Cached);
        }
        let (src_root, filter) = match &from {
            None => (
                self.req.context.root().to_path_buf(),
                self.req.context.ignore(),
            ),
            Some(from) => match self.graph.lookup(from, state.index) {
                Some(i) => {
                    let r = results.get(&i).ok_or_else(|| {
                        self.loc
                            .at(span, format!("--from={from}: stage was not built"))
                    })?;
                    (self.stage_root(r)?, None)
                }
                None => (self.image_root(from, span)?, None),
            },
        };
        let add = if is_add {
            Some(AddOptions {
                unpack: c.unpack,
                checksum,
                http: self.req.http,
            })
        } else {
            None
        };
        let rootfs = state.rootfs.clone();
        let request = CopyRequest {
            src_root: &src_root,
            src_filter: filter,
            sources,
            dest,
            workdir: state.config.config.working_dir.clone(),
            dest_root: &rootfs,
            chown,
            chmod,
            exclude,
            parents: c.parents,
            heredocs,
            add,
            preserve_owner: c.from.is_some(),
            link_unchanged: from.is_some() && self.shared.roots.private(),
        };
        // COPY writes into the root the pending layers' writers read:
        // they must be done unless it writes none of their files.
        let scope = crate::copy::write_scope(&rootfs, &request.dest, &request.workdir);
        // What it writes is only looked at when a snapshot or a pending
        // layer can use it (not in place, where neither is ever left).
        let current = !is_add && state.applied == state.layers.len();
        let snapshots_care = current
            && ((self.shared.roots.kept().is_some() && from.is_none())
                || !state.snapshotting.is_empty());
        // The entries it may write into an existing destination directory.
        let into = (snapshots_care || (current && !state.pending.is_empty()))
            .then(|| crate::copy::writes_into_dir(&request))
            .flatten()
            .filter(|(dir, _)| Some(dir.as_path()) == scope.as_deref());
        // A COPY that only writes entries of one directory lets the
        // snapshots being linked go on when they leave those entries out
        // (an ADD may write a download beside its destination first); the
        // snapshot before a context COPY keeps links to what it replaces.
        let space = match self.shared.roots.kept() {
            Some(snaps) if current && from.is_none() => snaps.workspace().ok(),
            _ => None,
        };
        let frozen = match (&into, &space) {
            (Some((dir, writes)), Some(space)) => crate::rootfs::kept::Frozen::before_replacing(
                dir,
                writes,
                &space.path().join("kept"),
            ),
            _ => scope
                .as_deref()
                .filter(|_| snapshots_care)
                .and_then(|scope| crate::rootfs::kept::Frozen::before_writing(&rootfs, scope)),
        };
        let hidden = frozen.as_ref().is_some_and(|f| {
            state
                .snapshotting
                .iter()
                .all(|j| j.frozen.as_ref().is_some_and(|mine| mine.hides(f)))
        });
        if !hidden {
            Self::join_snapshots(state);
        }
        self.settle_unless_apart(state, scope.as_deref(), into.as_ref().map(|(_, w)| w))?;
        self.ensure_rootfs(state)?;
        if from.is_none() {
            self.snapshot_before_context_step(state, frozen, space);
        }
        let created_by = format!("{} # buildkit", ins.original);
        if state.last_files_step && !is_add {
            if let Some(planned) = crate::copy::plan(&request)? {
                // The files are not written to the stage (nothing reads
                // them there): the layer is made from the context or the
                // source stage, which stay as they are until it is written.
                let entries = crate::snapshot::layer_entries_from(
                    &state.rootfs,
                    &planned.changed,
                    &planned.sources,
                )?;
                self.req
                    .progress
                    .step_info(id, "layer made straight from the source files");
                self.write_layer(state, entries, created_by, id, false)?;
                self.remember(state, key)?;
                return Ok(StepOutcome::Done);
            }
        }
        let (changed, linked) = crate::copy::copy_counting(&request)?;
        if linked > 0 {
            self.req.progress.step_info(
                id,
                &format!("{linked} file(s) hard-linked from the source, which stays as it is"),
            );
        }
        self.commit_layer(state, &changed, created_by, id)?;
        let key = if cacheable {
            key
        } else {
            self.settle(state)?;
            // Later steps chain from what was fetched, so they still hit
            // when the URL's content has not changed.
            let produced = match &state.unrecorded {
                Some(l) => l.diff_id.to_string(),
                None => String::new(),
            };
            KeyBuilder::new("ADD-FETCHED")
                .field(&key)
                .field(&produced)
                .finish()
        };
        self.remember(state, key)?;
        Ok(StepOutcome::Done)
    }

    /// The root filesystem of an image named by `COPY --from=<image>`,
    /// materialized once per build.
    pub(crate) fn image_root(
        &mut self,
        reference: &str,
        span: Span,
    ) -> Result<PathBuf, BuildError> {
        // Held while materializing, so two stages never unpack the same
        // image twice.
        let mut roots = self
            .shared
            .image_roots
            .lock()
            .map_err(|_| BuildError::Poisoned("image root"))?;
        if let Some(p) = roots.get(reference) {
            return Ok(p.clone());
        }
        let (image, digest) = self.resolve_image(reference, span)?;
        if let Ok(mut m) = self.shared.image_digests.lock() {
            m.insert(reference.to_string(), digest);
        }
        let root = self.materialize(&image, "from-image-")?;
        roots.insert(reference.to_string(), root.clone());
        Ok(root)
    }
}
