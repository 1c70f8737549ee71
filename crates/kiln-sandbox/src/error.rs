//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while running a step or reading its changes.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A filesystem or process operation on the host failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The sandbox could not be set up (namespaces, mounts, credentials, exec).
    /// The command did not run (or did not start).
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    /// No isolation mode works on this machine.
    #[error("no isolation mode is available: {0}")]
    Unavailable(String),
    /// A spec field is not usable.
    #[error("invalid run spec: {0}")]
    InvalidSpec(String),
    /// A path in the upper dir cannot be represented in a layer.
    #[error("path {0:?} in the overlay upper dir is not valid UTF-8")]
    NonUtf8Path(PathBuf),
    /// The sandbox init sent something that is not part of the protocol.
    #[error("sandbox init protocol error: {0}")]
    Protocol(String),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Attaches a human-readable context to `std::io` errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| SandboxError::Io {
            context: what(),
            source,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| SandboxError::Io {
            context: what(),
            source: std::io::Error::from(e),
        })
    }
}
