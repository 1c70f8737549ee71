//! Image outputs and inputs, checked with skopeo and umoci where installed.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{entry, require, run};
use kiln_image::*;
use kiln_testkit::tree;

fn build(store: &BlobStore, format: Format) -> (Image, StoredImage) {
    let o = LayerOptions {
        compression: Compression::Gzip { level: 6 },
        format,
        mtime_clamp: None,
    };
    let mut owned = entry("home/app/data", EntryKind::Bytes(b"data".to_vec()), 0o640);
    owned.uid = 1000;
    owned.gid = 1000;
    let l1 = write_layer(
        store,
        vec![
            entry("bin", EntryKind::Dir, 0o755),
            entry(
                "bin/hello",
                EntryKind::Bytes(b"#!/bin/sh\necho hi\n".to_vec()),
                0o755,
            ),
            entry("etc", EntryKind::Dir, 0o755),
            entry("etc/gone", EntryKind::Bytes(b"bye".to_vec()), 0o644),
            entry("home", EntryKind::Dir, 0o755),
            entry("home/app", EntryKind::Dir, 0o755),
            owned,
        ],
        &o,
    )
    .unwrap();
    let l2 = write_layer(
        store,
        vec![
            entry("etc/gone", EntryKind::Whiteout, 0o644),
            entry("etc/motd", EntryKind::Bytes(b"welcome\n".to_vec()), 0o644),
            entry(
                "bin/hi",
                EntryKind::Symlink {
                    target: "hello".into(),
                },
                0o777,
            ),
        ],
        &o,
    )
    .unwrap();
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        created: Some("2024-01-01T00:00:00Z".into()),
        ..Default::default()
    };
    config.config.env = vec!["PATH=/bin".into()];
    config.config.cmd = Some(vec!["/bin/hello".into()]);
    config
        .config
        .labels
        .insert("org.example".into(), "yes".into());
    config.history = vec![
        History {
            created_by: Some("COPY . /".into()),
            ..Default::default()
        },
        History {
            created_by: Some("RUN x".into()),
            ..Default::default()
        },
    ];
    let image = Image {
        config,
        layers: vec![l1, l2],
    };
    let stored = store_image(store, &image, format).unwrap();
    (image, stored)
}

fn inspect(arg: &str) -> serde_json::Value {
    serde_json::from_slice(&run("skopeo", &["inspect", arg])).unwrap()
}

#[test]
fn store_and_load_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path()).unwrap();
    for format in [Format::Oci, Format::Docker] {
        let (image, stored) = build(&store, format);
        let loaded = load_image(&store, &stored.manifest.digest).unwrap();
        assert_eq!(
            loaded.layers,
            image
                .layers
                .iter()
                .map(|l| Layer {
                    media_type: format.convert_layer_media_type(&l.media_type),
                    ..l.clone()
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(loaded.config.config, image.config.config);
        let again = store_image(&store, &loaded, format).unwrap();
        assert_eq!(again, stored, "storing is deterministic");
        let manifest = store.read_bytes(&stored.manifest.digest).unwrap();
        assert_ne!(manifest.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(v["mediaType"], format.manifest_media_type());
        assert_eq!(v["config"]["mediaType"], format.config_media_type());
        assert_eq!(
            stored.manifest.platform,
            Some(Platform::new("linux", "amd64", None))
        );
    }
}

#[test]
fn oci_layout_and_archive_with_skopeo_and_umoci() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("store")).unwrap();
    let (image, stored) = build(&store, Format::Oci);
    let layout = tmp.path().join("layout");
    write_oci_layout(&store, &layout, &[(stored.clone(), Some("latest".into()))]).unwrap();
    // Writing again with another name adds, with the same name replaces.
    write_oci_layout(&store, &layout, &[(stored.clone(), Some("v1".into()))]).unwrap();
    write_oci_layout(&store, &layout, &[(stored.clone(), Some("latest".into()))]).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["v1", "latest"]);
    assert_eq!(
        fs::read_to_string(layout.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );

    let archive = tmp.path().join("img.tar");
    write_oci_archive(&store, &archive, &[(stored.clone(), Some("latest".into()))]).unwrap();
    let first = fs::read(&archive).unwrap();
    write_oci_archive(&store, &archive, &[(stored.clone(), Some("latest".into()))]).unwrap();
    assert_eq!(
        first,
        fs::read(&archive).unwrap(),
        "archive is deterministic"
    );

    require("skopeo");
    for arg in [
        format!("oci:{}:latest", layout.display()),
        format!("oci-archive:{}:latest", archive.display()),
    ] {
        let v = inspect(&arg);
        assert_eq!(v["Digest"], stored.manifest.digest.to_string(), "{arg}");
        let layers: Vec<String> = image.layers.iter().map(|l| l.digest.to_string()).collect();
        assert_eq!(v["Layers"], serde_json::json!(layers), "{arg}");
        assert_eq!(v["Env"], serde_json::json!(["PATH=/bin"]), "{arg}");
        assert_eq!(v["Labels"]["org.example"], "yes", "{arg}");
    }
    require("umoci");
    let bundle = tmp.path().join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:latest", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read(rootfs.join("bin/hello")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(
        fs::metadata(rootfs.join("bin/hello"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(fs::read(rootfs.join("etc/motd")).unwrap(), b"welcome\n");
    assert!(!rootfs.join("etc/gone").exists());
    assert_eq!(
        fs::read_link(rootfs.join("bin/hi")).unwrap().to_str(),
        Some("hello")
    );
    // Compare with kiln's own extraction.
    let ours = tmp.path().join("ours");
    write_rootfs_dir(&store, &image, &ours).unwrap();
    assert_eq!(tree::contents(&ours), tree::contents(&rootfs));
}

#[test]
fn docker_archive_with_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("store")).unwrap();
    let (image, stored) = build(&store, Format::Docker);
    let archive = tmp.path().join("docker.tar");
    write_docker_archive(&store, &archive, &stored, &["example.com/app:1".into()]).unwrap();
    let mut ar = tar::Archive::new(fs::File::open(&archive).unwrap());
    let mut manifest = None;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("manifest.json") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            manifest = Some(s);
        }
    }
    let cfg = stored.config_digest.hex();
    let l: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("\"{}/layer.tar\"", l.diff_id.hex()))
        .collect();
    assert_eq!(
        manifest.unwrap(),
        format!(
            r#"[{{"Config":"{cfg}.json","RepoTags":["example.com/app:1"],"Layers":[{}]}}]"#,
            l.join(",")
        )
    );
    require("skopeo");
    let v = inspect(&format!("docker-archive:{}", archive.display()));
    let diffs: Vec<String> = image.layers.iter().map(|l| l.diff_id.to_string()).collect();
    assert_eq!(v["Layers"], serde_json::json!(diffs));
    assert_eq!(v["Env"], serde_json::json!(["PATH=/bin"]));
}

