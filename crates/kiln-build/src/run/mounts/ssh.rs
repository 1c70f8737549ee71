//! `RUN --mount=type=ssh`: an ssh agent socket given with `--ssh`, bound at the target with `SSH_AUTH_SOCK` pointing at it.

use std::path::PathBuf;

use kiln_sandbox::{Mount, MountKind};

use super::MountCx;
use crate::executor::Executor;
use crate::BuildError;
use kiln_dockerfile::mount::Mount as MountSpec;

impl Executor<'_> {
    /// The agent's socket at the target.
    pub(super) fn mount_ssh(
        &mut self,
        m: &MountSpec,
        cx: &mut MountCx<'_>,
    ) -> Result<(), BuildError> {
        let sid = m.ssh_id().to_string();
        let target = m.ssh_target(cx.ssh_index);
        cx.ssh_index += 1;
        match self.req.ssh.get(&sid) {
            Some(sock) => {
                cx.mounts.push(Mount {
                    target: cx.absolute(&target),
                    kind: MountKind::Bind {
                        source: sock.clone(),
                        readonly: false,
                    },
                });
                cx.env
                    .push(format!("SSH_AUTH_SOCK={}", cx.absolute(&target)));
            }
            None if m.required => {
                return Err(self.loc.at(
                    cx.span,
                    format!("ssh agent {sid} is required but was not given (--ssh {sid}=…)"),
                ))
            }
            None => {}
        }
        Ok(())
    }
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
