//! Pushing: every blob is confirmed in the destination repository (HEAD, then a
//! cross-repository mount when kiln knows the blob is in another repository of the same
//! registry, else an upload: monolithic POST + PUT, or chunked PATCHes for big blobs),
//! in parallel; only then is the manifest PUT. A multi-platform image is pushed as each
//! platform's manifest by digest, then the index under the tag. A failed upload session is restarted
//! cleanly under the retry policy.

use std::io::{Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use kiln_image::{BlobStore, Descriptor, Digest, Index, Manifest, StoredImage};
use reqwest::StatusCode;
use tokio::io::AsyncReadExt;
use url::Url;

use crate::auth::scope;
use crate::client::RegistryClient;
use crate::error::{io_err, ConfigError, Error, ProtocolError, Result};
use crate::progress::{SkipReason, TransferProgress};
use crate::reference::Reference;
use crate::transport::{status_error, Endpoint};

impl RegistryClient {
    /// Pushes `image` (its manifest, config and layers must be in `store`) to `dest` and
    /// returns the manifest digest. The manifest is PUT by `dest`'s tag (`latest` when
    /// none), or by digest when `dest` is digest-pinned, and only after every blob is
    /// confirmed present in the destination repository.
    pub async fn push(
        &self,
        store: &BlobStore,
        image: &StoredImage,
        dest: &Reference,
        progress: &dyn TransferProgress,
    ) -> Result<Digest> {
        let registry = self.t.map_registry(&dest.registry);
        let ep = self.t.endpoint(&registry).await?;
        let repo = &dest.repository;
        let manifest_bytes = store.read_bytes(&image.manifest.digest)?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|error| {
            ConfigError::InvalidLocalManifest {
                digest: image.manifest.digest.clone(),
                error,
            }
        })?;
        let blobs: Vec<&Descriptor> = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .collect();
        futures_util::stream::iter(
            blobs
                .iter()
                .map(|d| self.push_blob(&ep, store, repo, d, progress)),
        )
        .buffer_unordered(self.t.opts.max_concurrent_transfers.max(1))
        .try_collect::<Vec<()>>()
        .await?;

        let digest = image.manifest.digest.clone();
        let reference = match (&dest.digest, &dest.tag) {
            (Some(d), _) if d != &digest => {
                return Err(ConfigError::ManifestDigestMismatch {
                    manifest: digest,
                    dest: dest.to_string(),
                }
                .into())
            }
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        self.put_manifest(
            &ep,
            repo,
            &reference,
            &image.manifest.media_type,
            manifest_bytes,
            &digest,
        )
        .await?;
        Ok(digest)
    }

    /// Pushes a multi-platform image to `dest`: every image of `images` (their blobs,
    /// then their manifests by digest), then the index `index` (its bytes must be in
    /// `store`, and it must list exactly those manifests) under `dest`'s tag (`latest`
    /// when none) or digest. Returns the index digest.
    pub async fn push_index(
        &self,
        store: &BlobStore,
        index: &Descriptor,
        images: &[StoredImage],
        dest: &Reference,
        progress: &dyn TransferProgress,
    ) -> Result<Digest> {
        let index_bytes = store.read_bytes(&index.digest)?;
        let parsed: Index = serde_json::from_slice(&index_bytes).map_err(|error| {
            ConfigError::InvalidLocalIndex {
                digest: index.digest.clone(),
                error,
            }
        })?;
        let listed: Vec<&Digest> = parsed.manifests.iter().map(|d| &d.digest).collect();
        let given: Vec<&Digest> = images.iter().map(|i| &i.manifest.digest).collect();
        if listed != given {
            return Err(ConfigError::IndexImagesMismatch {
                digest: index.digest.clone(),
            }
            .into());
        }
        let reference = match (&dest.digest, &dest.tag) {
            (Some(d), _) if d != &index.digest => {
                return Err(ConfigError::IndexDigestMismatch {
                    index: index.digest.clone(),
                    dest: dest.to_string(),
                }
                .into())
            }
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        // Each platform's manifest by digest: nothing is tagged until the index is.
        for img in images {
            let pinned = Reference {
                tag: None,
                digest: Some(img.manifest.digest.clone()),
                ..dest.clone()
            };
            self.push(store, img, &pinned, progress).await?;
        }
        let registry = self.t.map_registry(&dest.registry);
        let ep = self.t.endpoint(&registry).await?;
        self.put_manifest(
            &ep,
            &dest.repository,
            &reference,
            &index.media_type,
            index_bytes,
            &index.digest,
        )
        .await?;
        Ok(index.digest.clone())
    }

    /// PUTs a manifest or index as `reference` in `repo`, checking the digest the
    /// registry reports.
    async fn put_manifest(
        &self,
        ep: &Endpoint,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
        digest: &Digest,
    ) -> Result<()> {
        let registry = &ep.registry;
        let url = ep.url(&format!("v2/{repo}/manifests/{reference}"))?;
        let what = format!("pushing the manifest of {registry}/{repo}:{reference}");
        let scopes = [scope(repo, true)];
        let body = bytes::Bytes::from(bytes);
        let resp = self
            .t
            .with_retries(&what, async || {
                let resp = self
                    .t
                    .send(ep, &scopes, &what, &|c| {
                        Ok(c.put(url.clone())
                            .header("Content-Type", media_type)
                            .body(body.clone()))
                    })
                    .await?;
                if resp.status().is_success() {
                    Ok(resp)
                } else {
                    Err(status_error(registry, &what, resp).await)
                }
            })
            .await?;
        if let Some(h) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if h != digest.as_str() {
                return Err(Error::DigestMismatch {
                    registry: registry.clone(),
                    what: format!("the pushed manifest of {registry}/{repo}"),
                    expected: digest.to_string(),
                    actual: h.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Uploads one blob from `store` to `dest`'s repository (skipped when the
    /// registry has it), so a build can send layers while later steps run;
    /// [`RegistryClient::push`] then finds them present.
    pub async fn upload_blob(
        &self,
        store: &BlobStore,
        dest: &Reference,
        blob: &Descriptor,
        progress: &dyn TransferProgress,
    ) -> Result<()> {
        let registry = self.t.map_registry(&dest.registry);
        let ep = self.t.endpoint(&registry).await?;
        self.push_blob(&ep, store, &dest.repository, blob, progress)
            .await
    }

    /// Makes sure blob `d` exists in `repo`: HEAD, mount, or upload.
    async fn push_blob(
        &self,
        ep: &Endpoint,
        store: &BlobStore,
        repo: &str,
        d: &Descriptor,
        progress: &dyn TransferProgress,
    ) -> Result<()> {
        let scopes = [scope(repo, true)];
        if self.blob_exists(ep, &scopes, repo, &d.digest).await? {
            progress.skipped(&d.digest, d.size, &SkipReason::ExistsInRegistry);
            self.remember(&ep.registry, &d.digest, repo);
            return Ok(());
        }
        if let Some(from) = self
            .known_in(&ep.registry, &d.digest)
            .filter(|from| from != repo)
        {
            if self.mount(ep, repo, &from, &d.digest).await? {
                progress.skipped(&d.digest, d.size, &SkipReason::Mounted { from });
                self.remember(&ep.registry, &d.digest, repo);
                return Ok(());
            }
        }
        let what = format!("uploading blob {} to {}/{repo}", d.digest, ep.registry);
        progress.started(&d.digest, d.size);
        self.t
            .with_retries(&what, async || {
                self.upload(ep, &scopes, store, repo, d, progress, &what)
                    .await
            })
            .await?;
        progress.finished(&d.digest, d.size);
        self.remember(&ep.registry, &d.digest, repo);
        Ok(())
    }

    async fn blob_exists(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        repo: &str,
        digest: &Digest,
    ) -> Result<bool> {
        let url = ep.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let what = format!("checking blob {digest} in {}/{repo}", ep.registry);
        self.t
            .with_retries(&what, async || {
                let resp = self
                    .t
                    .send(ep, scopes, &what, &|c| Ok(c.head(url.clone())))
                    .await?;
                match resp.status() {
                    s if s.is_success() => Ok(true),
                    StatusCode::NOT_FOUND => Ok(false),
                    _ => Err(status_error(&ep.registry, &what, resp).await),
                }
            })
            .await
    }

    /// Asks the registry to mount `digest` from `from`; `false` when it would not.
    async fn mount(&self, ep: &Endpoint, repo: &str, from: &str, digest: &Digest) -> Result<bool> {
        let mut url = ep.url(&format!("v2/{repo}/blobs/uploads/"))?;
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from);
        let scopes = [scope(repo, true), scope(from, false)];
        let what = format!("mounting blob {digest} from {from} into {repo}");
        self.t
            .with_retries(&what, async || {
                let resp = self
                    .t
                    .send(ep, &scopes, &what, &|c| {
                        Ok(c.post(url.clone()).header("Content-Length", "0"))
                    })
                    .await?;
                match resp.status() {
                    StatusCode::CREATED => Ok(true),
                    // 202: the registry started an ordinary upload instead; it expires unused.
                    s if s.is_success() => Ok(false),
                    _ => Err(status_error(&ep.registry, &what, resp).await),
                }
            })
            .await
    }

    /// One upload session: POST, then one PUT with the whole blob or PATCHes of
    /// `chunk_size` and a closing PUT.
    #[allow(clippy::too_many_arguments)]
    async fn upload(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        store: &BlobStore,
        repo: &str,
        d: &Descriptor,
        progress: &dyn TransferProgress,
        what: &str,
    ) -> Result<()> {
        let start_url = ep.url(&format!("v2/{repo}/blobs/uploads/"))?;
        let resp = self
            .t
            .send(ep, scopes, what, &|c| {
                Ok(c.post(start_url.clone()).header("Content-Length", "0"))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(&ep.registry, what, resp).await);
        }
        let mut location = location(ep, &resp)?;
        let path = store.path(&d.digest);
        let chunk = self.t.opts.chunk_size.max(1);
        progress.advanced(&d.digest, 0, d.size);
        if d.size > chunk {
            let mut offset = 0u64;
            while offset < d.size {
                let len = chunk.min(d.size - offset);
                let loc = location.clone();
                let resp = self
                    .send_body(
                        ep,
                        scopes,
                        what,
                        d,
                        progress,
                        offset,
                        len,
                        &|c, body| {
                            Ok(c.patch(loc.clone())
                                .header("Content-Type", "application/octet-stream")
                                .header("Content-Range", format!("{offset}-{}", offset + len - 1))
                                .header("Content-Length", len.to_string())
                                .body(body))
                        },
                        &path,
                    )
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(status_error(&ep.registry, what, resp).await);
                }
                location = self::location(ep, &resp)?;
                offset += len;
            }
            let mut url = location.clone();
            url.query_pairs_mut()
                .append_pair("digest", d.digest.as_str());
            let resp = self
                .t
                .send(ep, scopes, what, &|c| {
                    Ok(c.put(url.clone()).header("Content-Length", "0"))
                })
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(status_error(&ep.registry, what, resp).await);
            }
        } else {
            let mut url = location.clone();
            url.query_pairs_mut()
                .append_pair("digest", d.digest.as_str());
            let resp = self
                .send_body(
                    ep,
                    scopes,
                    what,
                    d,
                    progress,
                    0,
                    d.size,
                    &|c, body| {
                        Ok(c.put(url.clone())
                            .header("Content-Type", "application/octet-stream")
                            .header("Content-Length", d.size.to_string())
                            .body(body))
                    },
                    &path,
                )
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(status_error(&ep.registry, what, resp).await);
            }
        }
        Ok(())
    }

    /// Sends a request whose body is `len` bytes of the blob file from `offset`,
    /// streamed from disk, reporting progress while it goes.
    #[allow(clippy::too_many_arguments)]
    async fn send_body(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        what: &str,
        d: &Descriptor,
        progress: &dyn TransferProgress,
        offset: u64,
        len: u64,
        mk: &(dyn Fn(&reqwest::Client, reqwest::Body) -> Result<reqwest::RequestBuilder> + Sync),
        path: &std::path::Path,
    ) -> Result<reqwest::Response> {
        let sent = Arc::new(AtomicU64::new(0));
        let make = |c: &reqwest::Client| {
            let mut f = std::fs::File::open(path)
                .map_err(io_err(format!("open blob {}", path.display())))?;
            f.seek(SeekFrom::Start(offset))
                .map_err(io_err(format!("seek blob {}", path.display())))?;
            let counter = sent.clone();
            counter.store(0, Ordering::Relaxed);
            let stream = tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(f).take(len),
                256 * 1024,
            )
            .inspect(move |r| {
                if let Ok(b) = r {
                    counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            });
            mk(c, reqwest::Body::wrap_stream(stream))
        };
        let send = self.t.send(ep, scopes, what, &make);
        tokio::pin!(send);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                r = &mut send => {
                    progress.advanced(&d.digest, offset + sent.load(Ordering::Relaxed), d.size);
                    return r;
                }
                _ = tick.tick() => {
                    progress.advanced(&d.digest, offset + sent.load(Ordering::Relaxed), d.size);
                }
            }
        }
    }
}

/// The upload URL from a response's `Location` (which may be relative).
fn location(ep: &Endpoint, resp: &reqwest::Response) -> Result<Url> {
    let loc = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Protocol {
            registry: ep.registry.clone(),
            reason: ProtocolError::NoUploadLocation,
        })?;
    resp.url().join(loc).map_err(|e| Error::Protocol {
        registry: ep.registry.clone(),
        reason: ProtocolError::UploadLocationNotUrl {
            location: loc.to_string(),
            error: e,
        },
    })
}
