//! Build outputs: OCI layout directory, OCI archive, docker archive, rootfs directory and
//! rootfs tar. Every output is written beside its destination and renamed into place, so
//! a failed build never leaves a half-written archive or layout index.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::apply::{apply_inner, same_inode, ApplyOptions, Tracker};
use crate::blobread::open_layer;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::{from_json, read_manifest, to_json, Image, StoredImage};
use crate::layer::{prepare_entries, write_tar_stream, EntryKind, LayerEntry};
use crate::media::{Descriptor, Index, ANNOTATION_REF_NAME, MT_OCI_INDEX};
use crate::store::BlobStore;

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to `dest` atomically (temp file beside it + fsync + rename).
fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-tmp-")
        .tempfile_in(parent_of(dest))
        .ctx(|| format!("create temp file beside {}", dest.display()))?;
    tmp.write_all(bytes)
        .ctx(|| format!("write {}", dest.display()))?;
    finish_temp(tmp, dest)
}

fn finish_temp(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
    tmp.as_file()
        .sync_all()
        .ctx(|| format!("fsync {}", dest.display()))?;
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .ctx(|| format!("chmod {}", dest.display()))?;
    tmp.persist(dest)
        .map_err(|e| e.error)
        .ctx(|| format!("rename into {}", dest.display()))?;
    Ok(())
}

/// Every blob an image needs: manifest, config, layers.
fn image_blobs(store: &BlobStore, img: &StoredImage) -> Result<Vec<Digest>> {
    let m = read_manifest(store, &img.manifest.digest)?;
    let mut v = vec![img.manifest.digest.clone(), m.config.digest.clone()];
    v.extend(m.layers.into_iter().map(|l| l.digest));
    Ok(v)
}

/// Hardlinks (or copies, across filesystems) a blob into a layout's `blobs/sha256`.
fn link_blob(store: &BlobStore, d: &Digest, blobs: &Path) -> Result<()> {
    let dst = blobs.join(d.hex());
    if dst.is_file() {
        return Ok(());
    }
    let src = store.path(d);
    if !src.is_file() {
        return Err(Error::BlobNotFound(d.to_string()));
    }
    if fs::hard_link(&src, &dst).is_ok() {
        return Ok(());
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-tmp-")
        .tempfile_in(blobs)
        .ctx(|| format!("create temp blob in {}", blobs.display()))?;
    io::copy(&mut store.open_blob(d)?, &mut tmp).ctx(|| format!("copy blob {d}"))?;
    finish_temp(tmp, &dst)
}

fn index_entry(img: &StoredImage, name: &Option<String>) -> Descriptor {
    let mut d = img.manifest.clone();
    if let Some(n) = name {
        d.annotations.insert(ANNOTATION_REF_NAME.into(), n.clone());
    }
    d
}

/// Writes (or updates) an OCI image layout at `dir`: `oci-layout`, `blobs/`, and
/// `index.json`, in which each image replaces any entry with the same ref name.
pub fn write_oci_layout(
    store: &BlobStore,
    dir: &Path,
    images: &[(StoredImage, Option<String>)],
) -> Result<()> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).ctx(|| format!("create {}", blobs.display()))?;
    for (img, _) in images {
        for d in image_blobs(store, img)? {
            link_blob(store, &d, &blobs)?;
        }
    }
    let layout = dir.join("oci-layout");
    if fs::read(&layout).ok().as_deref() != Some(OCI_LAYOUT) {
        write_atomic(&layout, OCI_LAYOUT)?;
    }
    let index_path = dir.join("index.json");
    let mut index: Index = match fs::read(&index_path) {
        Ok(b) => from_json(&b, &index_path.display().to_string())?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Index::default(),
        Err(e) => {
            return Err(Error::Io {
                context: format!("read {}", index_path.display()),
                source: e,
            })
        }
    };
    for (img, name) in images {
        add_to_index(&mut index, img, name);
    }
    write_atomic(&index_path, &to_json(&index, "index.json")?)
}

/// Adds an image to an index, replacing an entry with the same ref name (or, for an
/// unnamed image, an unnamed entry with the same digest).
fn add_to_index(index: &mut Index, img: &StoredImage, name: &Option<String>) {
    index.manifests.retain(|m| match name {
        Some(n) => m.ref_name() != Some(n.as_str()),
        None => !(m.ref_name().is_none() && m.digest == img.manifest.digest),
    });
    index.manifests.push(index_entry(img, name));
}

