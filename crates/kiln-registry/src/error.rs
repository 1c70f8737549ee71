//! The crate's error type, [`Error`], and the typed reasons its variants carry (one
//! enum per family: [`ConfigError`], [`AuthError`], [`ProtocolError`],
//! [`HelperError`]; reference syntax in [`crate::ReferenceError`]). Every message
//! names the registry, file or reference it concerns and never contains a credential or
//! token (those live in [`crate::Secret`], whose `Debug`/`Display` print `***`).
//!
//! A reason is shown in its variant's message rather than returned as `source()`: the
//! CLI prints the whole chain, which would repeat it.

use std::path::PathBuf;
use std::time::Duration;

use kiln_image::Digest;

pub use crate::cloud::Failure as CloudAuthFailure;

/// Errors from reference parsing, registry transfers, authentication and configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image reference could not be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        reference: String,
        reason: ReferenceError,
    },
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
    /// Authentication was refused or could not be performed; `cloud` says why built-in
    /// cloud auth had nothing to offer, when it was tried.
    #[error("registry {registry}: authentication failed: {reason}{}", .cloud.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Unauthorized {
        registry: String,
        reason: AuthError,
        cloud: Option<CloudAuthFailure>,
    },
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
    Protocol {
        registry: String,
        reason: ProtocolError,
    },
    /// A docker credential helper failed.
    #[error("credential helper docker-credential-{helper} for {registry}: {reason}")]
    CredentialHelper {
        helper: String,
        registry: String,
        reason: HelperError,
    },
    /// Configuration (options, CA files, docker config.json) is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
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

/// Why authentication to a registry failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token server {realm} refused the {} (HTTP {status})", if *.with_credentials { "credentials" } else { "anonymous request" })]
    TokenServerRefused {
        realm: String,
        with_credentials: bool,
        status: u16,
    },
    #[error("the registry answered 401 without a usable WWW-Authenticate challenge")]
    NoChallenge,
    #[error("the registry requires credentials and none are configured for it")]
    CredentialsRequired,
    #[error("the registry refused the credentials")]
    CredentialsRefused,
    #[error("the registry refused the token it was given for {what}")]
    TokenRefused { what: String },
}

/// How a `docker-credential-*` helper failed. Its output is never included: a
/// misbehaving helper could print a secret.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot run it: {error}")]
    Spawn { error: std::io::Error },
    #[error("cannot write to it: {error}")]
    Write { error: std::io::Error },
    #[error("it failed: {error}")]
    Wait { error: std::io::Error },
    #[error("it exited with {status}")]
    Exited { status: std::process::ExitStatus },
    #[error("it printed something other than the expected JSON")]
    BadOutput,
}

/// How a registry (or its token server) broke the distribution spec.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("token realm {realm:?} is not a URL: {error}")]
    TokenRealmNotUrl {
        realm: String,
        error: url::ParseError,
    },
    #[error("the token server {realm} returned something other than a token JSON")]
    TokenNotJson { realm: String },
    #[error("the token server {realm} returned no token")]
    NoToken { realm: String },
    #[error("upload response has no Location header")]
    NoUploadLocation,
    #[error("upload Location {location:?} is not a URL: {error}")]
    UploadLocationNotUrl {
        location: String,
        error: url::ParseError,
    },
    #[error("the manifest of {reference} is not JSON: {error}")]
    ManifestNotJson {
        reference: String,
        error: serde_json::Error,
    },
    /// A manifest, index or config that is JSON but not of the expected shape.
    #[error("{what} is not valid: {error}")]
    InvalidDocument {
        what: String,
        error: serde_json::Error,
    },
    #[error("blob {digest} is larger than the {size} bytes its descriptor says")]
    BlobTooLarge { digest: Digest, size: u64 },
    /// A blob download that ended without opening a writer (a bug, not the registry).
    #[error("internal: no blob writer")]
    NoBlobWriter,
    #[error("bad URL path {path:?}: {error}")]
    BadUrlPath {
        path: String,
        error: url::ParseError,
    },
}

