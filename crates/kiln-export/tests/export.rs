//! The exporter on a real blob store: index assembly, the result files'
//! contents, which outputs take a multi-platform image, name checks, and whole
//! exports to OCI layouts, OCI archives, per-platform directories and docker
//! archives (no registry: nothing is pushed).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use kiln_export::files::{metadata, name_tags_with_digest, names_with_digest};
use kiln_export::index::{index_over, merge_into_top, store_index};
use kiln_export::outputs::{describe, index_target, platform_dir, IndexTarget};
use kiln_export::{
    ExportEnv, ExportError, ExportPlan, ExportReport, Exporter, Output, PlatformResult, ResultFiles,
};
use kiln_image::{
    BlobStore, Descriptor, Digest, EntryKind, Format, Image, ImageConfig, Index, LayerEntry,
    LayerOptions, Platform, ANNOTATION_REF_NAME, MT_DOCKER_MANIFEST_LIST, MT_OCI_INDEX,
};

fn store() -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlobStore::open(&dir.path().join("store")).expect("store");
    (dir, store)
}

/// A one-layer image for `platform`, holding `/hello` with `text`.
fn image(store: &BlobStore, platform: &Platform, text: &str, format: Format) -> PlatformResult {
    let layer = kiln_image::write_layer(
        store,
        vec![LayerEntry {
            path: "hello".into(),
            kind: EntryKind::Bytes(text.as_bytes().to_vec()),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }],
        &LayerOptions::default(),
    )
    .expect("layer");
    let image = Image {
        config: ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            ..ImageConfig::default()
        },
        layers: vec![layer],
    };
    let stored = kiln_image::store_image(store, &image, format).expect("store image");
    PlatformResult { image, stored }
}

fn amd64() -> Platform {
    Platform::new("linux", "amd64", None)
}

fn arm64() -> Platform {
    Platform::new("linux", "arm64", Some("v8"))
}

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64))
        .parse()
        .expect("digest")
}

fn plan(outputs: Vec<Output>, files: ResultFiles) -> ExportPlan {
    ExportPlan {
        tags: vec!["localhost:5000/app:v1".into()],
        push_to: Vec::new(),
        outputs,
        format: Format::Oci,
        files,
    }
}

/// Runs an export with a registry client that is never used (nothing is pushed).
fn run(
    exporter: &Exporter,
    store: &BlobStore,
    work: &Path,
    built: Vec<PlatformResult>,
) -> Result<ExportReport, ExportError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let registry = kiln_registry::RegistryClient::new(kiln_registry::RegistryOptions::default())
        .expect("registry client");
    let progress =
        kiln_build::progress::StderrProgress::new(kiln_build::progress::ProgressMode::Quiet);
    std::fs::create_dir_all(work).expect("work");
    exporter.export(
        &ExportEnv {
            store,
            registry: &registry,
            runtime: runtime.handle(),
            progress: &progress,
            work,
        },
        built,
    )
}

fn read_index(path: &Path) -> Index {
    serde_json::from_slice(&std::fs::read(path).expect("read index")).expect("parse index")
}

#[test]
fn the_index_lists_every_platform_in_order_with_the_format_media_type() {
    let (_dir, store) = store();
    let a = image(&store, &amd64(), "a", Format::Oci);
    let b = image(&store, &arm64(), "b", Format::Oci);
    let images = vec![a.stored.clone(), b.stored.clone()];

    let oci = index_over(&images, Format::Oci);
    assert_eq!(oci.schema_version, 2);
    assert_eq!(oci.media_type.as_deref(), Some(MT_OCI_INDEX));
    assert_eq!(
        oci.manifests,
        vec![a.stored.manifest.clone(), b.stored.manifest.clone()]
    );
    let platforms: Vec<_> = oci.manifests.iter().map(|m| m.platform.clone()).collect();
    assert_eq!(platforms, vec![Some(amd64()), Some(arm64())]);
    assert!(oci.annotations.is_empty());

    let docker = index_over(&images, Format::Docker);
    assert_eq!(docker.media_type.as_deref(), Some(MT_DOCKER_MANIFEST_LIST));

    // Stored: the blob is the serialised index, named and sized by its bytes.
    let desc = store_index(&store, &images, Format::Docker).expect("store index");
    let bytes = store.read_bytes(&desc.digest).expect("index blob");
    assert_eq!(desc.media_type, MT_DOCKER_MANIFEST_LIST);
    assert_eq!(desc.size, bytes.len() as u64);
    assert_eq!(desc.digest, Digest::sha256(&bytes));
    let back: Index = serde_json::from_slice(&bytes).expect("parse");
    assert_eq!(back, docker);
}

