//! Layer writing: determinism, PAX headers, compression interop with system tools.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::Path;

use common::{entry, require, run, sha256_file};
use kiln_image::*;

fn sample_entries(dir: &Path) -> Vec<LayerEntry> {
    let src = dir.join("big.bin");
    let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    vec![
        entry("usr", EntryKind::Dir, 0o755),
        entry("usr/bin", EntryKind::Dir, 0o755),
        entry(
            "usr/bin/tool",
            EntryKind::File {
                source: src,
                size: data.len() as u64,
            },
            0o4755,
        ),
        entry(
            "usr/bin/alias",
            EntryKind::Hardlink {
                target: "usr/bin/tool".into(),
            },
            0o4755,
        ),
        entry("etc", EntryKind::Dir, 0o755),
        entry("etc/hello", EntryKind::Bytes(b"hello\n".to_vec()), 0o644),
        entry(
            "etc/link",
            EntryKind::Symlink {
                target: "hello".into(),
            },
            0o777,
        ),
        entry("etc/old", EntryKind::Whiteout, 0o644),
        entry("var", EntryKind::OpaqueDir, 0o755),
        entry("run/fifo", EntryKind::Fifo, 0o600),
    ]
}

fn opts(c: Compression) -> LayerOptions {
    LayerOptions {
        compression: c,
        format: Format::Oci,
        mtime_clamp: None,
    }
}

#[test]
fn same_entries_same_bytes_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("store")).unwrap();
    for c in [
        Compression::Gzip { level: 6 },
        Compression::Zstd { level: 3 },
        Compression::None,
    ] {
        let a = write_layer_threads(&store, sample_entries(tmp.path()), &opts(c), 1).unwrap();
        let b = write_layer_threads(&store, sample_entries(tmp.path()), &opts(c), 3).unwrap();
        let d = write_layer(&store, sample_entries(tmp.path()), &opts(c)).unwrap();
        assert_eq!(a, b, "{c:?}");
        assert_eq!(a, d, "{c:?}");
        assert_eq!(sha256_file(&store.path(&a.digest)), a.digest.hex());
        assert_eq!(
            a.size,
            std::fs::metadata(store.path(&a.digest)).unwrap().len()
        );
    }
    // The diffID does not depend on compression.
    let g = write_layer(
        &store,
        sample_entries(tmp.path()),
        &opts(Compression::Gzip { level: 6 }),
    )
    .unwrap();
    let n = write_layer(&store, sample_entries(tmp.path()), &opts(Compression::None)).unwrap();
    assert_eq!(g.diff_id, n.diff_id);
    assert_eq!(n.digest, n.diff_id);
    assert_eq!(g.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
}

#[test]
fn system_tools_read_what_kiln_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("store")).unwrap();
    let mut entries = sample_entries(tmp.path());
    entries.retain(|e| e.path != "run/fifo");
    let layer = write_layer(
        &store,
        entries.clone(),
        &opts(Compression::Gzip { level: 6 }),
    )
    .unwrap();
    let blob = store.path(&layer.digest);
    let plain = tmp.path().join("layer.tar");
    for tool in ["gzip", "pigz"] {
        require(tool);
        let out = run(tool, &["-dc", blob.to_str().unwrap()]);
        std::fs::write(&plain, out).unwrap();
        assert_eq!(sha256_file(&plain), layer.diff_id.hex(), "{tool}");
    }
    let z = write_layer(&store, entries, &opts(Compression::Zstd { level: 3 })).unwrap();
    assert_eq!(z.diff_id, layer.diff_id);
    require("zstd");
    let out = run("zstd", &["-dc", store.path(&z.digest).to_str().unwrap()]);
    assert_eq!(kiln_image::Digest::sha256(&out), z.diff_id);
    require("tar");
    let listing = String::from_utf8(run(
        "tar",
        &["--numeric-owner", "-tvf", plain.to_str().unwrap()],
    ))
    .unwrap();
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.rsplit_once(' ').map_or(l, |x| x.1))
        .collect();
    assert!(listing.contains("-rwsr-xr-x 0/0"), "{listing}");
    assert!(listing.contains("etc/link -> hello"), "{listing}");
    assert!(
        listing.contains("usr/bin/tool link to usr/bin/alias"),
        "{listing}"
    );
    assert_eq!(names[0], "etc/", "{listing}");
    assert!(listing.contains("etc/.wh.old"));
    assert!(listing.contains("var/.wh..wh..opq"));
    // And the tar crate agrees on every header.
    let mut ar = tar::Archive::new(std::fs::File::open(&plain).unwrap());
    let got: Vec<(String, u32, u64)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.mode().unwrap(),
                h.mtime().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc/",
            "etc/.wh.old",
            "etc/hello",
            "etc/link",
            "usr/",
            "usr/bin/",
            "usr/bin/alias",
            "usr/bin/tool",
            "var/.wh..wh..opq"
        ]
    );
    assert_eq!(got[7].1, 0o4755);
    assert!(got.iter().all(|g| g.2 == 1_700_000_000));
}

