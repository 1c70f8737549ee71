//! Shared helpers for kiln-image integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use kiln_image::{EntryKind, LayerEntry};

pub fn entry(path: &str, kind: EntryKind, mode: u32) -> LayerEntry {
    LayerEntry {
        path: path.into(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        xattrs: vec![],
    }
}

/// Whether a system tool is installed; prints why a test is skipped when not.
pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: {tool} is not installed");
    }
    ok
}

/// Runs a command, asserting success; returns stdout.
pub fn run(cmd: &str, args: &[&str]) -> Vec<u8> {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

pub fn sha256_file(p: &Path) -> String {
    let out = run("sha256sum", &[p.to_str().unwrap()]);
    String::from_utf8(out).unwrap()[..64].to_string()
}
