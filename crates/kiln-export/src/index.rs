//! Index assembly for multi-platform builds: the image index over every
//! platform's manifest (in platform order, with the media type of the build's
//! format family), stored as a blob, and OCI layouts that hold it under the
//! build's ref name in place of the per-platform manifests.

use std::path::Path;

use kiln_image::{
    BlobStore, Descriptor, EntryKind, Format, Index, LayerEntry, StoredImage, ANNOTATION_REF_NAME,
    MT_DOCKER_MANIFEST_LIST, MT_OCI_INDEX,
};

use crate::files::write_file;
use crate::ExportError;

/// The index media type of a format family.
pub fn index_media_type(format: Format) -> &'static str {
    match format {
        Format::Oci => MT_OCI_INDEX,
        Format::Docker => MT_DOCKER_MANIFEST_LIST,
    }
}

/// The index over `images`, in the order given, each listed by its manifest
/// descriptor (which carries its platform).
pub fn index_over(images: &[StoredImage], format: Format) -> Index {
    Index {
        media_type: Some(index_media_type(format).to_string()),
        manifests: images.iter().map(|i| i.manifest.clone()).collect(),
        ..Index::default()
    }
}

/// Writes the index over `images` into the store and returns its descriptor.
pub fn store_index(
    store: &BlobStore,
    images: &[StoredImage],
    format: Format,
) -> Result<Descriptor, ExportError> {
    let index = index_over(images, format);
    let bytes = serde_json::to_vec(&index).map_err(|source| ExportError::Serialise {
        what: "the image index",
        source,
    })?;
    let digest = store.put_bytes(&bytes)?;
    Ok(Descriptor::new(
        index_media_type(format),
        digest,
        bytes.len() as u64,
    ))
}

/// The entries of an existing layout's `index.json` once the index `index` over
/// `platform_manifests` is added under `ref_name`: unnamed entries for those
/// manifests (or the index itself) and any entry already named `ref_name` are
/// replaced; everything else is kept in order.
pub fn merge_into_top(
    top: &mut Index,
    index: &Descriptor,
    platform_manifests: &[&kiln_image::Digest],
    ref_name: Option<&str>,
) {
    top.manifests.retain(|m| match m.ref_name() {
        None => !platform_manifests.contains(&&m.digest) && m.digest != index.digest,
        Some(n) => Some(n) != ref_name,
    });
    let mut entry = index.clone();
    if let Some(n) = ref_name {
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.to_string(), n.to_string());
    }
    top.manifests.push(entry);
}

/// Writes (or updates) the OCI layout `dir` so that it holds the index `index` over
/// `images`, named `ref_name` (replacing an entry of that name).
pub(crate) fn write_index_layout(
    store: &BlobStore,
    dir: &Path,
    images: &[(StoredImage, Option<String>)],
    index: &Descriptor,
    ref_name: Option<&str>,
) -> Result<(), ExportError> {
    // kiln-image links every image's blobs and lists the images unnamed; the
    // index then takes their place in index.json.
    kiln_image::write_oci_layout(store, dir, images)?;
    let blob = dir.join("blobs").join("sha256").join(index.digest.hex());
    if !blob.is_file() {
        let src = store.path(&index.digest);
        if std::fs::hard_link(&src, &blob).is_err() {
            std::fs::copy(&src, &blob).map_err(|source| ExportError::CopyIndex {
                path: blob.clone(),
                source,
            })?;
        }
    }
    let index_path = dir.join("index.json");
    let text = std::fs::read(&index_path).map_err(|source| ExportError::Read {
        path: index_path.clone(),
        source,
    })?;
    let mut top: Index =
        serde_json::from_slice(&text).map_err(|source| ExportError::NotAnIndex {
            path: index_path.clone(),
            source,
        })?;
    let platform_manifests: Vec<&kiln_image::Digest> =
        images.iter().map(|(i, _)| &i.manifest.digest).collect();
    merge_into_top(&mut top, index, &platform_manifests, ref_name);
    let bytes = serde_json::to_vec(&top).map_err(|source| ExportError::Serialise {
        what: "index.json",
        source,
    })?;
    write_file(&index_path, &bytes)
}

/// The files of an OCI layout directory as tar entries (root-owned, mtime 0, as
/// kiln-image writes OCI archives), blobs in name order.
pub(crate) fn layout_entries(layout: &Path) -> Result<Vec<LayerEntry>, ExportError> {
    let entry = |path: &str, kind: EntryKind| LayerEntry {
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        path: path.to_string(),
        kind,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: Vec::new(),
    };
    let file = |rel: &str| -> Result<LayerEntry, ExportError> {
        let source = layout.join(rel);
        let size = std::fs::metadata(&source)
            .map_err(|e| ExportError::Read {
                path: source.clone(),
                source: e,
            })?
            .len();
        Ok(entry(rel, EntryKind::File { source, size }))
    };
    let mut entries = vec![
        entry("blobs", EntryKind::Dir),
        entry("blobs/sha256", EntryKind::Dir),
        file("oci-layout")?,
        file("index.json")?,
    ];
    let blobs = layout.join("blobs").join("sha256");
    let read_err = |source| ExportError::Read {
        path: blobs.clone(),
        source,
    };
    let mut names: Vec<String> = std::fs::read_dir(&blobs)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(read_err)?;
    names.sort();
    for n in names {
        entries.push(file(&format!("blobs/sha256/{n}"))?);
    }
    Ok(entries)
}
