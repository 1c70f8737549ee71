//! Shared fixtures: a busybox rootfs, step dirs, a spec builder, and a
//! compact, comparable view of layer entries. Tree dumps come from
//! kiln-testkit.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unused_imports)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_image::{EntryKind, LayerEntry};
use kiln_sandbox::{Isolation, Network, RunSpec, Sandbox};

pub use kiln_testkit::tree::detailed as tree;

pub fn sandbox() -> Sandbox {
    Sandbox::with_init(env!("CARGO_BIN_EXE_kiln-sandbox-helper"))
}

/// A temp dir holding `root` (busybox rootfs), `upper` and `work`.
pub struct Step {
    pub tmp: tempfile::TempDir,
}

impl Step {
    pub fn new() -> Step {
        let tmp = tempfile::Builder::new()
            .prefix("kiln-sandbox-test-")
            .tempdir()
            .unwrap();
        let s = Step { tmp };
        busybox_rootfs(&s.root());
        s.fresh_upper();
        s
    }
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }
    pub fn upper(&self) -> PathBuf {
        self.tmp.path().join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }
    /// Replaces upper and work with empty dirs.
    pub fn fresh_upper(&self) {
        for d in [self.upper(), self.work()] {
            if d.exists() {
                fs::remove_dir_all(&d).unwrap();
            }
            fs::create_dir(&d).unwrap();
        }
    }
    pub fn spec(&self, script: &str) -> RunSpec {
        RunSpec {
            rootfs: self.root(),
            upper: self.upper(),
            work: self.work(),
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            supplementary_gids: vec![],
            hostname: "kilnbox".into(),
            network: Network::Default,
            mounts: vec![],
            isolation: Isolation::Root,
            security: kiln_sandbox::Security::Sandbox,
        }
    }
}

/// A minimal image: Debian's static busybox with its applets as symlinks,
/// /etc/x, /etc/passwd, /dir/{a,b}, /work.
pub fn busybox_rootfs(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    for applet in [
        "sh", "echo", "rm", "mkdir", "touch", "chmod", "ln", "mkfifo", "cat", "id", "env",
        "hostname", "pwd", "ls", "find", "stat", "md5sum", "sort", "chown", "mv", "sleep",
    ] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/x"), "x\n").unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::create_dir_all(root.join("dir")).unwrap();
    fs::write(root.join("dir/a"), "a").unwrap();
    fs::write(root.join("dir/b"), "b").unwrap();
    fs::create_dir_all(root.join("work")).unwrap();
    for d in ["", "bin", "etc", "dir", "work"] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// `path kind mode uid:gid`, one string per entry, for exact comparisons.
pub fn describe(entries: &[LayerEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            let kind = match &e.kind {
                EntryKind::File { size, .. } => format!("file({size})"),
                EntryKind::Bytes(b) => format!("bytes({})", b.len()),
                EntryKind::Dir => "dir".into(),
                EntryKind::Symlink { target } => format!("symlink->{target}"),
                EntryKind::Hardlink { target } => format!("hardlink->{target}"),
                EntryKind::CharDevice { major, minor } => format!("char({major},{minor})"),
                EntryKind::BlockDevice { major, minor } => format!("block({major},{minor})"),
                EntryKind::Fifo => "fifo".into(),
                EntryKind::Whiteout => "whiteout".into(),
                EntryKind::OpaqueDir => "opaque".into(),
            };
            format!("{} {kind} {:o} {}:{}", e.path, e.mode, e.uid, e.gid)
        })
        .collect()
}
