//! `RUN --mount`s: what each kind puts where ([`MountCx`] carries what they
//! share: the step's working directory, its private scratch directory,
//! environment, mounts and locks), one module per kind, and the resolution
//! of mount sources inside their roots.

mod bind;
mod cache;
mod secret;
mod ssh;
mod tmpfs;

use std::path::{Path, PathBuf};

use kiln_dockerfile::ast::Span;
use kiln_dockerfile::mount::{Mount as MountSpec, MountType};
use kiln_sandbox::Mount;

#[cfg(test)]
pub(crate) use cache::cache_dir_name;
pub use cache::mount_cache_path;
pub use ssh::parse_ssh;

use crate::executor::{Executor, Results};
use crate::run::io_err;
use crate::BuildError;

/// What the mounts of one RUN step share.
pub(crate) struct MountCx<'a> {
    /// The step's working directory (relative targets are below it).
    pub(crate) cwd: &'a str,
    /// The step's private scratch directory (writable bind copies, private caches).
    pub(crate) private: &'a Path,
    pub(crate) env: &'a mut Vec<String>,
    pub(crate) mounts: &'a mut Vec<Mount>,
    /// Locks of `sharing=locked` caches, held until the step ends.
    pub(crate) locks: &'a mut Vec<std::fs::File>,
    /// Index of the next ssh mount (for its default target).
    pub(crate) ssh_index: usize,
    pub(crate) results: &'a Results,
    pub(crate) span: Span,
}

impl MountCx<'_> {
    /// A target as an absolute path (relative to the working directory).
    fn absolute(&self, t: &str) -> String {
        if t.starts_with('/') {
            crate::executor::clean_abs(t)
        } else {
            crate::executor::clean_abs(&format!("{}/{t}", self.cwd))
        }
    }
}

impl Executor<'_> {
    /// Adds mount `m` of a RUN step.
    pub(crate) fn add_mount(
        &mut self,
        m: &MountSpec,
        cx: &mut MountCx<'_>,
    ) -> Result<(), BuildError> {
        match m.kind {
            MountType::Tmpfs => self.mount_tmpfs(m, cx),
            MountType::Bind => self.mount_bind(m, cx),
            MountType::Cache => self.mount_cache(m, cx),
            MountType::Secret => self.mount_secret(m, cx),
            MountType::Ssh => self.mount_ssh(m, cx),
        }
    }

    /// The target mount `m` (of `kind`) names, as written; it must name one.
    fn required_target<'m>(
        &self,
        m: &'m MountSpec,
        span: Span,
        kind: &str,
    ) -> Result<&'m str, BuildError> {
        m.target.as_deref().ok_or_else(|| {
            self.loc
                .at(span, format!("--mount=type={kind} needs target="))
        })
    }

    /// The tree a bind mount reads: the context (filtered by .dockerignore)
    /// when there is no `from=`, else a stage or image root.
    pub(crate) fn mount_source_root(
        &mut self,
        m: &MountSpec,
        results: &Results,
        span: Span,
    ) -> Result<(PathBuf, bool), BuildError> {
        match &m.from {
            None => Ok((self.req.context.root().to_path_buf(), true)),
            Some(from) => self.stage_or_image_root(from, results, span),
        }
    }

    pub(crate) fn stage_or_image_root(
        &mut self,
        from: &str,
        results: &Results,
        span: Span,
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
pub(crate) enum SourceError {
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
pub(crate) fn resolve_source(root: &Path, rel: &str) -> Result<(PathBuf, String), SourceError> {
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
pub(crate) fn copy_tree(
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
