//! kiln-image: the image model and everything that reads or writes image bytes.
//!
//! - [`Digest`] and the content-addressed [`BlobStore`] (atomic, verified writes);
//! - deterministic layer tars ([`write_layer`]) with block-parallel gzip or zstd, and
//!   layer extraction onto a root filesystem ([`apply_layer`]);
//! - the Docker-compatible [`ImageConfig`], OCI / Docker v2 schema 2 manifests
//!   ([`store_image`], [`load_image`]);
//! - outputs (OCI layout, OCI archive, docker archive, rootfs dir, rootfs tar) and inputs
//!   (OCI layout / archive as base images).
//!
//! Pure code (tar headers, entry ordering, config JSON) lives apart from I/O so it can be
//! unit-tested on its own.

mod apply;
mod blobread;
mod compress;
mod compressed;
mod config;
mod digest;
mod error;
mod image;
mod import;
mod layer;
mod media;
mod output;
pub mod root;
mod store;
mod tarheader;
pub mod tarlimit;

pub use apply::{apply_layer, ApplyOptions};
pub use compressed::{Compressed, Decoder};
pub use config::{ContainerConfig, EmptyObject, HealthConfig, History, ImageConfig, RootFs};
pub use digest::Digest;
pub use error::{Error, Result};
pub use image::{load_image, store_image, Image, StoredImage};
pub use import::{import_oci_archive, import_oci_layout};
pub use layer::{
    open_source, recompress_layer, write_layer, write_layer_opening, write_layer_threads,
    EntryKind, Layer, LayerEntry, LayerOptions, SourceOpener,
};
pub use media::*;
pub use output::{
    write_docker_archive, write_oci_archive, write_oci_layout, write_rootfs_dir, write_rootfs_tar,
};
pub use store::{BlobStore, BlobWriter, Integrity};
