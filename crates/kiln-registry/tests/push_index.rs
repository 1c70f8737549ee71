//! Pushing a multi-platform image (each platform's manifest, then the index under the
//! tag) to a real CNCF distribution registry, read back by skopeo and by kiln's pull.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{build_image_for, Mode, Registry};
use kiln_image::{BlobStore, Descriptor, Digest, Index, Platform, MT_OCI_INDEX};
use kiln_registry::{NoProgress, Reference, RegistryClient, RegistryOptions};

#[test]
fn index_is_pushed_after_every_platform_manifest() {
    let reg = Registry::start(Mode::Plain);
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("s")).unwrap();
    let amd = build_image_for(&store, "multi-amd", 2, 5_000, "amd64");
    let arm = build_image_for(&store, "multi-arm", 2, 5_000, "arm64");
    let index = Index {
        manifests: vec![amd.manifest.clone(), arm.manifest.clone()],
        ..Index::default()
    };
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = store.put_bytes(&bytes).unwrap();
    let desc = Descriptor::new(MT_OCI_INDEX, digest.clone(), bytes.len() as u64);
    let client = RegistryClient::new(RegistryOptions {
        docker_config: Some(tmp.path().join("none.json")),
        certs_dirs: Vec::new(),
        ..RegistryOptions::default()
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dest: Reference = format!("{}/multi/app:v1", reg.host).parse().unwrap();

    // The images must be the ones the index lists, in order.
    let e = rt
        .block_on(client.push_index(
            &store,
            &desc,
            &[arm.clone(), amd.clone()],
            &dest,
            &NoProgress,
        ))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("index {digest} does not list the images given to push with it")
    );

    let pushed = rt
        .block_on(client.push_index(
            &store,
            &desc,
            &[amd.clone(), arm.clone()],
            &dest,
            &NoProgress,
        ))
        .unwrap();
    assert_eq!(pushed, digest);
    // The tag names the index, byte for byte.
    assert_eq!(reg.skopeo_raw_manifest("multi/app:v1"), bytes);
    // Each platform manifest is there by digest.
    for img in [&amd, &arm] {
        let raw = reg.skopeo_raw_manifest(&format!("multi/app@{}", img.manifest.digest));
        assert_eq!(Digest::sha256(&raw), img.manifest.digest);
    }
    // kiln's own pull selects each platform from it.
    let back = BlobStore::open(&tmp.path().join("back")).unwrap();
    for (img, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        let got = rt
            .block_on(client.pull(
                &back,
                &dest,
                &Platform::new("linux", arch, None),
                &NoProgress,
            ))
            .unwrap();
        assert_eq!(got.manifest.digest, img.manifest.digest);
    }
}
