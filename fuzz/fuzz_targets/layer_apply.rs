//! Fuzz target: arbitrary bytes as a layer blob (plain, or gzip-compressed
//! when the first byte is odd; zstd and gzip are also detected by their
//! magic bytes) applied onto a fresh root by `kiln_image::apply_layer`, then
//! applied a second time over the result (a layer over an existing tree).
//! Applying must return `Ok` or `Err`, never panic, and must never touch
//! anything outside the root: a canary directory beside it (a file, a
//! subdirectory, their modes, mtimes and contents) and the parent's
//! listing are compared before and after.
//!
//! Run it inside a container (see README.md): a failure of this property
//! would write to the machine running the fuzzer.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_image::{apply_layer, ApplyOptions, BlobStore};
use libfuzzer_sys::fuzz_target;

/// What a path looks like without following symlinks.
type Snapshot = BTreeMap<String, (u32, u32, u32, i64, i64, u64, Vec<u8>)>;

fn snapshot(dir: &Path, out: &mut Snapshot, prefix: &str) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .expect("read canary")
        .map(|e| e.expect("canary entry").file_name())
        .collect();
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let key = format!("{prefix}/{}", name.to_string_lossy());
        let m = fs::symlink_metadata(&p).expect("stat canary entry");
        let body = if m.file_type().is_file() {
            fs::read(&p).expect("read canary file")
        } else if m.file_type().is_symlink() {
            fs::read_link(&p)
                .expect("read canary link")
                .into_os_string()
                .into_encoded_bytes()
        } else {
            Vec::new()
        };
        out.insert(
            key.clone(),
            (
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
                m.size(),
                body,
            ),
        );
        if m.file_type().is_dir() {
            snapshot(&p, out, &key);
        }
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read base")
        .map(|e| {
            e.expect("base entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let blob = if flags & 1 == 1 {
        gzip(body)
    } else {
        body.to_vec()
    };

    let base = tempfile::tempdir().expect("tempdir");
    let canary = base.path().join("canary");
    fs::create_dir_all(canary.join("sub")).expect("canary dir");
    fs::write(canary.join("file"), b"canary").expect("canary file");
    fs::write(canary.join("sub").join("inner"), b"inner").expect("canary file");
    let root = base.path().join("root");
    fs::create_dir(&root).expect("root dir");
    let store = BlobStore::open(&base.path().join("store")).expect("store");
    let digest = store.put_bytes(&blob).expect("put blob");

    let mut before = Snapshot::new();
    snapshot(&canary, &mut before, "");
    let canary_meta = fs::symlink_metadata(&canary).expect("stat canary");
    let names = listing(base.path());

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
    snapshot(&canary, &mut after, "");
    assert_eq!(before, after, "the canary beside the root changed");
    let canary_after = fs::symlink_metadata(&canary).expect("stat canary");
    assert!(canary_after.is_dir(), "the canary is no longer a directory");
    assert_eq!(
        (canary_meta.mode(), canary_meta.uid(), canary_meta.gid()),
        (canary_after.mode(), canary_after.uid(), canary_after.gid()),
        "the canary directory's metadata changed"
    );
    assert_eq!(
        names,
        listing(base.path()),
        "something was made beside the root"
    );
});
