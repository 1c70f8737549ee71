//! Images in the store: writing config + manifest blobs for an [`Image`] and reading
//! them back.

use serde::Serialize;

use crate::config::ImageConfig;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::Layer;
use crate::media::{is_index_media_type, Descriptor, Format, Manifest, Platform};
use crate::store::BlobStore;

/// An image: its config and its layers, bottom first.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
}

/// An image whose config and manifest blobs are in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    /// Descriptor of the manifest blob (with the image's platform).
    pub manifest: Descriptor,
    pub config_digest: Digest,
}

/// Canonical JSON (fields in declaration order, maps sorted, no trailing newline).
pub(crate) fn to_json<T: Serialize>(v: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|source| Error::Json {
        what: what.to_string(),
        source,
    })
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(b: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(b).map_err(|source| Error::Json {
        what: what.to_string(),
        source,
    })
}

pub(crate) fn platform_of(c: &ImageConfig) -> Platform {
    Platform {
        architecture: c.architecture.clone(),
        os: c.os.clone(),
        os_version: c.os_version.clone(),
        os_features: Vec::new(),
        variant: c.variant.clone(),
    }
}

/// Writes the config and manifest blobs for `image` in `format`.
///
/// The config's `rootfs.diff_ids` are set from the layers; layer media types are
/// translated to `format`'s family.
pub fn store_image(store: &BlobStore, image: &Image, format: Format) -> Result<StoredImage> {
    let mut config = image.config.clone();
    config.rootfs.kind = "layers".into();
    config.rootfs.diff_ids = image.layers.iter().map(|l| l.diff_id.clone()).collect();
    let config_bytes = config.to_json()?;
    let config_digest = store.put_bytes(&config_bytes)?;
    let layers = image
        .layers
        .iter()
        .map(|l| {
            Descriptor::new(
                format.convert_layer_media_type(&l.media_type),
                l.digest.clone(),
                l.size,
            )
        })
        .collect();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(format.manifest_media_type().to_string()),
        config: Descriptor::new(
            format.config_media_type(),
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        layers,
        annotations: Default::default(),
    };
    let mbytes = to_json(&manifest, "image manifest")?;
    let mdigest = store.put_bytes(&mbytes)?;
    let mut desc = Descriptor::new(format.manifest_media_type(), mdigest, mbytes.len() as u64);
    desc.platform = Some(platform_of(&config));
    Ok(StoredImage {
        manifest: desc,
        config_digest,
    })
}

/// Reads the manifest blob `manifest` from the store.
pub(crate) fn read_manifest(store: &BlobStore, manifest: &Digest) -> Result<Manifest> {
    let bytes = store.read_bytes(manifest)?;
    let v: serde_json::Value = from_json(&bytes, &format!("manifest {manifest}"))?;
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        if is_index_media_type(mt) {
            return Err(Error::Image(format!(
                "{manifest} is an image index, not a manifest: select a platform first"
            )));
        }
    }
    from_json(&bytes, &format!("manifest {manifest}"))
}

/// Reads an image (config + layer list) back from its manifest blob.
pub fn load_image(store: &BlobStore, manifest: &Digest) -> Result<Image> {
    let m = read_manifest(store, manifest)?;
    let config = ImageConfig::from_json(&store.read_bytes(&m.config.digest)?)?;
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(Error::Image(format!(
            "manifest {manifest} lists {} layers but its config has {} diff_ids",
            m.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let layers = m
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(d, diff)| Layer {
            digest: d.digest.clone(),
            diff_id: diff.clone(),
            size: d.size,
            media_type: d.media_type.clone(),
        })
        .collect();
    Ok(Image { config, layers })
}
