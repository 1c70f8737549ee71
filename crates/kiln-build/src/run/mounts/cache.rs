//! `RUN --mount=type=cache`: directories kept between builds in the cache directory, by id (shared, locked or private), seeded from a stage or image on first use.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_dockerfile::mount::Sharing;
use kiln_sandbox::{Mount, MountKind};

use super::{copy_tree, resolve_source};
use crate::run::io_err;

use super::MountCx;
use crate::executor::Executor;
use crate::BuildError;
use kiln_dockerfile::mount::Mount as MountSpec;

impl Executor<'_> {
    /// The cache directory of the mount's id, bound at the target.
    pub(super) fn mount_cache(
        &mut self,
        m: &MountSpec,
        cx: &mut MountCx<'_>,
    ) -> Result<(), BuildError> {
        let target = self.required_target(m, cx.span, "cache")?;
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
                rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
                    BuildError::Io {
                        path: lock_path.clone(),
                        source: e.into(),
                    }
                })?;
                cx.locks.push(f);
                base.clone()
            }
            Sharing::Private => {
                let d = cx.private.join(format!("cache-{}", cx.mounts.len()));
                std::fs::create_dir(&d).map_err(io_err(&d))?;
                d
            }
        };
        if fresh {
            if let Some(from) = &m.from {
                let (root, _) = self.stage_or_image_root(from, cx.results, cx.span)?;
                let rel = m.source.as_deref().unwrap_or("/");
                let (src, resolved) = resolve_source(&root, rel)
                    .map_err(|e| self.loc.at(cx.span, format!("--mount source {rel}: {e}")))?;
                copy_tree(&src, &dir, &|_| false, &resolved)?;
            }
            let mode = m.effective_mode().unwrap_or(0o755);
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode));
            let _ =
                std::os::unix::fs::chown(&dir, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)));
        }
        cx.mounts.push(Mount {
            target: cx.absolute(target),
            kind: MountKind::Bind {
                source: dir,
                readonly: m.readonly,
            },
        });
        Ok(())
    }
}

/// Where the `RUN --mount=type=cache` directory with `id` lives.
pub fn mount_cache_path(mount_cache_dir: &Path, id: &str) -> PathBuf {
    mount_cache_dir.join(cache_dir_name(id))
}

/// A directory name for a cache mount id: readable and safe.
pub(crate) fn cache_dir_name(id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let readable: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    format!("{readable}-{}", &hex::encode(digest)[..16])
}
