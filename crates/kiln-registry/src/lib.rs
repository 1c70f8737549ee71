//! kiln-registry: the OCI distribution client kiln pulls base images and pushes built
//! images with.
//!
//! - [`Reference`]: parsing `name[:tag|@digest]`, Docker Hub short names;
//! - [`RegistryClient`]: pull (manifest negotiation, platform selection, parallel
//!   verified blob download into a [`kiln_image::BlobStore`]) and push (HEAD, mount,
//!   monolithic / chunked upload, retries, manifest PUT last);
//! - authentication: anonymous, Basic, Bearer token challenge, docker `config.json`
//!   and `docker-credential-*` helpers; secrets are wrapped in [`Secret`];
//! - TLS per registry: extra CAs, client certificates (mutual TLS), Docker's
//!   `certs.d` directories, and unverified TLS / plain HTTP for insecure registries
//!   (or for every pull, with [`RegistryOptions::insecure_pull`]);
//! - built-in cloud registry auth (ECR, GCR / Artifact Registry, ACR) with no helper
//!   binary: see [`CloudRegistry`].

mod auth;
mod client;
mod cloud;
mod credentials;
mod error;
mod progress;
mod pull;
mod push;
mod reference;
mod secret;
mod transport;

/// The pure steps of pulling a manifest (media type negotiation, platform
/// selection on an index), for the fuzz targets in `fuzz/`; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::pull::{classify, select_platform};
}

pub use client::RegistryClient;
pub use cloud::{parse_cloud_override, CloudRegistry};
pub use credentials::{default_docker_config_path, Credential};
pub use error::ReferenceError;
pub use error::{
    AuthError, CloudAuthFailure, CloudOverrideProblem, ConfigError, Error, HelperError,
    ProtocolError, Result,
};
pub use progress::{NoProgress, SkipReason, TransferProgress};
pub use reference::{api_host, Reference, DOCKER_HUB, DOCKER_HUB_API};
pub use secret::Secret;
pub use transport::{default_certs_dirs, is_loopback, ClientCert, RegistryOptions};