#[test]
fn pax_for_long_names_links_and_big_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path()).unwrap();
    let long = format!("{}/{}", "d".repeat(40), "f".repeat(109)); // 150 chars, no valid ustar split
    let target = "t".repeat(200);
    let mut e1 = entry(&long, EntryKind::Bytes(b"x".to_vec()), 0o644);
    e1.uid = 3_000_000;
    e1.gid = 3_000_001;
    e1.xattrs = vec![("security.capability".into(), vec![1, 0, 0, 2])];
    let e2 = entry(
        "sym",
        EntryKind::Symlink {
            target: target.clone(),
        },
        0o777,
    );
    let mut e3 = entry("d", EntryKind::Dir, 0o755);
    e3.mtime = 2_000_000_000;
    let layer = write_layer(
        &store,
        vec![e1, e2, e3],
        &LayerOptions {
            compression: Compression::None,
            format: Format::Docker,
            mtime_clamp: Some(1_000),
        },
    )
    .unwrap();
    assert_eq!(
        layer.media_type,
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    let mut ar = tar::Archive::new(store.open_blob(&layer.digest).unwrap());
    let mut seen = 0;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        assert_eq!(e.header().mtime().unwrap(), 1_000, "clamped");
        if path == long {
            let pax: Vec<(String, Vec<u8>)> = e
                .pax_extensions()
                .unwrap()
                .unwrap()
                .map(|x| {
                    let x = x.unwrap();
                    (x.key().unwrap().to_string(), x.value_bytes().to_vec())
                })
                .collect();
            let keys: Vec<&str> = pax.iter().map(|p| p.0.as_str()).collect();
            assert_eq!(
                keys,
                ["SCHILY.xattr.security.capability", "gid", "path", "uid"]
            );
            assert_eq!(pax[3].1, b"3000000");
            assert_eq!(pax[0].1, vec![1, 0, 0, 2]);
            seen += 1;
        } else if path == "sym" {
            assert_eq!(e.link_name().unwrap().unwrap().to_string_lossy(), target);
            seen += 1;
        }
    }
    assert_eq!(seen, 2);
    require("tar");
    let listing = String::from_utf8(run(
        "tar",
        &[
            "--numeric-owner",
            "-tvf",
            store.path(&layer.digest).to_str().unwrap(),
        ],
    ))
    .unwrap();
    assert!(listing.contains("3000000/3000001"), "{listing}");
    assert!(listing.contains(&long), "{listing}");
    assert!(listing.contains(&format!("sym -> {target}")), "{listing}");
}

#[test]
fn file_that_shrinks_is_an_error_and_leaves_no_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("s")).unwrap();
    let src = tmp.path().join("f");
    std::fs::write(&src, b"abc").unwrap();
    let err = write_layer(
        &store,
        vec![entry(
            "f",
            EntryKind::File {
                source: src.clone(),
                size: 10,
            },
            0o644,
        )],
        &opts(Compression::Gzip { level: 6 }),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "file {} changed while building the layer: expected 10 bytes, read 3",
            src.display()
        )
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("s/blobs/sha256"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn store_put_read_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path()).unwrap();
    let d = store.put_bytes(b"hello").unwrap();
    assert_eq!(
        d.hex(),
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert!(store.contains(&d));
    assert_eq!(store.read_bytes(&d).unwrap(), b"hello");
    {
        use std::io::Write;
        let mut w = store.writer().unwrap();
        w.write_all(b"dropped").unwrap();
    }
    assert_eq!(
        std::fs::read_dir(tmp.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        1
    );
    let mut w = store.writer().unwrap();
    std::io::Write::write_all(&mut w, b"other").unwrap();
    assert!(matches!(
        w.commit_expecting(&d),
        Err(Error::DigestMismatch { .. })
    ));
    // Corruption is detected on read.
    std::fs::write(store.path(&d), b"HELLO").unwrap();
    assert!(matches!(
        store.read_bytes(&d),
        Err(Error::DigestMismatch { .. })
    ));
    let mut buf = String::new();
    store
        .open_blob(&d)
        .unwrap()
        .read_to_string(&mut buf)
        .unwrap();
    assert_eq!(buf, "HELLO");
}

/// A blob overwritten in place (same size) right after it was found whole
/// must be hashed again and reported, however close in time the two are:
/// the verified-marker must never look newer than a later change.
#[test]
fn a_blob_overwritten_right_after_its_check_is_caught() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("store")).unwrap();
    for round in 0..100u32 {
        let data: Vec<u8> = (0..65_536u32).map(|i| (i ^ round) as u8).collect();
        let mut w = store.writer().unwrap();
        w.write_all(&data).unwrap();
        let (d, size) = w.commit().unwrap();
        assert_eq!(store.check(&d, size), Integrity::Intact);
        let mut bad = data.clone();
        bad[1000] ^= 0xff;
        std::fs::write(store.path(&d), &bad).unwrap();
        match store.check(&d, size) {
            Integrity::Corrupt(why) => assert!(why.contains("hashes to"), "{why}"),
            other => panic!("round {round}: overwritten blob found {other:?}"),
        }
        store.remove(&d).unwrap();
    }
}
