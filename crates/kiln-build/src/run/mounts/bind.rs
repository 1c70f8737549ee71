//! `RUN --mount=type=bind`: a file or tree of the context (without ignored files), a stage or an image, read-only, or a private copy whose writes are discarded.

use kiln_sandbox::{Mount, MountKind};

use super::{copy_tree, resolve_source};

use super::MountCx;
use crate::executor::Executor;
use crate::BuildError;
use kiln_dockerfile::mount::Mount as MountSpec;

impl Executor<'_> {
    /// The source resolved inside its root, bound at the target.
    pub(super) fn mount_bind(
        &mut self,
        m: &MountSpec,
        cx: &mut MountCx<'_>,
    ) -> Result<(), BuildError> {
        let target = self.required_target(m, cx.span, "bind")?;
        let (root, filtered) = self.mount_source_root(m, cx.results, cx.span)?;
        let rel = m.source.as_deref().unwrap_or("/");
        let (source, resolved) = resolve_source(&root, rel)
            .map_err(|e| self.loc.at(cx.span, format!("--mount source {rel}: {e}")))?;
        if filtered || !m.readonly {
            // The context is shown without ignored files, and a
            // writable bind gets a private copy whose writes are
            // discarded after the step.
            let copy = cx.private.join(format!("bind-{}", cx.mounts.len()));
            copy_tree(
                &source,
                &copy,
                &|p| filtered && self.req.context.is_excluded(p),
                &resolved,
            )?;
            cx.mounts.push(Mount {
                target: cx.absolute(target),
                kind: MountKind::Bind {
                    source: copy,
                    readonly: m.readonly,
                },
            });
        } else {
            cx.mounts.push(Mount {
                target: cx.absolute(target),
                kind: MountKind::Bind {
                    source,
                    readonly: true,
                },
            });
        }
        Ok(())
    }
}
