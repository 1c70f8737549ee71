//! Media types, compression and format choices, and the OCI / Docker v2 schema 2
//! manifest, index and descriptor JSON types.
//!
//! These are kiln-owned serde structs rather than the `oci-spec` crate's: kiln must
//! write Docker v2 schema 2 manifests with the very same types, control field order
//! byte for byte (digests of manifests depend on it), and keep unknown fields, none of
//! which `oci-spec`'s builder-based types give without extra conversion layers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The annotation that names an image inside an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Which family of media types to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// OCI image spec media types.
    #[default]
    Oci,
    /// Docker image manifest v2 schema 2 media types.
    Docker,
}

impl Format {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Format::Oci => MT_OCI_MANIFEST,
            Format::Docker => MT_DOCKER_MANIFEST,
        }
    }
    pub fn config_media_type(self) -> &'static str {
        match self {
            Format::Oci => MT_OCI_CONFIG,
            Format::Docker => MT_DOCKER_CONFIG,
        }
    }
    /// Layer media type for `compression`. Docker's schema has no zstd layer type, so
    /// zstd layers always use the OCI zstd type (as Docker itself does).
    pub fn layer_media_type(self, compression: &Compression) -> &'static str {
        match (self, compression) {
            (Format::Oci, Compression::None) => MT_OCI_LAYER,
            (Format::Oci, Compression::Gzip { .. }) => MT_OCI_LAYER_GZIP,
            (_, Compression::Zstd { .. }) => MT_OCI_LAYER_ZSTD,
            (Format::Docker, Compression::None) => MT_DOCKER_LAYER,
            (Format::Docker, Compression::Gzip { .. }) => MT_DOCKER_LAYER_GZIP,
        }
    }
    /// Translates a layer media type of either family into this format's.
    pub fn convert_layer_media_type(self, media_type: &str) -> String {
        let c = match media_type {
            MT_OCI_LAYER | MT_DOCKER_LAYER => Compression::None,
            MT_OCI_LAYER_GZIP | MT_DOCKER_LAYER_GZIP => Compression::Gzip { level: 6 },
            MT_OCI_LAYER_ZSTD => Compression::Zstd { level: 3 },
            other => return other.to_string(),
        };
        self.layer_media_type(&c).to_string()
    }
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// gzip, level 0–9, written block-parallel across cores.
    Gzip {
        level: u32,
    },
    /// zstd, level 1–22 (negative = fast modes).
    Zstd {
        level: i32,
    },
}

impl Compression {
    /// Whether a layer of `media_type` is compressed this way (at any
    /// level). A media type that names no known layer encoding matches:
    /// there is nothing to re-encode it from.
    pub fn matches_media_type(&self, media_type: &str) -> bool {
        match media_type {
            MT_OCI_LAYER | MT_DOCKER_LAYER => *self == Compression::None,
            MT_OCI_LAYER_GZIP | MT_DOCKER_LAYER_GZIP => matches!(self, Compression::Gzip { .. }),
            MT_OCI_LAYER_ZSTD => matches!(self, Compression::Zstd { .. }),
            _ => true,
        }
    }
}

impl Default for Compression {
    /// gzip level 6: the default of `gzip`, `pigz` and Docker.
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

/// A content descriptor (OCI image spec "descriptor"), also used for Docker manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }

    /// The `org.opencontainers.image.ref.name` annotation, if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(ANNOTATION_REF_NAME)
            .map(String::as_str)
    }
}

/// An image platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A platform string that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input}: expected os/arch[/variant], e.g. linux/amd64")]
pub struct PlatformError {
    pub input: String,
}

impl std::str::FromStr for Platform {
    type Err = PlatformError;

    /// `os/arch[/variant]`, each part non-empty (`FROM --platform=`,
    /// `--platform`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform::new(os, arch, Some(variant)))
            }
            _ => Err(PlatformError {
                input: s.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for Platform {
    /// `os/arch[/variant]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.variant {
            Some(v) => write!(f, "{}/{}/{v}", self.os, self.architecture),
            None => write!(f, "{}/{}", self.os, self.architecture),
        }
    }
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            architecture: architecture.into(),
            os: os.into(),
            variant: variant.map(str::to_string),
            ..Platform::default()
        }
    }

    /// Whether an image for `self` satisfies a request for `wanted`: os and architecture
    /// equal; a requested variant must match (arm64 without variant counts as `v8`).
    pub fn satisfies(&self, wanted: &Platform) -> bool {
        if self.os != wanted.os || self.architecture != wanted.architecture {
            return false;
        }
        match &wanted.variant {
            None => true,
            Some(v) => {
                let have = self
                    .variant
                    .as_deref()
                    .or(match self.architecture.as_str() {
                        "arm64" => Some("v8"),
                        _ => None,
                    });
                have == Some(v.as_str())
            }
        }
    }
}

/// An image manifest (OCI or Docker v2 schema 2: the JSON shapes are the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index / Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(MT_OCI_INDEX.into()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }
}

/// Whether a media type names an index (OCI index or Docker manifest list).
pub fn is_index_media_type(mt: &str) -> bool {
    mt == MT_OCI_INDEX || mt == MT_DOCKER_MANIFEST_LIST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_print_as_os_arch_variant() {
        for s in [
            "linux/amd64",
            "linux/arm64/v8",
            "windows/amd64",
            "linux/arm/v7",
        ] {
            let p: Platform = s.parse().expect(s);
            assert_eq!(p.to_string(), s);
        }
        let p: Platform = "linux/arm/v6".parse().expect("arm");
        assert_eq!(p, Platform::new("linux", "arm", Some("v6")));
        for bad in ["", "linux", "linux/", "/amd64", "linux/arm/", "a/b/c/d"] {
            let e = bad.parse::<Platform>().expect_err(bad);
            assert_eq!(
                e.to_string(),
                format!("{bad}: expected os/arch[/variant], e.g. linux/amd64")
            );
        }
    }
}