#[test]
fn the_index_replaces_its_platforms_and_its_name_in_a_layout() {
    let named = |c: char, name: &str| {
        let mut d = Descriptor::new(MT_OCI_INDEX, digest(c), 10);
        d.annotations
            .insert(ANNOTATION_REF_NAME.to_string(), name.to_string());
        d
    };
    let unnamed = |c: char| Descriptor::new(MT_OCI_INDEX, digest(c), 10);
    let mut top = Index {
        manifests: vec![
            named('1', "keep"),
            unnamed('a'),
            named('2', "v1"),
            unnamed('9'),
            unnamed('b'),
            unnamed('f'),
        ],
        ..Index::default()
    };
    let index = unnamed('f');
    merge_into_top(&mut top, &index, &[&digest('a'), &digest('b')], Some("v1"));
    assert_eq!(
        top.manifests,
        vec![named('1', "keep"), unnamed('9'), named('f', "v1")]
    );

    // Without a name the index is added unnamed; named entries stay.
    let mut top = Index {
        manifests: vec![named('2', "v1"), unnamed('a')],
        ..Index::default()
    };
    merge_into_top(&mut top, &index, &[&digest('a')], None);
    assert_eq!(top.manifests, vec![named('2', "v1"), unnamed('f')]);
}

#[test]
fn digest_files_list_each_destination() {
    let d = digest('c');
    let dests = vec![
        "localhost:5000/a/b:v1".to_string(),
        "reg.io/x".to_string(),
        format!("reg.io/y:2@{}", digest('e')),
    ];
    assert_eq!(
        names_with_digest(&dests, &d),
        format!("localhost:5000/a/b@{d}\nreg.io/x@{d}\nreg.io/y@{d}\n")
    );
    assert_eq!(
        name_tags_with_digest(&dests, &d),
        format!("localhost:5000/a/b:v1@{d}\nreg.io/x:latest@{d}\nreg.io/y:2@{d}\n")
    );
    assert_eq!(names_with_digest(&[], &d), "");
    assert_eq!(name_tags_with_digest(&[], &d), "");
}

#[test]
fn metadata_names_digest_descriptor_config_and_pushes() {
    let descriptor = Descriptor::new(MT_OCI_INDEX, digest('d'), 42);
    let single = ExportReport {
        descriptor: descriptor.clone(),
        config: Some(digest('c')),
        pushed: vec![
            ("reg.io/x:1".into(), digest('d')),
            ("reg.io/y:2".into(), digest('d')),
        ],
    };
    let meta = metadata(&single, &["reg.io/x:1".into(), "reg.io/y:2".into()]);
    assert_eq!(meta["containerimage.digest"], digest('d').to_string());
    assert_eq!(
        meta["containerimage.descriptor"],
        serde_json::to_value(&descriptor).expect("descriptor")
    );
    assert_eq!(
        meta["containerimage.config.digest"],
        digest('c').to_string()
    );
    assert_eq!(meta["image.name"], "reg.io/x:1,reg.io/y:2");
    assert_eq!(
        meta["pushed"],
        serde_json::json!([
            format!("reg.io/x:1@{}", digest('d')),
            format!("reg.io/y:2@{}", digest('d'))
        ])
    );

    let index = ExportReport {
        descriptor,
        config: None,
        pushed: Vec::new(),
    };
    let meta = metadata(&index, &[]);
    let keys: Vec<&String> = meta.as_object().expect("object").keys().collect();
    assert!(
        !keys.iter().any(|k| *k == "containerimage.config.digest"),
        "{keys:?}"
    );
    assert_eq!(meta["image.name"], "");
    assert_eq!(meta["pushed"], serde_json::json!([]));
}

