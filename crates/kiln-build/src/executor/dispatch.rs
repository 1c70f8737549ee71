//! Dispatch of one instruction: metadata instructions edit the config, WORKDIR makes
//! directories, COPY/ADD and RUN go to their modules.

use super::meta::{expand_ports, health_config, join_workdir, mkdir_all, set_env};
use super::*;

impl Executor<'_> {
    pub(super) fn apply(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        id: usize,
        results: &Results,
    ) -> Result<StepOutcome, BuildError> {
        let span = ins.span;
        match &ins.kind {
            InstructionKind::From(_) => {
                return Err(self.loc.at(span, "FROM inside a stage"));
            }
            InstructionKind::Arg(decls) => {
                self.declare_args(state, decls, span)?;
                return Ok(StepOutcome::Done);
            }
            InstructionKind::Env(pairs) => {
                // Every value sees the environment from before this
                // instruction, as Docker does.
                let mut expanded = Vec::with_capacity(pairs.len());
                for kv in pairs {
                    let key = self.expand(state, &kv.key, span)?;
                    let value = self.expand(state, &kv.value, span)?;
                    expanded.push((key, value));
                }
                for (k, v) in &expanded {
                    set_env(&mut state.config.config.env, k, v);
                }
                let text = expanded
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                self.history_meta(state, format!("ENV {text}"));
            }
            InstructionKind::Label(pairs) => {
                for kv in pairs {
                    let key = self.expand(state, &kv.key, span)?;
                    let value = self.expand(state, &kv.value, span)?;
                    state.config.config.labels.insert(key, value);
                }
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Maintainer(name) => {
                state.config.author = Some(name.clone());
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Expose(ports) => {
                for p in ports {
                    let p = self.expand(state, p, span)?;
                    for port in expand_ports(&p).map_err(|e| self.loc.at(span, e.to_string()))? {
                        state
                            .config
                            .config
                            .exposed_ports
                            .insert(port, Default::default());
                    }
                }
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Volume(vols) => {
                for v in vols {
                    let v = self.expand(state, v, span)?;
                    if v.trim().is_empty() {
                        return Err(self
                            .loc
                            .at(span, "VOLUME specified can not be an empty string"));
                    }
                    state.config.config.volumes.insert(v, Default::default());
                }
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::User(user) => {
                state.config.config.user = self.expand(state, user, span)?;
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Stopsignal(sig) => {
                state.config.config.stop_signal = self.expand(state, sig, span)?;
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Shell(shell) => {
                state.config.config.shell = shell.clone();
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Cmd(cmd) => {
                state.config.config.cmd = Some(self.command_vec(state, cmd));
                state.cmd_set = true;
                state.config.config.args_escaped = false;
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Entrypoint(cmd) => {
                state.config.config.entrypoint = Some(self.command_vec(state, cmd));
                if !state.cmd_set {
                    state.config.config.cmd = None;
                }
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Healthcheck(hc) => {
                state.config.config.healthcheck = Some(health_config(hc)?);
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Onbuild(inner) => {
                state.config.config.on_build.push(inner.original.clone());
                self.history_meta(state, ins.original.clone());
            }
            InstructionKind::Workdir(dir) => {
                let dir = self.expand(state, dir, span)?;
                let resolved = join_workdir(&state.config.config.working_dir, &dir);
                state.config.config.working_dir = resolved.clone();
                let key = KeyBuilder::new("WORKDIR")
                    .field(&state.key)
                    .field(&resolved)
                    .field(&state.config.config.user)
                    .finish();
                if self.reuse(state, &key, id)? {
                    return Ok(StepOutcome::Cached);
                }
                // Making directories replaces no file a pending layer's
                // writer reads: no need to wait for them. A snapshot being
                // linked must not see them.
                Self::join_snapshots(state);
                self.ensure_rootfs(state)?;
                let owner = if state.config.config.user.is_empty() {
                    (0, 0)
                } else {
                    crate::users::workdir_owner(&state.rootfs, &state.config.config.user)
                };
                let changed = mkdir_all(&state.rootfs, &resolved, owner)?;
                if changed.is_empty() {
                    self.history(state, format!("WORKDIR {resolved}"), true);
                } else {
                    self.commit_layer(state, &changed, format!("WORKDIR {resolved}"), id)?;
                }
                self.remember(state, key)?;
            }
            InstructionKind::Copy(c) => {
                return self.copy_add(state, c, false, ins, id, results);
            }
            InstructionKind::Add(c) => {
                return self.copy_add(state, c, true, ins, id, results);
            }
            InstructionKind::Run(run) => {
                return self.run(state, run, ins, id, results);
            }
        }
        Ok(StepOutcome::Done)
    }

    pub(super) fn declare_args(
        &mut self,
        state: &mut StageState,
        decls: &[ArgDecl],
        span: Span,
    ) -> Result<(), BuildError> {
        for decl in decls {
            self.consumed.insert(decl.name.clone());
            let value = if let Some(v) = self.req.build_args.get(&decl.name) {
                Some(v.clone())
            } else if let Some(d) = &decl.default {
                Some(self.expand(state, d, span)?)
            } else if let Some(g) = self.global_declared.get(&decl.name) {
                Some(g.clone())
            } else if let Some(current) = state.args.get(&decl.name) {
                // Redeclared without a default: the value the stage already
                // has (set earlier or inherited from its base stage) stays.
                Some(current.clone())
            } else {
                self.predefined.get(&decl.name).cloned()
            };
            match value {
                Some(v) => {
                    state.args.insert(decl.name.clone(), v);
                }
                None => {
                    state.args.remove(&decl.name);
                }
            }
        }
        Ok(())
    }

    pub(super) fn command_vec(&self, state: &StageState, cmd: &Command) -> Vec<String> {
        match cmd {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut v = if state.config.config.shell.is_empty() {
                    vec!["/bin/sh".to_string(), "-c".to_string()]
                } else {
                    state.config.config.shell.clone()
                };
                v.push(s.clone());
                v
            }
        }
    }
}
