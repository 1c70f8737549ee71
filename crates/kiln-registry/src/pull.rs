//! Pulling: manifest negotiation (OCI and Docker v2 schema 2 manifests and indexes),
//! platform selection, and parallel, resumable, digest-verified blob downloads into the
//! local content store. A digest-pinned reference already in the store is served
//! without any network access.

use std::io::Write;

use futures_util::{StreamExt, TryStreamExt};
use kiln_image::{
    is_index_media_type, BlobStore, BlobWriter, Descriptor, Digest, ImageConfig, Index, Manifest,
    Platform, StoredImage, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST,
};
use reqwest::StatusCode;

use crate::auth::scope;
use crate::client::{ManifestRecord, RegistryClient};
use crate::error::describe;
use crate::error::{io_err, Error, ProtocolError, Result};
use crate::progress::{SkipReason, TransferProgress};
use crate::reference::Reference;
use crate::transport::{status_error, Direction, Endpoint};

/// What kiln accepts when asking for a manifest.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

fn is_manifest_media_type(mt: &str) -> bool {
    mt == MT_OCI_MANIFEST || mt == MT_DOCKER_MANIFEST
}

fn platform_string(p: &Platform) -> String {
    p.to_string()
}

/// The media type of manifest JSON `bytes`: the declared one (`Content-Type` or the
/// `mediaType` field), else inferred from its shape. Schema 1 is an error.
pub fn classify(
    registry: &str,
    reference: &str,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::Protocol {
        registry: registry.to_string(),
        reason: ProtocolError::ManifestNotJson {
            reference: reference.to_string(),
            error: e,
        },
    })?;
    let declared = v.get("mediaType").and_then(|m| m.as_str());
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or_default().trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "text/plain");
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1)
        || ct.is_some_and(|c| c.starts_with("application/vnd.docker.distribution.manifest.v1"))
    {
        return Err(Error::Schema1 {
            registry: registry.to_string(),
            reference: reference.to_string(),
        });
    }
    let mt = match declared.or(ct) {
        Some(m) => m.to_string(),
        None if v.get("manifests").is_some() => MT_OCI_INDEX.to_string(),
        None if v.get("config").is_some() => MT_OCI_MANIFEST.to_string(),
        None => String::new(),
    };
    if is_manifest_media_type(&mt) || is_index_media_type(&mt) {
        Ok(mt)
    } else {
        Err(Error::UnsupportedMediaType {
            registry: registry.to_string(),
            what: format!("the manifest of {reference}"),
            media_type: mt,
        })
    }
}

/// Chooses the first index entry whose platform satisfies `wanted`.
pub fn select_platform(
    registry: &str,
    reference: &str,
    index: &Index,
    wanted: &Platform,
) -> Result<Descriptor> {
    index
        .manifests
        .iter()
        .find(|d| {
            is_manifest_media_type(&d.media_type)
                && d.platform.as_ref().is_some_and(|p| p.satisfies(wanted))
        })
        .cloned()
        .ok_or_else(|| Error::NoMatchingPlatform {
            registry: registry.to_string(),
            reference: reference.to_string(),
            wanted: platform_string(wanted),
            available: {
                let a: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(platform_string))
                    .collect();
                if a.is_empty() {
                    "none".into()
                } else {
                    a.join(", ")
                }
            },
        })
}

fn parse_json<T: serde::de::DeserializeOwned>(registry: &str, what: &str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Protocol {
        registry: registry.to_string(),
        reason: ProtocolError::InvalidDocument {
            what: what.to_string(),
            error: e,
        },
    })
}

/// The stored-image handle for a manifest whose config is in the store.
fn stored_image(
    store: &BlobStore,
    digest: &Digest,
    media_type: &str,
    size: u64,
    manifest: &Manifest,
) -> Result<StoredImage> {
    let config = ImageConfig::from_json(&store.read_bytes(&manifest.config.digest)?)?;
    let mut desc = Descriptor::new(media_type, digest.clone(), size);
    desc.platform = Some(Platform {
        architecture: config.architecture.clone(),
        os: config.os.clone(),
        os_version: config.os_version.clone(),
        os_features: Vec::new(),
        variant: config.variant.clone(),
    });
    Ok(StoredImage {
        manifest: desc,
        config_digest: manifest.config.digest.clone(),
    })
}

