//! Clearing an in-place root between stages ([`wipe_root`]).

use std::fs;
use std::path::Path;

use kiln_image::root::{Dir, Root, RootError};

use super::ignore::IgnoreSet;
use crate::error::{IoContext, Result, SandboxError};

/// Removes everything below `root` except the ignored paths (with what is
/// below them) and the directories above them, which are kept as they are.
/// Symlinks are removed, never followed.
///
/// Refuses to touch the real root (`root` resolving to `/`) unless
/// `allow_real_root` is set: only a caller that has established it runs
/// in a disposable container (see [`super::container_evidence`]) may set it.
pub fn wipe_root(root: &Path, ignore: &IgnoreSet, allow_real_root: bool) -> Result<()> {
    let resolved = fs::canonicalize(root).ctx(|| format!("resolve {}", root.display()))?;
    if resolved == Path::new("/") && !allow_real_root {
        return Err(SandboxError::InvalidSpec(format!(
            "refusing to wipe {} (the real root) without allow_real_root",
            root.display()
        )));
    }
    let top = Root::open(&resolved)
        .and_then(|r| r.top())
        .map_err(|e| SandboxError::Io {
            context: format!("open {}", resolved.display()),
            source: e.into(),
        })?;
    wipe_dir(&top, Path::new(""), ignore)
}

/// Empties `dir` (at `rel` below the root) but for the ignored paths,
/// acting on its descriptor: nothing is looked up through a path the
/// kernel resolves again, and no symlink is followed.
fn wipe_dir(dir: &Dir, rel: &Path, ignore: &IgnoreSet) -> Result<()> {
    let fail = |e: RootError| SandboxError::Io {
        context: format!("wipe /{}", rel.display()),
        source: e.into(),
    };
    let mut names = dir.names().map_err(fail)?;
    names.sort();
    for name in names {
        let child = rel.join(&name);
        if ignore.contains(&child) {
            continue;
        }
        let is_dir = dir
            .lstat(&name)
            .map_err(fail)?
            .is_some_and(|st| st.is_dir());
        if is_dir && ignore.has_ignored_below(&child) {
            let sub = dir.subdir(&name).map_err(fail)?;
            wipe_dir(&sub, &child, ignore)?;
        } else {
            dir.remove_all(&name).map_err(fail)?;
        }
    }
    Ok(())
}
