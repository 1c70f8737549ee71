//! The RUN step: builds the sandbox spec (command after SHELL and heredoc
//! rules, environment, user, working directory, network, `--mount`s), runs
//! it through kiln-sandbox over the stage's root filesystem, and turns the
//! overlay upper dir into the step's layer.
//!
//! Nothing a mount brings in reaches the layer: mounts live outside the
//! overlay, and the sandbox removes the mount points it had to create.
//! Secret values stay in memory until the sandbox writes them on a tmpfs of
//! the step's own (in place: a file at the target, removed after the step);
//! they never enter the cache directory, the config, the history or a log
//! line.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_dockerfile::ast::{Instruction, Run};
use kiln_dockerfile::mount::{parse_mount, Mount as MountSpec, MountType, Sharing};
use kiln_dockerfile::parser::{run_script, RunScript};
use kiln_sandbox::{Isolation, Mount, MountKind, Network, RunSpec, Security};

use crate::cache::KeyBuilder;
use crate::executor::{Executor, Results, StageState, StageVars};
use crate::progress::{Progress, StepOutcome};
use crate::BuildError;

/// Streams a step's output to the progress sink line by line.
struct StepOutput<'a> {
    progress: &'a dyn Progress,
    id: usize,
    pending: Vec<u8>,
}

impl Write for StepOutput<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            self.progress.step_info(self.id, &text);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).to_string();
            self.pending.clear();
            self.progress.step_info(self.id, &text);
        }
        Ok(())
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Gives the step `HOME` when its environment (ENV and ARGs) has none or an
/// empty one: the home directory of the step's user in the image's
/// `/etc/passwd`, `/` when the uid has no entry. This is what the OCI
/// runtime under Docker's builder does for every RUN; the image config
/// itself never gains `HOME`.
fn set_default_home(env: &mut Vec<String>, home: &str) {
    let has_home = env.iter().any(|e| {
        e.split_once('=')
            .is_some_and(|(k, v)| k == "HOME" && !v.is_empty())
    });
    if !has_home {
        env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some("HOME"));
        env.push(format!("HOME={home}"));
    }
}

/// Where the `RUN --mount=type=cache` directory with `id` lives.
pub fn mount_cache_path(mount_cache_dir: &Path, id: &str) -> PathBuf {
    mount_cache_dir.join(cache_dir_name(id))
}

/// A directory name for a cache mount id: readable and safe.
fn cache_dir_name(id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let readable: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    format!("{readable}-{}", &hex::encode(digest)[..16])
}

