//! The crate's single error type. Every message names the registry it concerns and
//! never contains a credential or token (those live in [`crate::Secret`], whose
//! `Debug`/`Display` print `***`).

use std::time::Duration;

/// Errors from reference parsing, registry transfers, authentication and configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image reference could not be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// The registry could not be reached (DNS, connect, TLS, dropped connection).
    #[error("registry {registry}: cannot reach {what}: {reason}")]
    Connect {
        registry: String,
        what: String,
        reason: String,
    },
    /// TLS with the registry failed in a way retrying cannot fix (untrusted
    /// certificate, client certificate required or refused).
    #[error("registry {registry}: TLS failed for {what}: {reason}")]
    Tls {
        registry: String,
        what: String,
        reason: String,
    },
    /// The registry answered with an unexpected HTTP status.
    #[error("registry {registry}: {what} failed: HTTP {status}{}", fmt_msg(.message))]
    Status {
        registry: String,
        what: String,
        status: u16,
        message: String,
        /// How long the registry asked us to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },
    /// Authentication was refused or could not be performed.
    #[error("registry {registry}: authentication failed: {reason}")]
    Unauthorized { registry: String, reason: String },
    /// The registry returned a Docker v2 schema 1 manifest, which kiln does not support.
    #[error("registry {registry}: {reference} is a Docker image manifest v2 schema 1, which kiln does not support; re-push the image with a current client (schema 2 or OCI)")]
    Schema1 { registry: String, reference: String },
    /// A manifest or index had a media type kiln cannot use.
    #[error("registry {registry}: {what} has unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        registry: String,
        what: String,
        media_type: String,
    },
    /// No image in an index matches the requested platform.
    #[error("registry {registry}: {reference} has no image for platform {wanted} (available: {available})")]
    NoMatchingPlatform {
        registry: String,
        reference: String,
        wanted: String,
        available: String,
    },
    /// Content did not hash to the digest it was fetched or pushed under.
    #[error("registry {registry}: digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        registry: String,
        what: String,
        expected: String,
        actual: String,
    },
    /// The registry returned something that does not follow the distribution spec.
    #[error("registry {registry}: {reason}")]
    Protocol { registry: String, reason: String },
    /// A docker credential helper failed.
    #[error("credential helper docker-credential-{helper} for {registry}: {reason}")]
    CredentialHelper {
        helper: String,
        registry: String,
        reason: String,
    },
    /// Configuration (options, CA files, docker config.json) is unusable.
    #[error("{0}")]
    Config(String),
    /// The local content store failed.
    #[error(transparent)]
    Image(#[from] kiln_image::Error),
    /// A local I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn fmt_msg(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

impl Error {
    /// Whether retrying the operation may help, and how long the registry asked to wait.
    pub(crate) fn retry_hint(&self) -> Option<Option<Duration>> {
        match self {
            Error::Connect { .. } => Some(None),
            Error::Status {
                status,
                retry_after,
                ..
            } if *status == 429 || *status >= 500 => Some(*retry_after),
            _ => None,
        }
    }
}

/// Result alias for kiln-registry.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A reqwest error with its whole cause chain (they carry no credentials: kiln never
/// puts secrets in URLs).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}
