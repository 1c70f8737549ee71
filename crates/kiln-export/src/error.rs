//! The exporter's error type. Each variant carries the operator-facing wording
//! the CLI always printed, and keeps the failing I/O, JSON or registry error as
//! its source, so `error: …: cause` chains and the full-disk diagnosis (which
//! walks the chain for `ENOSPC`) read as before.

use std::path::PathBuf;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A `--tag`, `--destination` or `type=image,name=` value is not an image
    /// reference. Checked before anything is built or written.
    #[error("invalid image name {name:?}")]
    InvalidName {
        name: String,
        #[source]
        source: Box<kiln_registry::Error>,
    },
    /// No image reached the exporter.
    #[error("no image was built")]
    NothingBuilt,
    /// A multi-platform image was sent to an output that holds one image.
    #[error("{output} holds one image: build one --platform for it, or use type=oci / type=local")]
    OneImageOnly {
        /// The output, as [`crate::describe`] names it.
        output: String,
    },
    /// Reading a file or directory of an output failed.
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a result file or an output failed.
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The index blob could not be placed in an OCI layout.
    #[error("copying the index into {}", path.display())]
    CopyIndex {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An existing layout's `index.json` does not parse.
    #[error("{} is not an OCI index", path.display())]
    NotAnIndex {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// An index could not be serialised.
    #[error("serialising {what}")]
    Serialise {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The metadata file could not be serialised.
    #[error(transparent)]
    Metadata(serde_json::Error),
    /// Pushing a multi-platform index failed.
    #[error("pushing {reference}")]
    PushIndex {
        reference: String,
        #[source]
        source: Box<kiln_registry::Error>,
    },
    /// The blob store or one of kiln-image's writers failed.
    #[error(transparent)]
    Image(#[from] kiln_image::Error),
    /// One of kiln-build's output writers or its single-image push failed.
    #[error(transparent)]
    Build(#[from] kiln_build::BuildError),
}
