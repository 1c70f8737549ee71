//! Clearing an in-place root between stages ([`wipe_root`]).

use std::fs;
use std::path::Path;

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
    wipe_dir(&resolved, Path::new(""), ignore)
}

fn wipe_dir(root: &Path, rel: &Path, ignore: &IgnoreSet) -> Result<()> {
    let abs = root.join(rel);
    let rd = fs::read_dir(&abs).ctx(|| format!("read dir {}", abs.display()))?;
    for ent in rd {
        let ent = ent.ctx(|| format!("read dir {}", abs.display()))?;
        let child = rel.join(ent.file_name());
        if ignore.contains(&child) {
            continue;
        }
        let path = abs.join(ent.file_name());
        let ft = ent.file_type().ctx(|| format!("stat {}", path.display()))?;
        if ft.is_dir() && ignore.has_ignored_below(&child) {
            wipe_dir(root, &child, ignore)?;
        } else if ft.is_dir() {
            fs::remove_dir_all(&path).ctx(|| format!("remove {}", path.display()))?;
        } else {
            fs::remove_file(&path).ctx(|| format!("remove {}", path.display()))?;
        }
    }
    Ok(())
}