#[test]
fn outputs_that_hold_one_image_refuse_an_index() {
    let docker = Output::Docker {
        dest: "d.tar".into(),
    };
    let tar = Output::Tar {
        dest: "fs.tar".into(),
    };
    for (o, name) in [
        (&docker, "docker archive d.tar"),
        (&tar, "filesystem tar fs.tar"),
    ] {
        assert_eq!(describe(o), name);
        let err = index_target(o).err().map(|e| e.to_string());
        assert_eq!(
            err,
            Some(format!(
                "{name} holds one image: build one --platform for it, or use type=oci / type=local"
            ))
        );
    }
    let layout = Output::Oci {
        dest: "out".into(),
        archive: false,
    };
    let archive = Output::Oci {
        dest: "img.tar".into(),
        archive: true,
    };
    let local = Output::Local {
        dest: "root".into(),
    };
    let registry = Output::Image {
        names: vec!["a/b:1".into()],
        push: true,
    };
    assert_eq!(
        index_target(&layout).ok(),
        Some(IndexTarget::Layout(Path::new("out")))
    );
    assert_eq!(
        index_target(&archive).ok(),
        Some(IndexTarget::Archive(Path::new("img.tar")))
    );
    assert_eq!(
        index_target(&local).ok(),
        Some(IndexTarget::PlatformDirs(Path::new("root")))
    );
    assert_eq!(index_target(&registry).ok(), Some(IndexTarget::Registry));
    assert_eq!(
        platform_dir(Path::new("root"), &arm64()),
        PathBuf::from("root/linux_arm64_v8")
    );
    assert_eq!(
        platform_dir(Path::new("root"), &amd64()),
        PathBuf::from("root/linux_amd64")
    );
}

#[test]
fn every_name_is_checked_when_the_exporter_is_made() {
    let with = |tags: &[&str], push: &[&str], names: &[&str]| {
        Exporter::new(ExportPlan {
            tags: tags.iter().map(|s| s.to_string()).collect(),
            push_to: push.iter().map(|s| s.to_string()).collect(),
            outputs: vec![Output::Image {
                names: names.iter().map(|s| s.to_string()).collect(),
                push: false,
            }],
            format: Format::Oci,
            files: ResultFiles::default(),
        })
        .err()
        .map(|e| e.to_string())
    };
    assert_eq!(with(&["reg.io/a:1"], &["reg.io/b"], &["reg.io/c:2"]), None);
    assert_eq!(
        with(&["Bad:tag"], &["reg.io/b"], &[]),
        Some("invalid image name \"Bad:tag\"".into())
    );
    assert_eq!(
        with(&["reg.io/a"], &["reg.io/b:"], &[]),
        Some("invalid image name \"reg.io/b:\"".into())
    );
    assert_eq!(
        with(&["reg.io/a"], &[], &["ok/name", "has space"]),
        Some("invalid image name \"has space\"".into())
    );
    // Tags are checked before destinations, destinations before output names.
    assert_eq!(
        with(&["A"], &["B"], &["C"]),
        Some("invalid image name \"A\"".into())
    );
}