impl Executor<'_> {
    fn isolation(&mut self) -> Result<Isolation, BuildError> {
        // Locked across the probe so concurrent stages probe once.
        let mut cell = self
            .isolation_cell()
            .lock()
            .map_err(|_| BuildError::Poisoned("isolation"))?;
        if let Some(i) = *cell {
            return Ok(i);
        }
        let chosen = match self.req.isolation {
            Isolation::Auto => {
                let (i, why) = kiln_sandbox::probe()?;
                self.req
                    .progress
                    .info(&format!("RUN isolation: {i} ({why})"));
                i
            }
            other => other,
        };
        *cell = Some(chosen);
        Ok(chosen)
    }

    pub(crate) fn run(
        &mut self,
        state: &mut StageState,
        run: &Run,
        ins: &Instruction,
        id: usize,
        results: &Results,
    ) -> Result<StepOutcome, BuildError> {
        let span = ins.span;

        // The environment: ENV, then the stage's ARGs that ENV does not set.
        let mut env = state.config.config.env.clone();
        for (k, v) in &state.args {
            if !env
                .iter()
                .any(|e| e.split_once('=').map(|(n, _)| n) == Some(k.as_str()))
            {
                env.push(format!("{k}={v}"));
            }
        }
        let shell = if state.config.config.shell.is_empty() {
            vec!["/bin/sh".to_string(), "-c".to_string()]
        } else {
            state.config.config.shell.clone()
        };
        // A heredoc with a shebang runs as a script file: (path, content).
        let mut script = None;
        let argv = match run_script(run) {
            RunScript::Exec(v) => v,
            RunScript::Shell(s) => {
                let mut v = shell.clone();
                v.push(s);
                v
            }
            RunScript::ShebangFile { path, content } => {
                let mut v = shell.clone();
                v.push(path.clone());
                script = Some((path, content));
                v
            }
        };
        if argv.is_empty() {
            return Err(self.loc.at(span, "RUN has no command"));
        }

        let network = match run.network.as_deref() {
            None | Some("default") => Network::Default,
            Some("none") => Network::None,
            Some("host") => Network::Host,
            Some(other) => {
                return Err(self.loc.at(
                    span,
                    format!("RUN --network={other}: expected default, none or host"),
                ))
            }
        };

        let security = match run.security.as_deref() {
            None | Some("sandbox") => Security::Sandbox,
            Some("insecure") if self.req.allow_insecure => Security::Insecure,
            Some("insecure") => {
                return Err(self.loc.at(
                    span,
                    "RUN --security=insecure needs the security.insecure entitlement: \
                     pass --allow security.insecure to kiln build",
                ))
            }
            Some(other) => {
                return Err(self.loc.at(
                    span,
                    format!("RUN --security={other}: expected sandbox or insecure"),
                ))
            }
        };

        let cwd = if state.config.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            state.config.config.working_dir.clone()
        };
        let user_spec = if state.config.config.user.is_empty() {
            "0".to_string()
        } else {
            state.config.config.user.clone()
        };

        let mut parsed_mounts = Vec::with_capacity(run.mounts.len());
        for raw in &run.mounts {
            let vars = StageVars {
                env: &state.config.config.env,
                args: &state.args,
            };
            let spec = kiln_dockerfile::expand::expand_word(raw, &vars, self.df.directives.escape)
                .map_err(|e| self.loc.at(span, format!("--mount: {}", e.message)))?
                .value;
            let m = parse_mount(&spec)
                .map_err(|e| self.loc.at(span, format!("--mount={spec}: {e}")))?;
            parsed_mounts.push((spec, m));
        }

        // The key: the command, its environment, user, directory, network,
        // heredoc script, and each mount's definition (never a secret's
        // value) with the content of what a bind or cache mount copies in.
        let mut key = KeyBuilder::new("RUN");
        key.field(&state.key)
            .list(&argv)
            .list(&env)
            .field(&cwd)
            .field(&user_spec)
            .field(&format!("{network:?}|{:?}", run.security));
        if let Some((path, content)) = &script {
            key.field(path).field(content);
        }
        for (spec, m) in &parsed_mounts {
            key.field(spec);
            let reads_source = matches!(m.kind, MountType::Bind)
                || (matches!(m.kind, MountType::Cache) && m.from.is_some());
            if reads_source {
                // A source that climbs out of its root is refused before
                // anything is read.
                let rel = m.source.as_deref().unwrap_or("/");
                if crate::copy::fsops::clean_components(rel).is_none() {
                    return Err(self.loc.at(
                        span,
                        format!("--mount source {rel}: points outside its root"),
                    ));
                }
                let identity =
                    self.source_identity(m.from.as_deref(), state.index, results, span)?;
                key.field(&identity);
                if m.from.is_none() {
                    // The key hashes what is mounted: the source resolved
                    // inside the context (symlinks followed there), then
                    // the tree it names.
                    let root = self.req.context.root().to_path_buf();
                    let (_, resolved) = resolve_source(&root, rel)
                        .map_err(|e| self.loc.at(span, format!("--mount source {rel}: {e}")))?;
                    key.field(&resolved);
                    self.hash_context(&mut key, &resolved)?;
                }
            }
        }
        let key = key.finish();
        if self.reuse(state, &key, id)? {
            return Ok(StepOutcome::Cached);
        }

        let isolation = self.isolation()?;
        // The root is only read until the merge below (in place, the
        // step writes the root, which keeps no snapshots).
        self.ensure_rootfs_to_read(state)?;
        let scratch = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&self.req.work_dir)
            .map_err(io_err(&self.req.work_dir))?;
        let upper = scratch.path().join("upper");
        let work = scratch.path().join("work");
        let private = scratch.path().join("private");
        for d in [&upper, &work, &private] {
            std::fs::create_dir(d).map_err(io_err(d))?;
        }
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(&private))?;

        let mut mounts = Vec::new();
        if let Some((path, content)) = &script {
            let file = private.join("heredoc-script");
            std::fs::write(&file, content).map_err(io_err(&file))?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                .map_err(io_err(&file))?;
            mounts.push(Mount {
                target: path.clone(),
                kind: MountKind::Bind {
                    source: file,
                    readonly: true,
                },
            });
        }

        let user = crate::users::lookup_user(&state.rootfs, &user_spec)
            .map_err(|e| self.loc.at(span, format!("USER {user_spec}: {e}")))?;

        set_default_home(&mut env, &user.home);

        let mut ssh_index = 0usize;
        let mut locks = Vec::new();
        for (_, m) in &parsed_mounts {
            self.add_mount(
                m,
                &cwd,
                &private,
                &mut env,
                &mut mounts,
                &mut locks,
                &mut ssh_index,
                results,
                span,
            )?;
        }

        let spec = RunSpec {
            rootfs: state.rootfs.clone(),
            upper: upper.clone(),
            work,
            argv,
            env,
            cwd,
            uid: user.uid,
            gid: user.gid,
            supplementary_gids: user.supplementary.clone(),
            hostname: "kiln".to_string(),
            network,
            mounts,
            isolation,
            security,
        };
        if isolation == Isolation::InPlace {
            let outcome = self.run_in_place(state, &spec, key, id, span);
            drop(locks);
            return outcome;
        }
        let mut out = StepOutput {
            progress: self.req.progress,
            id,
            pending: Vec::new(),
        };
        let result = kiln_sandbox::run(&spec, &mut out)?;
        let _ = out.flush();
        drop(locks);
        if result.exit_code != 0 {
            let mut message = format!("RUN failed with exit code {}", result.exit_code);
            // A step that died writing to a full disk mostly says only
            // that it failed: the full filesystem is named while the
            // step's files still fill it.
            if let Some(full) = crate::scratch::full_filesystem(&upper) {
                message.push_str(&format!(" ({full})"));
            }
            // 128 + SIGSYS: the seccomp filter refused a system call.
            if result.exit_code == 159 && spec.security == kiln_sandbox::Security::Sandbox {
                message.push_str(
                    " (killed by SIGSYS: the RUN sandbox's seccomp filter refused a system \
                     call; 32-bit x86 programs cannot run under it. `RUN --security=insecure` \
                     with `--allow security.insecure` runs without the filter)",
                );
            }
            if !result.tail.trim().is_empty() {
                message.push_str(":\n");
                message.push_str(result.tail.trim_end());
            }
            return Err(self.loc.at(span, message));
        }
        let mut entries = kiln_sandbox::upper_changes_since(&upper, &state.rootfs, &result.id_map)?;
        // The pending layers' writers read the root: they must be done
        // before the merge changes any file they read.
        self.settle_unless_untouched(state, &entries)?;
        // What the step deleted or replaced, and the spent upper dir, are
        // moved aside (renames are cheap) and deleted after the build.
        let discard = self.req.work_dir.join("discarded");
        kiln_sandbox::merge_upper_discarding(&upper, &state.rootfs, &discard)?;
        // The merge moved the step's files into the root: the layer reads
        // them there, while the next step runs.
        for e in &mut entries {
            if let kiln_image::EntryKind::File { source, .. } = &mut e.kind {
                if let Ok(rel) = source.strip_prefix(&upper) {
                    *source = state.rootfs.join(rel);
                }
            }
        }
        let created_by = format!("RUN {} # buildkit", spec.argv.join(" "));
        if entries.is_empty() {
            self.history(state, created_by, true);
        } else {
            self.push_layer(state, entries, created_by, id)?;
        }
        let spent = scratch.keep();
        if let Some(name) = spent.file_name() {
            if std::fs::rename(&spent, discard.join(name)).is_err() {
                let _ = std::fs::remove_dir_all(&spent);
            }
        }
        self.remember(state, key)?;
        Ok(StepOutcome::Done)
    }

    /// Runs a step in kiln's own container root (Kaniko-style): mounts
    /// emulated, the command run directly, and its changes found by
    /// comparing stat walks of the root before and after.
    fn run_in_place(
        &mut self,
        state: &mut StageState,
        spec: &RunSpec,
        key: String,
        id: usize,
        span: kiln_dockerfile::ast::Span,
    ) -> Result<StepOutcome, BuildError> {
        let root = Path::new("/");
        let in_place = self
            .in_place()
            .ok_or(BuildError::Poisoned("in-place root (missing)"))?;
        let mut ignore = in_place.ignore.clone();
        let confined = in_place.open_root()?;
        if spec.network == Network::None {
            self.req.progress.step_info(
                id,
                "warning: in-place steps share the container's network; --network=none cannot be honoured",
            );
        }
        let mut placed = crate::rootfs::in_place::place_mounts(root, &spec.mounts, &mut ignore)?;
        let before = kiln_sandbox::scan(root, &ignore)?;
        // BuildKit creates a missing working directory; it is part of the
        // step's changes. Created through the root's resolver: symlinks the
        // image planted are followed inside it, never into kiln's own paths.
        confined
            .dir(&spec.cwd, Some(kiln_image::root::NewDir::default()))
            .map_err(|source| BuildError::Root {
                what: format!("RUN working directory {}", spec.cwd),
                source,
            })?;
        let direct = kiln_sandbox::DirectSpec {
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            uid: spec.uid,
            gid: spec.gid,
            supplementary_gids: spec.supplementary_gids.clone(),
        };
        let mut out = StepOutput {
            progress: self.req.progress,
            id,
            pending: Vec::new(),
        };
        let result = kiln_sandbox::run_direct(&direct, &mut out);
        let _ = out.flush();
        let result = result?;
        if result.exit_code != 0 {
            placed.restore()?;
            let mut message = format!("RUN failed with exit code {}", result.exit_code);
            if !result.tail.trim().is_empty() {
                message.push_str(":\n");
                message.push_str(result.tail.trim_end());
            }
            return Err(self.loc.at(span, message));
        }
        let (entries, _) = kiln_sandbox::changes(root, &before, &ignore)?;
        placed.restore()?;
        let created_by = format!("RUN {} # buildkit", spec.argv.join(" "));
        if entries.is_empty() {
            self.history(state, created_by, true);
        } else {
            self.push_layer(state, entries, created_by, id)?;
        }
        self.remember(state, key)?;
        Ok(StepOutcome::Done)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_mount(
        &mut self,
        m: &MountSpec,
        cwd: &str,
        private: &Path,
        env: &mut Vec<String>,
        mounts: &mut Vec<Mount>,
        locks: &mut Vec<std::fs::File>,
        ssh_index: &mut usize,
        results: &Results,
        span: kiln_dockerfile::ast::Span,
    ) -> Result<(), BuildError> {
        let absolute = |t: &str| -> String {
            if t.starts_with('/') {
                crate::executor::clean_abs(t)
            } else {
                crate::executor::clean_abs(&format!("{cwd}/{t}"))
            }
        };
        match m.kind {
            MountType::Tmpfs => {
                let target = m
                    .target
                    .as_deref()
                    .ok_or_else(|| self.loc.at(span, "--mount=type=tmpfs needs target="))?;
                mounts.push(Mount {
                    target: absolute(target),
                    kind: MountKind::Tmpfs { size: m.size },
                });
            }
            MountType::Bind => {
                let target = m
                    .target
                    .as_deref()
                    .ok_or_else(|| self.loc.at(span, "--mount=type=bind needs target="))?;
                let (root, filtered) = self.mount_source_root(m, results, span)?;
                let rel = m.source.as_deref().unwrap_or("/");
                let (source, resolved) = resolve_source(&root, rel)
                    .map_err(|e| self.loc.at(span, format!("--mount source {rel}: {e}")))?;
                if filtered || !m.readonly {
                    // The context is shown without ignored files, and a
                    // writable bind gets a private copy whose writes are
                    // discarded after the step.
                    let copy = private.join(format!("bind-{}", mounts.len()));
                    copy_tree(
                        &source,
                        &copy,
                        &|p| filtered && self.req.context.is_excluded(p),
                        &resolved,
                    )?;
                    mounts.push(Mount {
                        target: absolute(target),
                        kind: MountKind::Bind {
                            source: copy,
                            readonly: m.readonly,
                        },
                    });
                } else {
                    mounts.push(Mount {
                        target: absolute(target),
                        kind: MountKind::Bind {
                            source,
                            readonly: true,
                        },
                    });
                }
            }
            MountType::Cache => {
                let target = m
                    .target
                    .as_deref()
                    .ok_or_else(|| self.loc.at(span, "--mount=type=cache needs target="))?;
                let id = m.cache_id().unwrap_or(target);
                let base = mount_cache_path(&self.req.mount_cache_dir, id);
                self.note_cache_mount(id, &base);
                let fresh = !base.exists();
                std::fs::create_dir_all(&base).map_err(io_err(&base))?;
                let dir = match m.sharing.unwrap_or(Sharing::Shared) {
                    Sharing::Shared => base.clone(),
                    Sharing::Locked => {
                        let lock_path = base.with_extension("lock");
                        let f = std::fs::OpenOptions::new()
                            .create(true)
                            .truncate(false)
                            .write(true)
                            .open(&lock_path)
                            .map_err(io_err(&lock_path))?;
                        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(
                            |e| BuildError::Io {
                                path: lock_path.clone(),
                                source: e.into(),
                            },
                        )?;
                        locks.push(f);
                        base.clone()
                    }
                    Sharing::Private => {
                        let d = private.join(format!("cache-{}", mounts.len()));
                        std::fs::create_dir(&d).map_err(io_err(&d))?;
                        d
                    }
                };
                if fresh {
                    if let Some(from) = &m.from {
                        let (root, _) = self.stage_or_image_root(from, results, span)?;
                        let rel = m.source.as_deref().unwrap_or("/");
                        let (src, resolved) = resolve_source(&root, rel)
                            .map_err(|e| self.loc.at(span, format!("--mount source {rel}: {e}")))?;
                        copy_tree(&src, &dir, &|_| false, &resolved)?;
                    }
                    let mode = m.effective_mode().unwrap_or(0o755);
                    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode));
                    let _ = std::os::unix::fs::chown(
                        &dir,
                        Some(m.uid.unwrap_or(0)),
                        Some(m.gid.unwrap_or(0)),
                    );
                }
                mounts.push(Mount {
                    target: absolute(target),
                    kind: MountKind::Bind {
                        source: dir,
                        readonly: m.readonly,
                    },
                });
            }
            MountType::Secret => {
                let sid = m
                    .secret_id()
                    .ok_or_else(|| self.loc.at(span, "--mount=type=secret needs id="))?;
                let value = match self.req.secrets.get(&sid) {
                    Some(src) => src.read().map_err(|e| self.loc.at(span, e.to_string()))?,
                    None => None,
                };
                let Some(value) = value else {
                    if m.required {
                        return Err(self.loc.at(
                            span,
                            format!("secret {sid} is required but was not given (--secret id={sid},src=…)"),
                        ));
                    }
                    return Ok(());
                };
                if let Some(var) = &m.env {
                    let text = String::from_utf8_lossy(&value).to_string();
                    env.push(format!("{var}={text}"));
                }
                if let Some(target) = m.secret_target() {
                    // Kept in memory: the sandbox writes it on a tmpfs of
                    // the step's own, never in the cache directory.
                    mounts.push(Mount {
                        target: absolute(&target),
                        kind: MountKind::Secret {
                            data: kiln_sandbox::SecretData(value),
                            mode: m.effective_mode().unwrap_or(0o400),
                            uid: m.uid.unwrap_or(0),
                            gid: m.gid.unwrap_or(0),
                        },
                    });
                }
            }
            MountType::Ssh => {
                let sid = m.ssh_id().to_string();
                let target = m.ssh_target(*ssh_index);
                *ssh_index += 1;
                match self.req.ssh.get(&sid) {
                    Some(sock) => {
                        mounts.push(Mount {
                            target: absolute(&target),
                            kind: MountKind::Bind {
                                source: sock.clone(),
                                readonly: false,
                            },
                        });
                        env.push(format!("SSH_AUTH_SOCK={}", absolute(&target)));
                    }
                    None if m.required => {
                        return Err(self.loc.at(
                            span,
                            format!(
                                "ssh agent {sid} is required but was not given (--ssh {sid}=…)"
                            ),
                        ))
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// The tree a bind mount reads: the context (filtered by .dockerignore)
    /// when there is no `from=`, else a stage or image root.
    fn mount_source_root(
        &mut self,
        m: &MountSpec,
        results: &Results,
        span: kiln_dockerfile::ast::Span,
    ) -> Result<(PathBuf, bool), BuildError> {
        match &m.from {
            None => Ok((self.req.context.root().to_path_buf(), true)),
            Some(from) => self.stage_or_image_root(from, results, span),
        }
    }

    fn stage_or_image_root(
        &mut self,
        from: &str,
        results: &Results,
        span: kiln_dockerfile::ast::Span,
    ) -> Result<(PathBuf, bool), BuildError> {
        for (i, node) in self.graph.stages.iter().enumerate() {
            let named = node.name.as_deref() == Some(from.to_ascii_lowercase().as_str())
                || from.parse::<usize>().ok() == Some(i);
            if named {
                if let Some(r) = results.get(&i) {
                    return Ok((self.stage_root(r)?, false));
                }
            }
        }
        Ok((self.image_root(from, span)?, false))
    }
}

/// Why a mount source cannot be used.
#[derive(Debug, thiserror::Error)]
enum SourceError {
    #[error("not found")]
    NotFound,
    #[error("points outside its root")]
    Escapes,
    #[error("too many levels of symbolic links")]
    TooManyLinks,
    #[error("{0}")]
    Io(std::io::Error),
}

/// Resolves a mount source inside its root: symlinks followed within the
/// root, `..` that climbs out rejected. Returns the host path and the path
/// below the root (`/`-separated, empty for the root itself).
fn resolve_source(root: &Path, rel: &str) -> Result<(PathBuf, String), SourceError> {
    use crate::copy::fsops::{resolve_in_root, Escape, ResolveError};
    match resolve_in_root(root, rel, true, Escape::Reject) {
        Ok(r) => {
            let p = r.host(root);
            if p.symlink_metadata().is_ok() {
                Ok((p, r.rel_string()))
            } else {
                Err(SourceError::NotFound)
            }
        }
        Err(ResolveError::Escapes) => Err(SourceError::Escapes),
        Err(ResolveError::TooManyLinks) => Err(SourceError::TooManyLinks),
        Err(ResolveError::Io(e)) => Err(SourceError::Io(e)),
    }
}

/// Copies a file or directory tree (for writable binds and seeded caches).
fn copy_tree(
    src: &Path,
    dst: &Path,
    excluded: &dyn Fn(&str) -> bool,
    rel: &str,
) -> Result<(), BuildError> {
    let meta = std::fs::symlink_metadata(src).map_err(io_err(src))?;
    if meta.is_dir() {
        std::fs::create_dir_all(dst).map_err(io_err(dst))?;
        std::fs::set_permissions(dst, meta.permissions()).map_err(io_err(dst))?;
        let mut names: Vec<_> = std::fs::read_dir(src)
            .map_err(io_err(src))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            let child_rel = if rel.trim_matches('/').is_empty() {
                name.to_string_lossy().to_string()
            } else {
                format!("{}/{}", rel.trim_matches('/'), name.to_string_lossy())
            };
            if excluded(&child_rel) {
                continue;
            }
            copy_tree(&src.join(&name), &dst.join(&name), excluded, &child_rel)?;
        }
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(src).map_err(io_err(src))?;
        std::os::unix::fs::symlink(target, dst).map_err(io_err(dst))?;
    } else if meta.is_file() {
        std::fs::copy(src, dst).map_err(io_err(dst))?;
    }
    Ok(())
}

/// Parses `--ssh default[=SOCKET]` values; `default` alone uses
/// `SSH_AUTH_SOCK`.
pub fn parse_ssh(spec: &str) -> Result<(String, PathBuf), BuildError> {
    let (id, path) = match spec.split_once('=') {
        Some((id, p)) => (id.to_string(), PathBuf::from(p)),
        None => {
            let sock = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| BuildError::NoSshAgent {
                spec: spec.to_string(),
            })?;
            (spec.to_string(), PathBuf::from(sock))
        }
    };
    Ok((id, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_defaults_only_when_unset_or_empty() {
        let mut env = vec!["PATH=/bin".to_string()];
        set_default_home(&mut env, "/home/alice");
        assert_eq!(env, ["PATH=/bin", "HOME=/home/alice"]);
        let mut env = vec!["HOME=/custom".to_string()];
        set_default_home(&mut env, "/root");
        assert_eq!(env, ["HOME=/custom"]);
        let mut env = vec!["HOME=".to_string(), "A=1".to_string()];
        set_default_home(&mut env, "/");
        assert_eq!(env, ["A=1", "HOME=/"]);
    }

    #[test]
    fn cache_names_are_safe() {
        let n = cache_dir_name("/root/.cache/pip");
        assert!(n.starts_with("_root__cache_pip-"));
        assert!(!n.contains('/'));
        assert_ne!(cache_dir_name("a/b"), cache_dir_name("a_b"));
    }
}
