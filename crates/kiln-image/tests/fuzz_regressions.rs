//! Replays the inputs kept in `tests/fuzz_regressions/` the way the
//! `layer_apply` fuzz target (fuzz/fuzz_targets/layer_apply.rs) runs them:
//! the first byte chooses gzip (bit 0), `same_owner` (bit 1) and protected
//! paths (bit 2), the rest is the layer blob. Applying it onto a fresh root
//! (twice, when the first succeeds) must not panic and must leave the
//! canary directory beside the root and the root's parent as they were.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_image::{apply_layer, ApplyOptions, BlobStore};

/// Inputs the fuzz target's seeds found failing (issue 14, finding 1),
/// replayed by their own test below.
const PENDING: &[&str] = &[
    "symlink-replaces-dir-6777-gzip",
    "symlink-replaces-dir-6777-same-owner",
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions")
}

type Snapshot = BTreeMap<String, (u32, u32, u32, i64, u64, Vec<u8>)>;

fn snapshot(dir: &Path, out: &mut Snapshot, prefix: &str) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    entries.sort();
    for name in entries {
        let p = dir.join(&name);
        let key = format!("{prefix}/{}", name.to_string_lossy());
        let m = fs::symlink_metadata(&p).unwrap();
        let body = if m.is_file() {
            fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        out.insert(
            key.clone(),
            (m.mode(), m.uid(), m.gid(), m.mtime(), m.size(), body),
        );
        if m.is_dir() {
            snapshot(&p, out, &key);
        }
    }
}

/// Replays one kept input; `Err` says what changed outside the root.
fn replay(name: &str) -> Result<(), String> {
    let data = fs::read(dir().join(name)).unwrap();
    let Some((&flags, body)) = data.split_first() else {
        return Ok(());
    };
    let blob = if flags & 1 == 1 {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(body).unwrap();
        enc.finish().unwrap()
    } else {
        body.to_vec()
    };
    let base = tempfile::tempdir().unwrap();
    let canary = base.path().join("canary");
    fs::create_dir_all(canary.join("sub")).unwrap();
    fs::write(canary.join("file"), b"canary").unwrap();
    fs::write(canary.join("sub/inner"), b"inner").unwrap();
    let root = base.path().join("root");
    fs::create_dir(&root).unwrap();
    let store = BlobStore::open(&base.path().join("store")).unwrap();
    let digest = store.put_bytes(&blob).unwrap();

    // The canary directory itself is the first entry of the snapshot.
    let mut before = Snapshot::new();
    snapshot(base.path(), &mut before, "");
    before.retain(|k, _| k.starts_with("/canary"));
    let opts = ApplyOptions {
        same_owner: flags & 2 == 2,
        protected: if flags & 4 == 4 {
            vec!["proc".into(), "kiln".into()]
        } else {
            Vec::new()
        },
    };
    if apply_layer(&store, &digest, &root, &opts).is_ok() {
        let _ = apply_layer(&store, &digest, &root, &opts);
    }
    let mut after = Snapshot::new();
    snapshot(base.path(), &mut after, "");
    let siblings: Vec<String> = after
        .keys()
        .filter(|k| k.matches('/').count() == 1)
        .cloned()
        .collect();
    after.retain(|k, _| k.starts_with("/canary"));
    if siblings != ["/canary", "/root", "/store"] {
        return Err(format!("{name}: made beside the root: {siblings:?}"));
    }
    if before != after {
        let changed: std::collections::BTreeSet<&String> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .collect();
        return Err(format!("{name}: changed outside the root: {changed:?}"));
    }
    Ok(())
}

#[test]
fn every_kept_input_stays_inside_the_root() {
    let mut names: Vec<String> = fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no kept inputs in {}", dir().display());
    let failures: Vec<String> = names
        .iter()
        .filter(|n| !PENDING.contains(&n.as_str()))
        .filter_map(|n| replay(n).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Found by the fuzz target's first seeds (issue 14, finding 1): a
/// directory entry `d/` with mode 6777, then a symlink `d -> ../canary`;
/// the directory's deferred mode is applied through the symlink, so the
/// canary beside the root became 6777. Held by the root resolver: deferred
/// directory metadata is dropped when the path is replaced, and never
/// follows a symlink.
#[test]
fn deferred_dir_mode_does_not_follow_a_symlink_that_replaced_the_dir() {
    let failures: Vec<String> = PENDING.iter().filter_map(|n| replay(n).err()).collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