#[test]
fn a_multi_platform_export_writes_the_index_everywhere_and_the_result_files() {
    let (dir, store) = store();
    let built = vec![
        image(&store, &amd64(), "amd64", Format::Oci),
        image(&store, &arm64(), "arm64", Format::Oci),
    ];
    let manifests: Vec<Digest> = built
        .iter()
        .map(|b| b.stored.manifest.digest.clone())
        .collect();
    let out = dir.path().join("out");
    let files = ResultFiles {
        digest: Some(dir.path().join("digest")),
        metadata: Some(dir.path().join("meta.json")),
        image_name_with_digest: Some(dir.path().join("names")),
        image_name_tag_with_digest: Some(dir.path().join("name-tags")),
    };
    let exporter = Exporter::new(plan(
        vec![
            Output::Oci {
                dest: out.join("layout"),
                archive: false,
            },
            Output::Oci {
                dest: out.join("img.tar"),
                archive: true,
            },
            Output::Local {
                dest: out.join("root"),
            },
        ],
        files,
    ))
    .expect("exporter");
    let report = run(&exporter, &store, &dir.path().join("work"), built).expect("export");

    assert_eq!(report.descriptor.media_type, MT_OCI_INDEX);
    assert_eq!(report.config, None);
    assert!(report.pushed.is_empty());
    let index: Index = serde_json::from_slice(&store.read_bytes(report.digest()).expect("index"))
        .expect("parse index");
    let listed: Vec<Digest> = index.manifests.iter().map(|m| m.digest.clone()).collect();
    assert_eq!(listed, manifests);

    // The layout names the index `v1` and lists nothing else.
    let top = read_index(&out.join("layout/index.json"));
    assert_eq!(top.manifests.len(), 1);
    assert_eq!(&top.manifests[0].digest, report.digest());
    assert_eq!(top.manifests[0].ref_name(), Some("v1"));
    for d in manifests.iter().chain([report.digest()]) {
        assert!(
            out.join("layout/blobs/sha256").join(d.hex()).is_file(),
            "blob {d} in the layout"
        );
    }

    // The archive holds the same layout.
    let mut names = Vec::new();
    let mut archived_top = None;
    let file = std::fs::File::open(out.join("img.tar")).expect("archive");
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        if path == "index.json" {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut text).expect("read");
            archived_top = Some(serde_json::from_slice::<Index>(&text).expect("parse"));
        }
        names.push(path);
    }
    assert_eq!(
        archived_top.map(|t| t.manifests),
        Some(top.manifests.clone())
    );
    assert!(
        names.contains(&format!("blobs/sha256/{}", report.digest().hex())),
        "{names:?}"
    );
    assert!(names.contains(&"oci-layout".to_string()), "{names:?}");
    for d in &manifests {
        assert!(
            names.contains(&format!("blobs/sha256/{}", d.hex())),
            "{names:?}"
        );
    }

    // type=local: one directory per platform.
    let amd = std::fs::read_to_string(out.join("root/linux_amd64/hello")).expect("amd64 file");
    let arm = std::fs::read_to_string(out.join("root/linux_arm64_v8/hello")).expect("arm64 file");
    assert_eq!((amd.as_str(), arm.as_str()), ("amd64", "arm64"));

    // Result files: the index digest; no destinations, so empty name files.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("digest")).expect("digest file"),
        report.digest().to_string()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("names")).expect("names"),
        ""
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("name-tags")).expect("name tags"),
        ""
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("meta.json")).expect("meta"))
            .expect("parse meta");
    assert_eq!(meta, metadata(&report, &["localhost:5000/app:v1".into()]));
    assert!(!dir.path().join("digest.kiln-tmp").exists());
}

#[test]
fn a_single_platform_export_reports_the_manifest_and_config() {
    let (dir, store) = store();
    let one = image(&store, &amd64(), "amd64", Format::Docker);
    let stored = one.stored.clone();
    let exporter = Exporter::new(ExportPlan {
        format: Format::Docker,
        ..plan(
            vec![Output::Docker {
                dest: dir.path().join("d.tar"),
            }],
            ResultFiles {
                digest: Some(dir.path().join("digest")),
                ..ResultFiles::default()
            },
        )
    })
    .expect("exporter");
    let report = run(&exporter, &store, &dir.path().join("work"), vec![one]).expect("export");
    assert_eq!(report.descriptor, stored.manifest);
    assert_eq!(report.config, Some(stored.config_digest));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("digest")).expect("digest file"),
        stored.manifest.digest.to_string()
    );
    assert!(dir.path().join("d.tar").is_file());
}

#[test]
fn a_multi_platform_docker_archive_is_refused_before_result_files() {
    let (dir, store) = store();
    let built = vec![
        image(&store, &amd64(), "amd64", Format::Oci),
        image(&store, &arm64(), "arm64", Format::Oci),
    ];
    let dest = dir.path().join("d.tar");
    let exporter = Exporter::new(plan(
        vec![Output::Docker { dest: dest.clone() }],
        ResultFiles {
            digest: Some(dir.path().join("digest")),
            ..ResultFiles::default()
        },
    ))
    .expect("exporter");
    let err = run(&exporter, &store, &dir.path().join("work"), built)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err,
        Some(format!(
            "docker archive {} holds one image: build one --platform for it, or use type=oci / type=local",
            dest.display()
        ))
    );
    assert!(!dest.exists());
    assert!(!dir.path().join("digest").exists());

    let nothing = run(&exporter, &store, &dir.path().join("work"), Vec::new())
        .err()
        .map(|e| e.to_string());
    assert_eq!(nothing.as_deref(), Some("no image was built"));
}