#[test]
fn rootfs_tar_keeps_owners_and_applies_whiteouts() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("store")).unwrap();
    let (image, _) = build(&store, Format::Oci);
    let out = tmp.path().join("rootfs.tar");
    write_rootfs_tar(&store, &image, &out).unwrap();
    let first = fs::read(&out).unwrap();
    write_rootfs_tar(&store, &image, &out).unwrap();
    assert_eq!(first, fs::read(&out).unwrap(), "deterministic");
    let mut ar = tar::Archive::new(&first[..]);
    let got: Vec<(String, u64, u32)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().uid().unwrap(),
                e.header().mode().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin/",
            "bin/hello",
            "bin/hi",
            "etc/",
            "etc/motd",
            "home/",
            "home/app/",
            "home/app/data"
        ]
    );
    assert_eq!(got[7], ("home/app/data".into(), 1000, 0o640));
    // Nothing left beside the output.
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn import_from_layout_and_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let src = BlobStore::open(&tmp.path().join("src")).unwrap();
    let (_, stored) = build(&src, Format::Oci);
    let layout = tmp.path().join("layout");
    write_oci_layout(&src, &layout, &[(stored.clone(), Some("latest".into()))]).unwrap();
    let archive = tmp.path().join("a.tar");
    write_oci_archive(&src, &archive, &[(stored.clone(), Some("latest".into()))]).unwrap();
    let linux = Platform::new("linux", "amd64", None);

    let dst = BlobStore::open(&tmp.path().join("dst")).unwrap();
    let got = import_oci_layout(&dst, &layout, Some("latest"), &linux).unwrap();
    assert_eq!(got, stored);
    let by_digest = import_oci_layout(
        &dst,
        &layout,
        Some(&format!("@{}", stored.manifest.digest)),
        &linux,
    )
    .unwrap();
    assert_eq!(by_digest.manifest.digest, stored.manifest.digest);
    assert_eq!(
        import_oci_layout(&dst, &layout, None, &linux).unwrap(),
        stored
    );
    let loaded = load_image(&dst, &got.manifest.digest).unwrap();
    for l in &loaded.layers {
        assert!(dst.contains(&l.digest));
    }
    let err = import_oci_layout(&dst, &layout, Some("nope"), &linux).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no image \"nope\" in OCI layout {}", layout.display())
    );
    let err =
        import_oci_layout(&dst, &layout, None, &Platform::new("linux", "arm64", None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no image for platform linux/arm64 in OCI layout {}",
            layout.display()
        )
    );

    let dst2 = BlobStore::open(&tmp.path().join("dst2")).unwrap();
    assert_eq!(
        import_oci_archive(&dst2, &archive, Some("latest"), &linux).unwrap(),
        stored
    );

    // A corrupted blob in the layout is refused.
    let layer = &load_image(&src, &stored.manifest.digest).unwrap().layers[0];
    fs::write(
        layout.join("blobs/sha256").join(layer.digest.hex()),
        b"corrupt",
    )
    .unwrap();
    let dst3 = BlobStore::open(&tmp.path().join("dst3")).unwrap();
    assert!(matches!(
        import_oci_layout(&dst3, &layout, Some("latest"), &linux),
        Err(Error::DigestMismatch { .. })
    ));
}
