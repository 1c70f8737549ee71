//! Shared helpers for kiln-image integration tests: layer entries and
//! file sums. Tool checks and runs come from kiln-testkit (a missing tool
//! fails the test).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unused_imports)]

use std::path::Path;

pub use kiln_testkit::tools::{require, run};

use kiln_image::{EntryKind, LayerEntry};

pub mod hostile;

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

pub fn sha256_file(p: &Path) -> String {
    let out = run("sha256sum", &[p.to_str().unwrap()]);
    String::from_utf8(out).unwrap()[..64].to_string()
}
