//! Where the filesystem puts the trees kiln makes. Stage roots and kept
//! snapshots are independent trees of thousands of files, created in bulk
//! and later deleted in bulk. Their parent directories are marked as tops
//! of directory hierarchies (`FS_TOPDIR_FL`, `chattr +T`), so that ext4's
//! allocator (Orlov) spreads each new tree over the block groups with the
//! most free space, as it does for home directories, instead of packing it
//! beside the last one.
//!
//! That matters most where the cache was just wiped (a CI job that starts
//! from an empty cache, or `kiln cache prune`): on ext4 without a journal,
//! making a file skips over every inode of its group deleted in the last
//! minutes (`recently_deleted()`), so a tree made where the old one was
//! freed unpacks several times slower (1.0–6.1 s instead of 0.5 s for a
//! Debian base, measured back to back on such a disk). Other filesystems
//! ignore the flag or reject it; both are fine.

use std::path::Path;

/// Marks `dir` so that directories made in it start in block groups of
/// their own. Best effort: nothing is lost where it cannot be set.
pub fn spread_subtrees(dir: &Path) {
    let Ok(fd) = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return;
    };
    let Ok(flags) = rustix::fs::ioctl_getflags(&fd) else {
        return;
    };
    if flags.contains(rustix::fs::IFlags::TOPDIR) {
        return;
    }
    if let Err(e) = rustix::fs::ioctl_setflags(&fd, flags | rustix::fs::IFlags::TOPDIR) {
        tracing::debug!(dir = %dir.display(), "cannot mark as a top directory: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_a_directory_once_and_tolerates_any_filesystem() {
        let t = tempfile::tempdir().expect("tempdir");
        spread_subtrees(t.path());
        spread_subtrees(t.path());
        // Where the filesystem keeps inode flags (ext4 here), it is set.
        let fd = rustix::fs::open(
            t.path(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .expect("open");
        if let Ok(flags) = rustix::fs::ioctl_getflags(&fd) {
            let ext4 = rustix::fs::fstatfs(&fd).is_ok_and(|s| s.f_type == 0xEF53);
            assert!(
                !ext4 || flags.contains(rustix::fs::IFlags::TOPDIR),
                "{flags:?}"
            );
        }
        // A path that is not there is no error.
        spread_subtrees(&t.path().join("missing"));
    }
}
