//! Test helpers: context archives built in the test, and context options.
//! Loopback servers, free ports and tree dumps come from kiln-testkit.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unused_imports)]

pub use kiln_testkit::net::{free_port, start_server, Server};
pub use kiln_testkit::tree::paths as tree;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_context::{Context, ContextOptions};

/// The files of a test context: path → (mode, contents).
pub fn sample_files() -> Vec<(&'static str, u32, &'static [u8])> {
    vec![
        ("Dockerfile", 0o644, b"FROM scratch\nCOPY . /\n"),
        ("app/main.sh", 0o755, b"#!/bin/sh\necho hi\n"),
        ("app/data/x.txt", 0o600, b"x-data"),
        ("secret.key", 0o644, b"do not ship"),
        (".dockerignore", 0o644, b"*.key\n"),
    ]
}

/// A tar of [`sample_files`], plus a symlink `link -> app/main.sh`.
pub fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, data) in sample_files() {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "link", "app/main.sh").unwrap();
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// Checks that `ctx` holds exactly the sample files, with their modes and
/// contents, the symlink, and the ignore rules of its `.dockerignore`.
pub fn assert_sample(ctx: &Context) {
    use std::os::unix::fs::PermissionsExt;
    let root = ctx.root();
    for (path, mode, data) in sample_files() {
        let p = root.join(path);
        assert_eq!(std::fs::read(&p).unwrap(), data, "{path}");
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(m, mode, "{path} mode");
    }
    assert_eq!(
        std::fs::read_link(root.join("link")).unwrap(),
        PathBuf::from("app/main.sh")
    );
    assert_eq!(
        ctx.ignore_file(),
        Some(root.join(".dockerignore").as_path())
    );
    assert!(ctx.is_excluded("secret.key"));
    assert!(!ctx.is_excluded("app/main.sh"));
    assert_eq!(tree(root).len(), 8, "{:?}", tree(root));
}

pub fn options(work: &Path) -> ContextOptions {
    ContextOptions {
        work_dir: work.to_path_buf(),
        ..Default::default()
    }
}

pub fn opts_with(work: &Path, store: &[(&str, &str)]) -> ContextOptions {
    let mut o = options(work);
    o.store_options = store
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    o
}

/// Runs `f` on a fresh single-threaded runtime (for uploads in tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