impl RegistryClient {
    /// Pulls `reference` for `platform` into `store` and returns the stored image, which
    /// [`kiln_image::load_image`] reads with `&image.manifest.digest`.
    ///
    /// Mirrors configured for the registry are tried first, then the registry itself.
    /// Blobs already in the store are not downloaded; a digest-pinned reference whose
    /// manifest (and blobs) are in the store needs no network at all.
    pub async fn pull(
        &self,
        store: &BlobStore,
        reference: &Reference,
        platform: &Platform,
        progress: &dyn TransferProgress,
    ) -> Result<StoredImage> {
        let mut r = reference.clone();
        r.registry = self.t.map_registry(&r.registry);
        if let Some(d) = &r.digest {
            if let Some(img) = self.local_image(store, &r, d, platform, progress)? {
                tracing::debug!(reference = %r, "pinned image found in the local store");
                return Ok(img);
            }
        }
        let mirrors = self
            .t
            .opts
            .mirrors
            .get(&r.registry)
            .cloned()
            .unwrap_or_default();
        for m in mirrors {
            match self.pull_from(store, &m, &r, platform, progress).await {
                Ok(img) => return Ok(img),
                Err(e) => {
                    tracing::warn!(mirror = %m, error = %e, "mirror failed; trying the next source")
                }
            }
        }
        let registry = r.registry.clone();
        self.pull_from(store, &registry, &r, platform, progress)
            .await
    }

    /// Resolves a pinned digest entirely from the store, or `None` if anything is missing.
    fn local_image(
        &self,
        store: &BlobStore,
        r: &Reference,
        digest: &Digest,
        platform: &Platform,
        progress: &dyn TransferProgress,
    ) -> Result<Option<StoredImage>> {
        let record = ManifestRecord::new(store);
        let mut digest = digest.clone();
        for _ in 0..2 {
            let Some(mt) = record.media_type(&digest) else {
                return Ok(None);
            };
            if !store.contains(&digest) {
                return Ok(None);
            }
            let bytes = store.read_bytes(&digest)?;
            if is_index_media_type(&mt) {
                let index: Index = parse_json(&r.registry, "the stored index", &bytes)?;
                digest = select_platform(&r.registry, &r.to_string(), &index, platform)?.digest;
                continue;
            }
            let m: Manifest = parse_json(&r.registry, "the stored manifest", &bytes)?;
            if !std::iter::once(&m.config)
                .chain(&m.layers)
                .all(|d| store.contains(&d.digest))
            {
                return Ok(None);
            }
            for d in std::iter::once(&m.config).chain(&m.layers) {
                progress.skipped(&d.digest, d.size, &SkipReason::InLocalStore);
            }
            return stored_image(store, &digest, &mt, bytes.len() as u64, &m).map(Some);
        }
        Ok(None)
    }

