//! Fuzz target: registry and OCI layout JSON — manifests, indexes, image
//! configs, descriptors and digests — and the platform selection on them.
//!
//! The input is up to ten documents separated by NUL bytes. The first byte
//! picks the wanted platform and the `Content-Type` a registry announced.
//! Document 0 goes through the registry's pull steps
//! (`kiln_registry::fuzzing::classify`, then index parsing and
//! `select_platform`, or manifest parsing); every document is parsed as
//! each JSON type, and whatever parses must serialise and parse back equal.
//! Then the documents become an OCI layout (document 0 is `index.json`,
//! the others are blobs) imported with `kiln_image::import_oci_layout`. So
//! that documents can refer to each other, `@N` in a document is replaced
//! by the digest of document N and `#N` by its size (N > the document's
//! own number: digests cannot form cycles). Nothing may panic.
#![no_main]

use std::fs;

use kiln_image::{
    import_oci_layout, BlobStore, Descriptor, Digest, ImageConfig, Index, Manifest, Platform,
};
use kiln_registry::fuzzing::{classify, select_platform};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 8] = [
    None,
    Some("application/json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("text/plain"),
];

fn platform(b: u8) -> Platform {
    match b % 5 {
        0 => Platform::new("linux", "amd64", None),
        1 => Platform::new("linux", "arm64", Some("v8")),
        2 => Platform::new("linux", "arm", Some("v7")),
        3 => Platform::new("windows", "amd64", None),
        _ => Platform::new("linux", "arm64", None),
    }
}

/// Parses `bytes` as `T`; if that works, the value must survive a round trip.
fn round_trip<T>(bytes: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = serde_json::from_slice::<T>(bytes) {
        let out = serde_json::to_vec(&v).expect("a parsed value serialises");
        let back: T = serde_json::from_slice(&out).expect("serialised JSON parses again");
        assert_eq!(v, back, "round trip changed the value");
    }
}

/// Replaces `@N` / `#N` (N in `from..`) by the digest / size of document N.
fn link(doc: &[u8], from: usize, done: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(doc.len());
    let mut i = 0;
    while i < doc.len() {
        let c = doc[i];
        if (c == b'@' || c == b'#') && i + 1 < doc.len() && doc[i + 1].is_ascii_digit() {
            let n = usize::from(doc[i + 1] - b'0');
            if let Some(Some(target)) = done.get(n).filter(|_| n >= from) {
                if c == b'@' {
                    out.extend_from_slice(Digest::sha256(target).as_str().as_bytes());
                } else {
                    out.extend_from_slice(target.len().to_string().as_bytes());
                }
                i += 2;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let wanted = platform(flags);
    let content_type = CONTENT_TYPES[usize::from(flags >> 5)];
    let raw: Vec<&[u8]> = rest.split(|&b| b == 0).take(10).collect();

    // The registry's steps on document 0, as pulled.
    let first = raw.first().copied().unwrap_or_default();
    if let Ok(mt) = classify(
        "registry.test",
        "registry.test/img:tag",
        content_type,
        first,
    ) {
        if kiln_image::is_index_media_type(&mt) {
            if let Ok(index) = serde_json::from_slice::<Index>(first) {
                if let Ok(d) = select_platform("registry.test", "img", &index, &wanted) {
                    let p = d.platform.as_ref().expect("a chosen entry has a platform");
                    assert!(p.satisfies(&wanted), "chose {p:?} for {wanted:?}");
                }
            }
        } else {
            let _ = serde_json::from_slice::<Manifest>(first);
        }
    }

    for doc in &raw {
        round_trip::<Manifest>(doc);
        round_trip::<Index>(doc);
        round_trip::<Descriptor>(doc);
        round_trip::<Platform>(doc);
        if let Ok(c) = ImageConfig::from_json(doc) {
            let out = c.to_json().expect("a parsed config serialises");
            let back = ImageConfig::from_json(&out).expect("its JSON parses again");
            assert_eq!(
                out,
                back.to_json().expect("serialises again"),
                "config round trip"
            );
        }
        if let Ok(s) = std::str::from_utf8(doc) {
            if let Ok(d) = s.parse::<Digest>() {
                assert_eq!(d.as_str(), s);
                assert_eq!(d.hex().len(), 64);
            }
        }
    }

    // The same documents as an OCI layout.
    let mut done: Vec<Option<Vec<u8>>> = vec![None; raw.len()];
    for n in (0..raw.len()).rev() {
        done[n] = Some(link(raw[n], n + 1, &done));
    }
    let base = tempfile::tempdir().expect("tempdir");
    let layout = base.path().join("layout");
    let blobs = layout.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).expect("layout dir");
    for (n, doc) in done.iter().enumerate() {
        let doc = doc.as_deref().unwrap_or_default();
        if n == 0 {
            fs::write(layout.join("index.json"), doc).expect("write index.json");
        } else {
            fs::write(blobs.join(Digest::sha256(doc).hex()), doc).expect("write blob");
        }
    }
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    let store = BlobStore::open(&base.path().join("store")).expect("store");
    let reference = match flags & 0x18 {
        0 => None,
        0x08 => Some("latest"),
        _ => Some("@sha256:0000000000000000000000000000000000000000000000000000000000000000"),
    };
    if let Ok(img) = import_oci_layout(&store, &layout, reference, &wanted) {
        assert!(
            store.contains(&img.config_digest),
            "the config was imported"
        );
    }
});
