//! Pushes: one image to every destination (kiln-build's `push_all`, which the
//! registry cache export shares), or a multi-platform index with every
//! platform's image, through the kiln-registry client on the build's I/O
//! runtime, with transfer progress in operator words.

use std::time::Instant;

use kiln_build::registry::TransferReport;
use kiln_image::{Descriptor, Digest, StoredImage};
use kiln_registry::Reference;

use crate::{ExportEnv, ExportError};

/// Pushes one image to every destination; returns each name and the digest the
/// registry confirmed.
pub(crate) fn push_image(
    env: &ExportEnv<'_>,
    image: &StoredImage,
    destinations: &[String],
) -> Result<Vec<(String, Digest)>, ExportError> {
    Ok(kiln_build::registry::push_all(
        env.registry,
        env.runtime,
        env.store,
        image,
        destinations,
        env.progress,
    )?)
}

/// Pushes a multi-platform image (`index` over `images`) to `dest`; returns the
/// name and the index digest.
pub(crate) fn push_index(
    env: &ExportEnv<'_>,
    index: &Descriptor,
    images: &[StoredImage],
    dest: &Reference,
) -> Result<(String, Digest), ExportError> {
    let progress = env.progress;
    let report = TransferReport::new(progress, "pushed");
    let t = Instant::now();
    progress.info(&format!("pushing {dest} ({} platforms)", images.len()));
    let digest = env
        .runtime
        .block_on(
            env.registry
                .push_index(env.store, index, images, dest, &report),
        )
        .map_err(|source| ExportError::PushIndex {
            reference: dest.to_string(),
            source: Box::new(source),
        })?;
    progress.info(&format!(
        "pushed {dest}@{digest}: {} in {:.2}s",
        report.summary(),
        t.elapsed().as_secs_f64()
    ));
    Ok((dest.to_string(), digest))
}
