//! Registry glue for the build: resolving `FROM` / `COPY --from` image
//! references by pulling them, and pushing the built image, with transfer
//! progress in words an operator reads (bytes, rate, what was skipped).
//!
//! The build runs on plain threads; registry I/O is async, so this module
//! owns the hop onto the tokio runtime.

use crate::progress::human_bytes;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use kiln_image::{BlobStore, Digest, Platform, StoredImage};
use kiln_registry::{Reference, RegistryClient, SkipReason, TransferProgress};

use crate::executor::ImageResolver;
use crate::progress::Progress;
use crate::BuildError;

/// Reports blob transfers through the build's progress sink.
pub struct TransferReport<'a> {
    progress: &'a dyn Progress,
    verb: &'static str,
    started: Mutex<Vec<(Digest, Instant)>>,
    bytes: AtomicU64,
    transferred: AtomicUsize,
    skipped: AtomicUsize,
    skipped_bytes: AtomicU64,
}

impl<'a> TransferReport<'a> {
    pub fn new(progress: &'a dyn Progress, verb: &'static str) -> Self {
        TransferReport {
            progress,
            verb,
            started: Mutex::new(Vec::new()),
            bytes: AtomicU64::new(0),
            transferred: AtomicUsize::new(0),
            skipped: AtomicUsize::new(0),
            skipped_bytes: AtomicU64::new(0),
        }
    }

    /// One line: what moved and what did not need to.
    pub fn summary(&self) -> String {
        format!(
            "{} {} blob(s), {}; {} blob(s) ({}) already present",
            self.verb,
            self.transferred.load(Ordering::Relaxed),
            human_bytes(self.bytes.load(Ordering::Relaxed)),
            self.skipped.load(Ordering::Relaxed),
            human_bytes(self.skipped_bytes.load(Ordering::Relaxed)),
        )
    }
}

fn short(d: &Digest) -> &str {
    let hex = d.hex();
    &hex[..hex.len().min(12)]
}

impl TransferProgress for TransferReport<'_> {
    fn started(&self, digest: &Digest, _total: u64) {
        if let Ok(mut s) = self.started.lock() {
            s.push((digest.clone(), Instant::now()));
        }
    }

    fn finished(&self, digest: &Digest, total: u64) {
        let elapsed = self
            .started
            .lock()
            .ok()
            .and_then(|s| {
                s.iter()
                    .rev()
                    .find(|(d, _)| d == digest)
                    .map(|(_, t)| t.elapsed())
            })
            .unwrap_or_default();
        self.bytes.fetch_add(total, Ordering::Relaxed);
        self.transferred.fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64().max(0.001);
        self.progress.info(&format!(
            "{} {} {} in {:.2}s ({}/s)",
            self.verb,
            short(digest),
            human_bytes(total),
            secs,
            human_bytes((total as f64 / secs) as u64)
        ));
    }

    fn skipped(&self, digest: &Digest, size: u64, why: &SkipReason) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        self.skipped_bytes.fetch_add(size, Ordering::Relaxed);
        let why = match why {
            SkipReason::InLocalStore => "already in the local store".to_string(),
            SkipReason::ExistsInRegistry => "already in the registry".to_string(),
            SkipReason::Mounted { from } => format!("mounted from {from}"),
        };
        tracing::debug!(blob = %digest, "{why}");
    }
}

/// Resolves registry references by pulling them.
pub struct RegistryImages<'a> {
    pub client: &'a RegistryClient,
    pub runtime: tokio::runtime::Handle,
    pub progress: &'a dyn Progress,
}

impl ImageResolver for RegistryImages<'_> {
    fn resolve(
        &self,
        store: &BlobStore,
        reference: &str,
        platform: &Platform,
    ) -> Result<Option<StoredImage>, BuildError> {
        if let Some(found) = crate::executor::LocalImages.resolve(store, reference, platform)? {
            return Ok(Some(found));
        }
        let parsed: Reference = reference
            .parse()
            .map_err(|e| BuildError::Registry(Box::new(e)))?;
        let report = TransferReport::new(self.progress, "pulled");
        self.progress.info(&format!("pulling {parsed}"));
        let t = Instant::now();
        let stored = self
            .runtime
            .block_on(self.client.pull(store, &parsed, platform, &report))
            .map_err(|source| BuildError::Transfer {
                action: "pulling",
                reference: parsed.to_string(),
                source: Box::new(source),
            })?;
        self.progress.info(&format!(
            "{parsed}: {} in {:.2}s",
            report.summary(),
            t.elapsed().as_secs_f64()
        ));
        Ok(Some(stored))
    }
}

/// Pushes a stored image to every destination; returns the manifest
/// digest the registry confirmed.
pub fn push_all(
    client: &RegistryClient,
    runtime: &tokio::runtime::Handle,
    store: &BlobStore,
    image: &StoredImage,
    destinations: &[String],
    progress: &dyn Progress,
) -> Result<Vec<(String, Digest)>, BuildError> {
    let mut pushed = Vec::new();
    for dest in destinations {
        let parsed: Reference = dest.parse().map_err(|source| BuildError::BadDestination {
            reference: dest.clone(),
            source: Box::new(source),
        })?;
        let report = TransferReport::new(progress, "pushed");
        let t = Instant::now();
        progress.info(&format!("pushing {parsed}"));
        let digest = runtime
            .block_on(client.push(store, image, &parsed, &report))
            .map_err(|source| BuildError::Transfer {
                action: "pushing",
                reference: parsed.to_string(),
                source: Box::new(source),
            })?;
        progress.info(&format!(
            "pushed {parsed}@{digest}: {} in {:.2}s",
            report.summary(),
            t.elapsed().as_secs_f64()
        ));
        pushed.push((parsed.to_string(), digest));
    }
    Ok(pushed)
}

/// Runs `build` while a background thread uploads each layer it announces
/// to every destination's repository, so uploads overlap the steps that
/// follow; the final push then only confirms the blobs and puts the
/// manifest. Upload failures here are only logged: the final push retries
/// and reports them. With no destinations, `build` gets no callback.
pub fn with_early_uploads<R>(
    client: &RegistryClient,
    runtime: &tokio::runtime::Handle,
    store: &BlobStore,
    destinations: &[String],
    build: impl FnOnce(Option<&(dyn Fn(&kiln_image::Layer) + Sync)>) -> R,
) -> R {
    let refs: Vec<Reference> = destinations.iter().filter_map(|d| d.parse().ok()).collect();
    if refs.is_empty() {
        return build(None);
    }
    let (tx, rx) = std::sync::mpsc::channel::<kiln_image::Layer>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for layer in rx {
                let blob = kiln_image::Descriptor::new(
                    layer.media_type.clone(),
                    layer.digest.clone(),
                    layer.size,
                );
                for r in &refs {
                    let sent = runtime.block_on(client.upload_blob(
                        store,
                        r,
                        &blob,
                        &kiln_registry::NoProgress,
                    ));
                    if let Err(e) = sent {
                        tracing::debug!("early upload of {} to {r} failed: {e}", layer.digest);
                    }
                }
            }
        });
        let announce = |layer: &kiln_image::Layer| {
            let _ = tx.send(layer.clone());
        };
        let out = build(Some(&announce));
        // Closing the channel lets the uploader finish what is queued; the
        // scope waits for it.
        drop(tx);
        out
    })
}

#[cfg(test)]
mod tests {
    use crate::progress::human_bytes;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 kB");
        assert_eq!(human_bytes(2_000_000), "2.0 MB");
    }
}