    async fn pull_from(
        &self,
        store: &BlobStore,
        registry: &str,
        r: &Reference,
        platform: &Platform,
        progress: &dyn TransferProgress,
    ) -> Result<StoredImage> {
        let ep = self.t.endpoint_for(registry, Direction::Pull).await?;
        let scopes = [scope(&r.repository, false)];
        let shown = r.to_string();
        let (mut digest, mut mt, mut bytes) = self
            .fetch_manifest(
                &ep,
                &scopes,
                store,
                &r.repository,
                &r.manifest_ref(),
                r.digest.as_ref(),
                &shown,
            )
            .await?;
        if is_index_media_type(&mt) {
            let index: Index = parse_json(registry, &format!("the index of {shown}"), &bytes)?;
            let chosen = select_platform(registry, &shown, &index, platform)?;
            (digest, mt, bytes) = self
                .fetch_manifest(
                    &ep,
                    &scopes,
                    store,
                    &r.repository,
                    chosen.digest.as_str(),
                    Some(&chosen.digest),
                    &shown,
                )
                .await?;
            if !is_manifest_media_type(&mt) {
                return Err(Error::UnsupportedMediaType {
                    registry: registry.to_string(),
                    what: format!("the {} image of {shown}", platform_string(platform)),
                    media_type: mt,
                });
            }
        }
        let manifest: Manifest = parse_json(registry, &format!("the manifest of {shown}"), &bytes)?;
        let blobs: Vec<&Descriptor> = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .collect();
        futures_util::stream::iter(blobs.iter().map(|d| async {
            if store.contains(&d.digest) {
                progress.skipped(&d.digest, d.size, &SkipReason::InLocalStore);
                Ok(())
            } else {
                self.download_blob(&ep, &scopes, store, &r.repository, d, progress)
                    .await
            }
        }))
        .buffer_unordered(self.t.opts.max_concurrent_transfers.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        for d in &blobs {
            self.remember(registry, &d.digest, &r.repository);
        }
        stored_image(store, &digest, &mt, bytes.len() as u64, &manifest)
    }

    /// GETs a manifest or index, verifies it (against `expected` if pinned, and the
    /// registry's `Docker-Content-Digest`), stores it and records its media type.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_manifest(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        store: &BlobStore,
        repository: &str,
        reference: &str,
        expected: Option<&Digest>,
        shown: &str,
    ) -> Result<(Digest, String, Vec<u8>)> {
        let url = ep.url(&format!("v2/{repository}/manifests/{reference}"))?;
        let what = format!("fetching the manifest of {shown}");
        let (ct, header_digest, bytes) = self
            .t
            .with_retries(&what, async || {
                let resp = self
                    .t
                    .send(ep, scopes, &what, &|c| {
                        Ok(c.get(url.clone()).header("Accept", ACCEPT))
                    })
                    .await?;
                if !resp.status().is_success() {
                    return Err(status_error(&ep.registry, &what, resp).await);
                }
                let ct = header_str(&resp, "content-type");
                let hd = header_str(&resp, "docker-content-digest");
                let body = resp.bytes().await.map_err(|e| Error::Connect {
                    registry: ep.registry.clone(),
                    what: what.clone(),
                    reason: describe(&e),
                })?;
                Ok((ct, hd, body.to_vec()))
            })
            .await?;
        let digest = Digest::sha256(&bytes);
        let mismatch = |exp: &str| Error::DigestMismatch {
            registry: ep.registry.clone(),
            what: format!("the manifest of {shown}"),
            expected: exp.to_string(),
            actual: digest.to_string(),
        };
        if let Some(e) = expected {
            if e != &digest {
                return Err(mismatch(e.as_str()));
            }
        } else if let Some(h) = header_digest
            .as_deref()
            .filter(|h| h.starts_with("sha256:"))
        {
            if h != digest.as_str() {
                return Err(mismatch(h));
            }
        }
        let mt = classify(&ep.registry, shown, ct.as_deref(), &bytes)?;
        store.put_bytes(&bytes)?;
        ManifestRecord::new(store).put(&digest, &mt)?;
        Ok((digest, mt, bytes))
    }

    /// Downloads one blob into the store, verifying its digest. A transfer that breaks
    /// is resumed with a `Range` request where the registry supports it.
    async fn download_blob(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        store: &BlobStore,
        repository: &str,
        d: &Descriptor,
        progress: &dyn TransferProgress,
    ) -> Result<()> {
        let url = ep.url(&format!("v2/{repository}/blobs/{}", d.digest))?;
        let what = format!("downloading blob {}", d.digest);
        progress.started(&d.digest, d.size);
        let mut writer: Option<BlobWriter> = None;
        self.t
            .with_retries(&what, async || {
                let start = writer.as_ref().map_or(0, BlobWriter::written);
                let resp = self
                    .t
                    .send(ep, scopes, &what, &|c| {
                        let mut req = c.get(url.clone());
                        if start > 0 {
                            req = req.header("Range", format!("bytes={start}-"));
                        }
                        Ok(req)
                    })
                    .await?;
                let status = resp.status();
                if status == StatusCode::OK || writer.is_none() {
                    if !status.is_success() {
                        return Err(status_error(&ep.registry, &what, resp).await);
                    }
                    writer = Some(store.writer()?);
                } else if status != StatusCode::PARTIAL_CONTENT {
                    return Err(status_error(&ep.registry, &what, resp).await);
                }
                let Some(w) = writer.as_mut() else {
                    return Err(Error::Protocol {
                        registry: ep.registry.clone(),
                        reason: ProtocolError::NoBlobWriter,
                    });
                };
                let mut stream = resp.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| Error::Connect {
                        registry: ep.registry.clone(),
                        what: what.clone(),
                        reason: describe(&e),
                    })?;
                    if w.written() + chunk.len() as u64 > d.size {
                        return Err(Error::Protocol {
                            registry: ep.registry.clone(),
                            reason: ProtocolError::BlobTooLarge {
                                digest: d.digest.clone(),
                                size: d.size,
                            },
                        });
                    }
                    // A buffered local-file write: short enough to do on the async task.
                    w.write_all(&chunk)
                        .map_err(io_err(format!("write blob {}", d.digest)))?;
                    progress.advanced(&d.digest, w.written(), d.size);
                }
                Ok(())
            })
            .await?;
        let Some(w) = writer else {
            return Err(Error::Protocol {
                registry: ep.registry.clone(),
                reason: ProtocolError::NoBlobWriter,
            });
        };
        let expected = d.digest.clone();
        let committed = tokio::task::spawn_blocking(move || w.commit_expecting(&expected))
            .await
            .map_err(|e| Error::Io {
                context: format!("commit blob {}", d.digest),
                source: std::io::Error::other(e.to_string()),
            })?;
        match committed {
            Ok(_) => {}
            Err(kiln_image::Error::DigestMismatch {
                expected, actual, ..
            }) => {
                return Err(Error::DigestMismatch {
                    registry: ep.registry.clone(),
                    what: format!("blob of {repository}"),
                    expected,
                    actual,
                })
            }
            Err(e) => return Err(e.into()),
        }
        progress.finished(&d.digest, d.size);
        Ok(())
    }
}

