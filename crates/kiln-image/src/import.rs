//! Base images from a local OCI layout directory or OCI archive: resolve the index to a
//! manifest (by ref name or digest, then platform) and copy its blobs into the store,
//! verifying every digest.

use std::fs;
use std::path::Path;

use crate::config::ImageConfig;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::{from_json, platform_of, StoredImage};
use crate::media::{is_index_media_type, Descriptor, Index, Manifest, Platform};
use crate::store::BlobStore;

fn layout_blob(dir: &Path, d: &Digest) -> std::path::PathBuf {
    dir.join("blobs").join(d.algorithm()).join(d.hex())
}

/// Copies one blob from the layout into the store, verifying its digest.
fn copy_blob(store: &BlobStore, dir: &Path, d: &Digest) -> Result<()> {
    if store.contains(d) {
        return Ok(());
    }
    let p = layout_blob(dir, d);
    let mut f = fs::File::open(&p).ctx(|| format!("open {}", p.display()))?;
    store.put_verified(&mut f, d).map(|_| ())
}

fn read_layout_json<T: serde::de::DeserializeOwned>(
    store: &BlobStore,
    dir: &Path,
    d: &Digest,
) -> Result<T> {
    copy_blob(store, dir, d)?;
    from_json(
        &store.read_bytes(d)?,
        &format!("blob {d} in {}", dir.display()),
    )
}

/// Picks the manifest for `platform` out of an index (recursing into nested indexes).
fn select(
    store: &BlobStore,
    dir: &Path,
    candidates: &[Descriptor],
    platform: &Platform,
    what: &str,
) -> Result<Descriptor> {
    let mut fallback = None;
    for c in candidates {
        if is_index_media_type(&c.media_type) {
            let idx: Index = read_layout_json(store, dir, &c.digest)?;
            if let Ok(d) = select(store, dir, &idx.manifests, platform, what) {
                return Ok(d);
            }
            continue;
        }
        match &c.platform {
            Some(p) if p.satisfies(platform) => return Ok(c.clone()),
            Some(_) => {}
            None => fallback = fallback.or(Some(c.clone())),
        }
    }
    // A manifest without a platform in the index: check its config.
    if let Some(c) = fallback {
        let m: Manifest = read_layout_json(store, dir, &c.digest)?;
        let cfg: ImageConfig = ImageConfig::from_json(&{
            copy_blob(store, dir, &m.config.digest)?;
            store.read_bytes(&m.config.digest)?
        })?;
        if platform_of(&cfg).satisfies(platform) {
            return Ok(c);
        }
    }
    Err(Error::Image(format!(
        "no image for platform {}/{}{} in {what}",
        platform.os,
        platform.architecture,
        platform
            .variant
            .as_deref()
            .map(|v| format!("/{v}"))
            .unwrap_or_default()
    )))
}

/// Imports an image from an OCI layout directory.
///
/// `reference` is a ref name (`org.opencontainers.image.ref.name`), or a digest
/// (`sha256:…`, optionally prefixed by `@`), or `None` for the layout's only image.
pub fn import_oci_layout(
    store: &BlobStore,
    dir: &Path,
    reference: Option<&str>,
    platform: &Platform,
) -> Result<StoredImage> {
    let index_path = dir.join("index.json");
    let bytes = fs::read(&index_path).ctx(|| format!("read {}", index_path.display()))?;
    let index: Index = from_json(&bytes, &index_path.display().to_string())?;
    let what = format!("OCI layout {}", dir.display());
    let candidates: Vec<Descriptor> = match reference {
        None => index.manifests.clone(),
        Some(r) => {
            let r = r.strip_prefix('@').unwrap_or(r);
            if r.starts_with("sha256:") {
                let d: Digest = r.parse()?;
                index
                    .manifests
                    .iter()
                    .filter(|m| m.digest == d)
                    .cloned()
                    .collect()
            } else {
                index
                    .manifests
                    .iter()
                    .filter(|m| m.ref_name() == Some(r))
                    .cloned()
                    .collect()
            }
        }
    };
    if candidates.is_empty() {
        return Err(Error::Image(format!(
            "no image {} in {what}",
            reference
                .map(|r| format!("{r:?}"))
                .unwrap_or_else(|| "at all".into())
        )));
    }
    let chosen = select(store, dir, &candidates, platform, &what)?;
    let m: Manifest = read_layout_json(store, dir, &chosen.digest)?;
    copy_blob(store, dir, &m.config.digest)?;
    for l in &m.layers {
        copy_blob(store, dir, &l.digest)?;
    }
    let cfg = ImageConfig::from_json(&store.read_bytes(&m.config.digest)?)?;
    let mut manifest = Descriptor::new(
        chosen.media_type.clone(),
        chosen.digest.clone(),
        chosen.size,
    );
    manifest.platform = Some(platform_of(&cfg));
    Ok(StoredImage {
        manifest,
        config_digest: m.config.digest,
    })
}

/// Imports an image from an OCI archive (a tar of an OCI layout).
pub fn import_oci_archive(
    store: &BlobStore,
    file: &Path,
    reference: Option<&str>,
    platform: &Platform,
) -> Result<StoredImage> {
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-import-")
        .tempdir_in(store.root())
        .ctx(|| format!("create temp dir in {}", store.root().display()))?;
    let f = fs::File::open(file).ctx(|| format!("open {}", file.display()))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    ar.set_preserve_permissions(false);
    // `unpack` refuses entries that would land outside the target directory.
    ar.unpack(tmp.path())
        .ctx(|| format!("unpack OCI archive {}", file.display()))?;
    import_oci_layout(store, tmp.path(), reference, platform)
}