/// Unusable configuration: command-line options, TLS material, the docker
/// `config.json`, or local content kiln was asked to push. Messages name the file,
/// registry or image concerned, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The docker `config.json` exists but cannot be read.
    #[error("cannot read docker config {}: {error}", .path.display())]
    ReadDockerConfig {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The docker `config.json` is not valid JSON of the expected shape (serde_json's
    /// message names a line and column, never the content).
    #[error("invalid docker config {}: {error}", .path.display())]
    InvalidDockerConfig {
        path: PathBuf,
        error: serde_json::Error,
    },
    /// A docker `config.json` `auth` entry that is not base64. `config` is the file as
    /// displayed (empty when not read from a file).
    #[error("docker config {config}: the \"auth\" entry for {registry} is not valid base64")]
    AuthNotBase64 { config: String, registry: String },
    /// A docker `config.json` `auth` entry that does not decode to UTF-8.
    #[error("docker config {config}: the \"auth\" entry for {registry} is not UTF-8")]
    AuthNotUtf8 { config: String, registry: String },
    /// A docker `config.json` `auth` entry without the `:` of `user:password`.
    #[error("docker config {config}: the \"auth\" entry for {registry} is not \"user:password\"")]
    AuthNotUserPassword { config: String, registry: String },
    /// A docker `config.json` entry with no usable credentials at all.
    #[error("docker config {config}: the entry for {registry} has neither \"auth\", \"username\"/\"password\" nor \"identitytoken\"")]
    EntryWithoutCredentials { config: String, registry: String },
    /// A `--cloud-registry` override does not parse.
    #[error("invalid cloud registry override {spec:?}: {problem} (expected HOST=ecr:ACCOUNT:REGION, HOST=gcr or HOST=acr)")]
    CloudOverride {
        spec: String,
        problem: CloudOverrideProblem,
    },
    /// A `--registry-client-cert` value is not `HOST=CERT,KEY`.
    #[error("--registry-client-cert {spec}: expected HOST=/path/to/cert.pem,/path/to/key.pem")]
    ClientCertFlag { spec: String },
    /// A CA file, client certificate or client key cannot be read.
    #[error("registry {registry}: cannot read {what} {}: {error}", .path.display())]
    ReadTlsFile {
        registry: String,
        /// `CA file`, `client certificate` or `client key`.
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// A `certs.d` client certificate without its `.key` file.
    #[error("registry {registry}: client certificate {} has no key {} beside it", .cert.display(), .key.display())]
    MissingClientKey {
        registry: String,
        cert: PathBuf,
        key: PathBuf,
    },
    /// A CA file is not PEM.
    #[error("registry {registry}: CA file {} is not a PEM bundle: {error}", .path.display())]
    CaNotPem {
        registry: String,
        path: PathBuf,
        error: reqwest::Error,
    },
    /// A client certificate and key that do not make an identity.
    #[error("registry {registry}: client certificate {} with key {} is not usable (PEM certificate and PEM private key expected): {}", .cert.display(), .key.display(), describe(.error))]
    ClientCertUnusable {
        registry: String,
        cert: PathBuf,
        key: PathBuf,
        error: reqwest::Error,
    },
    /// The HTTP client for a registry cannot be built.
    #[error("registry {registry}: cannot set up HTTP client: {}", describe(.error))]
    HttpClient {
        registry: String,
        error: reqwest::Error,
    },
    /// A registry name that does not make a URL.
    #[error("registry {registry}: not a valid host: {error}")]
    InvalidHost {
        registry: String,
        error: url::ParseError,
    },
    /// A manifest in the local store is not valid JSON of a manifest.
    #[error("manifest {digest} in the local store is not valid: {error}")]
    InvalidLocalManifest {
        digest: Digest,
        error: serde_json::Error,
    },
    /// An image pushed under a digest reference that is not its own.
    #[error("cannot push {manifest} as {dest}: its manifest digest is {manifest}")]
    ManifestDigestMismatch { manifest: Digest, dest: String },
    /// An index in the local store is not valid JSON of an index.
    #[error("index {digest} in the local store is not valid: {error}")]
    InvalidLocalIndex {
        digest: Digest,
        error: serde_json::Error,
    },
    /// The images given to push with an index are not the ones it lists.
    #[error("index {digest} does not list the images given to push with it")]
    IndexImagesMismatch { digest: Digest },
    /// An index pushed under a digest reference that is not its own.
    #[error("cannot push index {index} as {dest}")]
    IndexDigestMismatch { index: Digest, dest: String },
}

/// What is wrong with a `--cloud-registry` override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CloudOverrideProblem {
    #[error("no '='")]
    NoEquals,
    #[error("empty host")]
    EmptyHost,
    #[error("ECR needs an account and a region")]
    EcrNeedsAccountAndRegion,
    #[error("unknown provider")]
    UnknownProvider,
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

/// Why a string is not an image reference. `Display` is the reason part of
/// [`Error::InvalidReference`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty reference")]
    Empty,
    #[error("the digest must be \"sha256:\" followed by 64 lowercase hex digits")]
    Digest,
    #[error("missing repository name")]
    MissingRepository,
    #[error("name longer than 255 characters")]
    TooLong,
    #[error("registry host {host:?} has an unclosed '['")]
    UnclosedBracket { host: String },
    #[error("registry host {host:?} is not a valid IPv6 literal")]
    InvalidIpv6 { host: String },
    #[error("registry host {host:?}: unexpected text after ']'")]
    TextAfterBracket { host: String },
    #[error("registry host {host:?} is not a valid host name")]
    InvalidHost { host: String },
    #[error("registry port {port:?} is not a number from 0 to 65535")]
    InvalidPort { port: String },
    #[error("empty path component in repository name")]
    EmptyComponent,
    #[error("repository name {repository:?} must be lowercase")]
    Uppercase { repository: String },
    #[error("repository name {repository:?} contains {character:?}; allowed are a-z, 0-9 and the separators . _ __ -")]
    ForbiddenCharacter { repository: String, character: char },
    #[error("repository name {repository:?}: separator {separator:?} must sit between letters or digits")]
    MisplacedSeparator {
        repository: String,
        separator: String,
    },
    #[error(
        "tag {tag:?} must be 1 to 128 characters of A-Z a-z 0-9 _ . - and not start with . or -"
    )]
    InvalidTag { tag: String },
}