fn fixed_entry(path: &str, kind: EntryKind) -> LayerEntry {
    let mode = if kind == EntryKind::Dir { 0o755 } else { 0o644 };
    LayerEntry {
        path: path.into(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: Vec::new(),
    }
}

/// Writes `entries` as an uncompressed deterministic tar at `file`, atomically.
fn write_tar_file(file: &Path, entries: Vec<LayerEntry>) -> Result<()> {
    let prepared = prepare_entries(entries, None)?;
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-tmp-")
        .tempfile_in(parent_of(file))
        .ctx(|| format!("create temp file beside {}", file.display()))?;
    let mut w = BufWriter::with_capacity(256 * 1024, tmp);
    write_tar_stream(&mut w, &prepared, &crate::layer::open_source)?;
    let tmp = w
        .into_inner()
        .map_err(|e| e.into_error())
        .ctx(|| format!("write {}", file.display()))?;
    finish_temp(tmp, file)
}

fn blob_entry(store: &BlobStore, d: &Digest, path: String) -> Result<LayerEntry> {
    let size = store.size(d)?;
    Ok(fixed_entry(
        &path,
        EntryKind::File {
            source: store.path(d),
            size,
        },
    ))
}

/// Writes an OCI layout as one deterministic tar file (an "OCI archive").
pub fn write_oci_archive(
    store: &BlobStore,
    file: &Path,
    images: &[(StoredImage, Option<String>)],
) -> Result<()> {
    let mut entries = vec![
        fixed_entry("blobs", EntryKind::Dir),
        fixed_entry("blobs/sha256", EntryKind::Dir),
        fixed_entry("oci-layout", EntryKind::Bytes(OCI_LAYOUT.to_vec())),
    ];
    let mut seen = std::collections::BTreeSet::new();
    let mut index = Index {
        media_type: Some(MT_OCI_INDEX.into()),
        ..Index::default()
    };
    for (img, name) in images {
        for d in image_blobs(store, img)? {
            if seen.insert(d.clone()) {
                entries.push(blob_entry(store, &d, format!("blobs/sha256/{}", d.hex()))?);
            }
        }
        add_to_index(&mut index, img, name);
    }
    entries.push(fixed_entry(
        "index.json",
        EntryKind::Bytes(to_json(&index, "index.json")?),
    ));
    write_tar_file(file, entries)
}

#[derive(Serialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Makes sure the uncompressed tar of a layer is in the store (its digest is the diffID).
fn ensure_uncompressed(store: &BlobStore, layer: &Digest, diff_id: &Digest) -> Result<()> {
    if store.contains(diff_id) {
        return Ok(());
    }
    let mut r = open_layer(store, layer)?;
    let mut w = store.writer()?;
    io::copy(&mut r, &mut w).ctx(|| format!("decompress layer {layer}"))?;
    w.commit_expecting(diff_id).map(|_| ())
}

/// Writes a `docker load` / `podman load` archive: `manifest.json`, `<config>.json` and
/// uncompressed `<diffID>/layer.tar` files.
pub fn write_docker_archive(
    store: &BlobStore,
    file: &Path,
    image: &StoredImage,
    repo_tags: &[String],
) -> Result<()> {
    let m = read_manifest(store, &image.manifest.digest)?;
    let img = crate::image::load_image(store, &image.manifest.digest)?;
    let mut entries = vec![blob_entry(
        store,
        &m.config.digest,
        format!("{}.json", m.config.digest.hex()),
    )?];
    let mut layer_paths = Vec::new();
    for l in &img.layers {
        ensure_uncompressed(store, &l.digest, &l.diff_id)?;
        let p = format!("{}/layer.tar", l.diff_id.hex());
        if !layer_paths.contains(&p) {
            entries.push(fixed_entry(l.diff_id.hex(), EntryKind::Dir));
            entries.push(blob_entry(store, &l.diff_id, p.clone())?);
        }
        layer_paths.push(p);
    }
    let manifest = vec![DockerManifestEntry {
        config: format!("{}.json", m.config.digest.hex()),
        repo_tags: repo_tags.to_vec(),
        layers: layer_paths,
    }];
    entries.push(fixed_entry(
        "manifest.json",
        EntryKind::Bytes(to_json(&manifest, "manifest.json")?),
    ));
    write_tar_file(file, entries)
}

/// Extracts the image's filesystem into `dest` (`--output type=local`).
///
/// When `dest` is absent or empty the tree is built beside it and renamed into place;
/// into a non-empty existing directory it is extracted in place (merged over it).
pub fn write_rootfs_dir(store: &BlobStore, image: &Image, dest: &Path) -> Result<()> {
    let opts = ApplyOptions::default();
    let empty = match fs::read_dir(dest) {
        Ok(mut rd) => rd.next().is_none(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(Error::Io {
                context: format!("read {}", dest.display()),
                source: e,
            })
        }
    };
    if !empty {
        for l in &image.layers {
            apply_inner(store, &l.digest, dest, &opts, None)?;
        }
        return Ok(());
    }
    let parent = parent_of(dest);
    fs::create_dir_all(&parent).ctx(|| format!("create {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-tmp-")
        .tempdir_in(&parent)
        .ctx(|| format!("create temp dir in {}", parent.display()))?;
    for l in &image.layers {
        apply_inner(store, &l.digest, tmp.path(), &opts, None)?;
    }
    let tmp = tmp.keep();
    fs::rename(&tmp, dest).ctx(|| format!("rename into {}", dest.display()))?;
    Ok(())
}

/// Writes the image's flattened filesystem as one deterministic uncompressed tar
/// (`--output type=tar`), with owners, modes, devices and xattrs as the layers say.
pub fn write_rootfs_tar(store: &BlobStore, image: &Image, file: &Path) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix(".kiln-tmp-")
        .tempdir_in(parent_of(file))
        .ctx(|| format!("create temp dir beside {}", file.display()))?;
    let opts = ApplyOptions {
        same_owner: false,
        protected: Vec::new(),
    };
    let mut tracker = Tracker::new();
    for l in &image.layers {
        apply_inner(store, &l.digest, scratch.path(), &opts, Some(&mut tracker))?;
    }
    let mut entries: Vec<LayerEntry> = Vec::with_capacity(tracker.len());
    for (path, mut e) in tracker.clone() {
        if let EntryKind::Hardlink { target } = &e.kind {
            let me = scratch.path().join(&path);
            let ok = matches!(
                tracker.get(target).map(|t| &t.kind),
                Some(EntryKind::File { .. })
            ) && same_inode(&me, &scratch.path().join(target));
            if !ok {
                let size = fs::symlink_metadata(&me)
                    .ctx(|| format!("stat {}", me.display()))?
                    .len();
                e.kind = EntryKind::File { source: me, size };
            }
        }
        entries.push(e);
    }
    write_tar_file(file, entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_relative_file_is_cwd() {
        assert_eq!(parent_of(Path::new("out.tar")), PathBuf::from("."));
        assert_eq!(parent_of(Path::new("/a/out.tar")), PathBuf::from("/a"));
    }
}
