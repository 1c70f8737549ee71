//! Result files: `--iidfile`/`--digest-file` (the digest), Kaniko's
//! `--image-name-with-digest-file` and `--image-name-tag-with-digest-file` (one
//! line per destination), and `--metadata-file` (BuildKit's JSON). Their
//! contents are pure functions of the [`ExportReport`]; each file is written
//! atomically (a temporary name, then a rename).

use std::path::{Path, PathBuf};

use kiln_image::Digest;

use crate::names::{repository_of, with_tag};
use crate::{ExportError, ExportReport};

/// Where the result files go; `None` writes no such file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultFiles {
    /// The image (manifest or index) digest.
    pub digest: Option<PathBuf>,
    /// BuildKit-style JSON metadata.
    pub metadata: Option<PathBuf>,
    /// `repository@digest`, one line per pushed destination.
    pub image_name_with_digest: Option<PathBuf>,
    /// `repository:tag@digest`, one line per pushed destination.
    pub image_name_tag_with_digest: Option<PathBuf>,
}

/// Kaniko's `--image-name-with-digest-file`: `repository@digest` per destination.
pub fn names_with_digest(destinations: &[String], digest: &Digest) -> String {
    destinations
        .iter()
        .map(|dest| format!("{}@{digest}\n", repository_of(dest)))
        .collect()
}

/// Kaniko's `--image-name-tag-with-digest-file`: `repository:tag@digest` per
/// destination (`latest` when the name has no tag).
pub fn name_tags_with_digest(destinations: &[String], digest: &Digest) -> String {
    destinations
        .iter()
        .map(|dest| format!("{}@{digest}\n", with_tag(dest)))
        .collect()
}

/// `--metadata-file`: the image's digest and descriptor, its config digest (one
/// platform), the names it was tagged with and where it was pushed.
pub fn metadata(report: &ExportReport, tags: &[String]) -> serde_json::Value {
    let mut meta = serde_json::json!({
        "containerimage.digest": report.descriptor.digest.to_string(),
        "containerimage.descriptor": report.descriptor,
        "image.name": tags.join(","),
        "pushed": report.pushed.iter().map(|(n, d)| format!("{n}@{d}")).collect::<Vec<_>>(),
    });
    if let (Some(c), Some(m)) = (&report.config, meta.as_object_mut()) {
        m.insert("containerimage.config.digest".into(), c.to_string().into());
    }
    meta
}

/// Writes every requested result file.
pub(crate) fn write_all(
    files: &ResultFiles,
    report: &ExportReport,
    tags: &[String],
    push_to: &[String],
) -> Result<(), ExportError> {
    let digest = &report.descriptor.digest;
    if let Some(path) = &files.digest {
        write_file(path, digest.to_string().as_bytes())?;
    }
    if let Some(path) = &files.image_name_with_digest {
        write_file(path, names_with_digest(push_to, digest).as_bytes())?;
    }
    if let Some(path) = &files.image_name_tag_with_digest {
        write_file(path, name_tags_with_digest(push_to, digest).as_bytes())?;
    }
    if let Some(path) = &files.metadata {
        let text =
            serde_json::to_string_pretty(&metadata(report, tags)).map_err(ExportError::Metadata)?;
        write_file(path, text.as_bytes())?;
    }
    Ok(())
}

/// Writes a small file atomically: `PATH.kiln-tmp`, then a rename over `path`.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(|source| ExportError::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| ExportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// `PATH.kiln-tmp`: where a file is written before it is renamed into place.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".kiln-tmp");
    PathBuf::from(tmp)
}
