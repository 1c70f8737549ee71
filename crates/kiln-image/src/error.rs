//! The crate's single error type: every fallible kiln-image operation returns [`Error`].

use std::path::PathBuf;

/// Errors from the image model, the content store, layer writing/extraction and outputs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed; `context` says what kiln was doing and on which path.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A string is not a valid `sha256:<64 lowercase hex>` digest.
    #[error("invalid digest {0:?}: expected \"sha256:\" followed by 64 lowercase hex digits")]
    InvalidDigest(String),
    /// Content did not hash to the digest it was stored or referenced under.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A blob is not in the content store.
    #[error("blob {0} not found in the content store")]
    BlobNotFound(String),
    /// JSON (config, manifest, index) could not be parsed or produced.
    #[error("invalid JSON in {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A layer entry list is unusable (duplicate paths, bad names, dangling hardlinks…).
    #[error("invalid layer entry {path:?}: {reason}")]
    InvalidEntry { path: String, reason: String },
    /// A layer tar tried to write outside the destination, or is otherwise malformed.
    #[error("unsafe or malformed layer entry {path:?}: {reason}")]
    UnsafeEntry { path: String, reason: String },
    /// A file being streamed into a layer changed size while it was read.
    #[error(
        "file {path} changed while building the layer: expected {expected} bytes, read {actual}"
    )]
    FileChanged {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// An OCI layout / archive / manifest is not usable (missing index, no matching image…).
    #[error("{0}")]
    Image(String),
}

/// Result alias for kiln-image.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a human-readable context to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context().into(),
            source,
        })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::Io {
            context: context().into(),
            source: e.into(),
        })
    }
}