fn header_str(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::MT_DOCKER_MANIFEST_LIST;

    #[test]
    fn schema1_is_rejected_clearly() {
        let e = classify(
            "r.io",
            "r.io/a:1",
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            br#"{"schemaVersion":1,"name":"a"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "registry r.io: r.io/a:1 is a Docker image manifest v2 schema 1, which kiln does not support; re-push the image with a current client (schema 2 or OCI)"
        );
        assert!(matches!(
            classify("r", "x", None, br#"{"schemaVersion":1}"#),
            Err(Error::Schema1 { .. })
        ));
    }

    #[test]
    fn media_types_are_classified() {
        assert_eq!(
            classify(
                "r",
                "x",
                Some(MT_DOCKER_MANIFEST_LIST),
                br#"{"schemaVersion":2,"manifests":[]}"#
            )
            .unwrap(),
            MT_DOCKER_MANIFEST_LIST
        );
        assert_eq!(
            classify(
                "r",
                "x",
                Some("application/json"),
                br#"{"schemaVersion":2,"manifests":[]}"#
            )
            .unwrap(),
            MT_OCI_INDEX
        );
        assert_eq!(
            classify("r", "x", None, br#"{"schemaVersion":2,"config":{}}"#).unwrap(),
            MT_OCI_MANIFEST
        );
        let e = classify(
            "r",
            "x",
            Some("application/vnd.example+json"),
            br#"{"schemaVersion":2}"#,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "registry r: the manifest of x has unsupported media type \"application/vnd.example+json\"");
    }

    #[test]
    fn platforms_are_selected_from_an_index() {
        let d = |arch: &str, variant: Option<&str>, n: u8| {
            let mut x = Descriptor::new(MT_OCI_MANIFEST, Digest::sha256(&[n]), 1);
            x.platform = Some(Platform::new("linux", arch, variant));
            x
        };
        let index = Index {
            manifests: vec![
                d("amd64", None, 1),
                d("arm", Some("v7"), 2),
                d("arm64", None, 3),
            ],
            ..Index::default()
        };
        let pick = |p: Platform| select_platform("r", "x", &index, &p).map(|d| d.digest);
        assert_eq!(
            pick(Platform::new("linux", "amd64", None)).unwrap(),
            Digest::sha256(&[1])
        );
        assert_eq!(
            pick(Platform::new("linux", "arm64", Some("v8"))).unwrap(),
            Digest::sha256(&[3])
        );
        assert_eq!(
            pick(Platform::new("linux", "arm", Some("v7"))).unwrap(),
            Digest::sha256(&[2])
        );
        let e = pick(Platform::new("linux", "s390x", None)).unwrap_err();
        assert_eq!(e.to_string(), "registry r: x has no image for platform linux/s390x (available: linux/amd64, linux/arm/v7, linux/arm64)");
    }
}
