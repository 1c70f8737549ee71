//! Removing a build's scratch space without making the user wait for it.
//!
//! A build leaves stage root filesystems behind in its scratch directory;
//! deleting tens of thousands of files can take seconds on disks mounted
//! with online discard. The scratch directory is renamed into
//! `<cache-dir>/trash/` (instant) and a detached copy of kiln deletes the
//! trash in the background; whatever a killed cleaner leaves is picked up
//! by the next build's cleaner.

use std::path::Path;
use std::process::{Command, Stdio};

/// The hidden subcommand the detached cleaner runs.
pub const SUBCOMMAND: &str = "internal-cleanup";

/// Moves `work` into the trash under `cache_dir` and starts a detached
/// cleaner; falls back to deleting in place when either step fails.
pub fn discard(cache_dir: &Path, work: &Path) {
    let trash = cache_dir.join("trash");
    let moved = kiln_build::scratch::private_dir(&trash).is_ok()
        && work
            .file_name()
            .map(|n| std::fs::rename(work, trash.join(n)).is_ok())
            .unwrap_or(false);
    if !moved {
        let _ = std::fs::remove_dir_all(work);
        return;
    }
    let spawned = std::env::current_exe().ok().and_then(|exe| {
        let mut cmd = Command::new(exe);
        cmd.arg(SUBCOMMAND)
            .arg(&trash)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group: a Ctrl-C aimed at the build's group does
        // not stop it, and it outlives this process.
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        cmd.spawn().ok()
    });
    if spawned.is_none() {
        empty_trash(&trash);
    }
}

/// Deletes everything in the trash directory (the cleaner's job).
pub fn empty_trash(trash: &Path) {
    let Ok(rd) = std::fs::read_dir(trash) else {
        return;
    };
    for e in rd.flatten() {
        let _ = std::fs::remove_dir_all(e.path());
    }
}
