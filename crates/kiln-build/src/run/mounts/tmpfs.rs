//! `RUN --mount=type=tmpfs`: an empty tmpfs at the target, sized when asked.

use kiln_sandbox::{Mount, MountKind};

use super::MountCx;
use crate::executor::Executor;
use crate::BuildError;
use kiln_dockerfile::mount::Mount as MountSpec;

impl Executor<'_> {
    /// A tmpfs at the target.
    pub(super) fn mount_tmpfs(
        &mut self,
        m: &MountSpec,
        cx: &mut MountCx<'_>,
    ) -> Result<(), BuildError> {
        let target = self.required_target(m, cx.span, "tmpfs")?;
        cx.mounts.push(Mount {
            target: cx.absolute(target),
            kind: MountKind::Tmpfs { size: m.size },
        });
        Ok(())
    }
}
