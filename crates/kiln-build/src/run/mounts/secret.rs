//! `RUN --mount=type=secret`: a value given with `--secret`, as a file on the step's own tmpfs and/or an environment variable; never on disk in the cache directory, never in a layer.

use kiln_sandbox::{Mount, MountKind};

use super::MountCx;
use crate::executor::Executor;
use crate::BuildError;
use kiln_dockerfile::mount::Mount as MountSpec;

impl Executor<'_> {
    /// The secret's value at the target or in the environment.
    pub(super) fn mount_secret(
        &mut self,
        m: &MountSpec,
        cx: &mut MountCx<'_>,
    ) -> Result<(), BuildError> {
        let sid = m
            .secret_id()
            .ok_or_else(|| self.loc.at(cx.span, "--mount=type=secret needs id="))?;
        let value = match self.req.secrets.get(&sid) {
            Some(src) => src
                .read()
                .map_err(|e| self.loc.at(cx.span, e.to_string()))?,
            None => None,
        };
        let Some(value) = value else {
            if m.required {
                return Err(self.loc.at(
                    cx.span,
                    format!("secret {sid} is required but was not given (--secret id={sid},src=…)"),
                ));
            }
            return Ok(());
        };
        if let Some(var) = &m.env {
            let text = String::from_utf8_lossy(&value).to_string();
            cx.env.push(format!("{var}={text}"));
        }
        if let Some(target) = m.secret_target() {
            // Kept in memory: the sandbox writes it on a tmpfs of
            // the step's own, never in the cache directory.
            cx.mounts.push(Mount {
                target: cx.absolute(&target),
                kind: MountKind::Secret {
                    data: kiln_sandbox::SecretData(value),
                    mode: m.effective_mode().unwrap_or(0o400),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                },
            });
        }
        Ok(())
    }
}
