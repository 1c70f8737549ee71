//! [`RegistryClient`]: the entry point for pulling and pushing, and the small local
//! record of manifests it keeps beside the content store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use kiln_image::{BlobStore, Digest};

use crate::error::{io_err, Result};
use crate::transport::{RegistryOptions, Transport};

/// Pulls and pushes images. Cheap to share: one client keeps its connections, tokens
/// and credentials across calls.
pub struct RegistryClient {
    pub(crate) t: Transport,
    /// Where each blob is known to exist: (registry, digest) → repository, used for
    /// cross-repository mounts.
    pub(crate) known: Mutex<HashMap<(String, Digest), String>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("options", &self.t.opts)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client with `opts`; reads docker's `config.json` now (a malformed one is an
    /// error, a missing one means no stored credentials).
    pub fn new(opts: RegistryOptions) -> Result<Self> {
        Ok(RegistryClient {
            t: Transport::new(opts)?,
            known: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn remember(&self, registry: &str, digest: &Digest, repository: &str) {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(
            (registry.to_string(), digest.clone()),
            repository.to_string(),
        );
    }

    pub(crate) fn known_in(&self, registry: &str, digest: &Digest) -> Option<String> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(registry.to_string(), digest.clone()))
            .cloned()
    }
}

/// The local record of manifests and indexes pulled into a store:
/// `<store>/kiln-registry/manifests/<hex>` holds the media type of blob `<hex>`.
/// (The store is content-addressed and does not remember what a blob is.)
pub(crate) struct ManifestRecord {
    dir: PathBuf,
}

impl ManifestRecord {
    pub(crate) fn new(store: &BlobStore) -> Self {
        ManifestRecord {
            dir: store.root().join("kiln-registry").join("manifests"),
        }
    }

    pub(crate) fn media_type(&self, d: &Digest) -> Option<String> {
        std::fs::read_to_string(self.dir.join(d.hex()))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Records `d`'s media type (atomically: temp file + rename).
    pub(crate) fn put(&self, d: &Digest, media_type: &str) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(io_err(format!("create {}", self.dir.display())))?;
        let tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io_err(format!(
            "create temp file in {}",
            self.dir.display()
        )))?;
        std::fs::write(tmp.path(), media_type)
            .map_err(io_err(format!("write {}", tmp.path().display())))?;
        let dest = self.dir.join(d.hex());
        tmp.persist(&dest)
            .map_err(|e| e.error)
            .map_err(io_err(format!("rename into {}", dest.display())))?;
        Ok(())
    }
}
