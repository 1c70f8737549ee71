//! Test harness: the registry of kiln-testkit (a real CNCF distribution registry in
//! plain, htpasswd Basic, token auth, TLS or mutual TLS mode, with skopeo flags),
//! and tiny test images built with kiln-image, written as OCI layouts and indexes.

#![allow(dead_code, unused_imports)]

pub mod cloud;
pub mod proxy;

use std::path::Path;

pub use kiln_testkit::net::free_port;
pub use kiln_testkit::registry::{Mode, Registry, PASSWORD, USER};

use kiln_image::{
    store_image, write_layer_threads, write_oci_layout, BlobStore, EntryKind, Format, Image,
    ImageConfig, LayerEntry, LayerOptions, StoredImage,
};

/// A tiny image: `layers` layers, each with one file of `size` deterministic bytes.
pub fn build_image(store: &BlobStore, tag_seed: &str, layers: usize, size: usize) -> StoredImage {
    build_image_for(store, tag_seed, layers, size, "amd64")
}

/// [`build_image`] for linux/`arch`.
pub fn build_image_for(
    store: &BlobStore,
    tag_seed: &str,
    layers: usize,
    size: usize,
    arch: &str,
) -> StoredImage {
    let mut ls = Vec::new();
    for i in 0..layers {
        let mut content = Vec::with_capacity(size);
        let mut x: u32 = 2166136261 ^ (i as u32) ^ tag_seed.len() as u32;
        for b in tag_seed.bytes() {
            x = x.wrapping_mul(16777619) ^ u32::from(b);
        }
        while content.len() < size {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            content.extend_from_slice(&x.to_le_bytes());
        }
        content.truncate(size);
        let entries = vec![LayerEntry {
            path: format!("data/{tag_seed}-{i}.bin"),
            kind: EntryKind::Bytes(content),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: Vec::new(),
        }];
        ls.push(write_layer_threads(store, entries, &LayerOptions::default(), 1).expect("layer"));
    }
    let config = ImageConfig {
        architecture: arch.into(),
        os: "linux".into(),
        ..ImageConfig::default()
    };
    store_image(store, &Image { config, layers: ls }, Format::Oci).expect("store image")
}

/// Writes `image` as an OCI layout in `dir` tagged `tag`.
pub fn layout(store: &BlobStore, image: &StoredImage, dir: &Path, tag: &str) {
    write_oci_layout(store, dir, &[(image.clone(), Some(tag.to_string()))]).expect("layout");
}

/// Writes an OCI layout at `dir` whose ref `tag` is an image index over `images`, and
/// returns the index digest.
pub fn index_layout(
    store: &BlobStore,
    images: &[StoredImage],
    dir: &Path,
    tag: &str,
) -> kiln_image::Digest {
    let entries: Vec<(StoredImage, Option<String>)> =
        images.iter().map(|i| (i.clone(), None)).collect();
    write_oci_layout(store, dir, &entries).expect("layout");
    let index = kiln_image::Index {
        manifests: images.iter().map(|i| i.manifest.clone()).collect(),
        ..kiln_image::Index::default()
    };
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = store.put_bytes(&bytes).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(digest.hex()), &bytes).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": kiln_image::MT_OCI_INDEX,
            "digest": digest.to_string(),
            "size": bytes.len(),
            "annotations": {kiln_image::ANNOTATION_REF_NAME: tag},
        }],
    });
    std::fs::write(dir.join("index.json"), top.to_string()).unwrap();
    digest
}
