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
use std::path::Path;

use kiln_dockerfile::ast::{Instruction, Run};
use kiln_dockerfile::mount::{parse_mount, MountType};
use kiln_dockerfile::parser::{run_script, RunScript};
use kiln_sandbox::{Isolation, Mount, MountKind, Network, RunSpec, Security};

use crate::cache::KeyBuilder;
use crate::executor::{Executor, Results, StageState, StageVars};
use crate::progress::{Progress, StepOutcome};
use crate::BuildError;
use mounts::resolve_source;
pub use mounts::{mount_cache_path, parse_ssh};

mod mounts;

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

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
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

        let mut locks = Vec::new();
        let mut cx = mounts::MountCx {
            cwd: &cwd,
            private: &private,
            env: &mut env,
            mounts: &mut mounts,
            locks: &mut locks,
            ssh_index: 0,
            results,
            span,
        };
        for (_, m) in &parsed_mounts {
            self.add_mount(m, &mut cx)?;
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
}

#[cfg(test)]
mod tests {
    use super::mounts::cache_dir_name;
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
