//! HTTP transport to registries: [`RegistryOptions`], one reqwest client per registry
//! host and direction (pull or push: `insecure_pull` relaxes only the former) with that
//! host's TLS material (CA bundles, client certificate, Docker's `certs.d` directory, or
//! no verification), plain-HTTP selection for loopback and insecure registries,
//! authenticated requests (challenge → Basic or Bearer, refresh on 401) and retries with
//! exponential backoff.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use url::Url;

use crate::auth::{self, Challenge, TokenCache};
use crate::cloud::{CloudAuth, CloudRegistry};
use crate::credentials::{default_docker_config_path, Credential, CredentialStore};
use crate::error::describe;
use crate::error::{AuthError, ConfigError, Error, ProtocolError, Result};
use crate::reference::api_host;
use crate::secret::Secret;

/// How a [`crate::RegistryClient`] reaches registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`, as written in references) spoken to over plain HTTP,
    /// or over TLS without certificate verification when they do speak TLS.
    /// Loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`) may always use plain HTTP.
    pub insecure: Vec<String>,
    /// Extra CA bundles (PEM) trusted for a registry `host[:port]`.
    pub ca_files: HashMap<String, PathBuf>,
    /// TLS client certificates (mutual TLS) per registry `host[:port]`; they take
    /// precedence over a `client.cert` found in [`Self::certs_dirs`].
    pub client_certs: HashMap<String, ClientCert>,
    /// Docker's per-registry certificate directories: for a registry `R`, every
    /// `DIR/R/*.crt` is a trusted CA bundle and `DIR/R/NAME.cert` with `DIR/R/NAME.key`
    /// is a client certificate. Default: `/etc/docker/certs.d` and `~/.docker/certs.d`.
    pub certs_dirs: Vec<PathBuf>,
    /// Pull from every registry over plain HTTP or unverified TLS when it does not speak
    /// verified TLS (Kaniko's `--insecure-pull` / `--skip-tls-verify-pull`). Pushes are
    /// not affected.
    pub insecure_pull: bool,
    /// Pull mirrors per registry (`docker.io` → `["mirror.example:5000"]`), tried in
    /// order before the registry itself.
    pub mirrors: HashMap<String, Vec<String>>,
    /// Rewrites a registry name to another before anything else (`--registry-map`).
    pub registry_map: HashMap<String, String>,
    /// Credentials given explicitly, per registry; they take precedence over docker's
    /// `config.json`.
    pub credentials: HashMap<String, Credential>,
    /// Built-in cloud registry authentication (ECR, GCR / Artifact Registry, ACR) for
    /// registries that have neither explicit nor `config.json` credentials. On by
    /// default.
    pub cloud_auth: bool,
    /// Registries (`host[:port]`) to authenticate to as the given cloud registry,
    /// besides those recognised by host name ([`CloudRegistry::detect`](crate::CloudRegistry::detect)): for a
    /// registry reached through a proxy or private DNS name, and for tests. See
    /// [`crate::parse_cloud_override`] for the command-line form.
    pub cloud_registries: HashMap<String, CloudRegistry>,
    /// The docker `config.json` to read; `None` means `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// Blobs transferred at once.
    pub max_concurrent_transfers: usize,
    /// Blobs larger than this are uploaded in chunks of this size (PATCH), smaller ones
    /// in one PUT.
    pub chunk_size: u64,
    /// Retries after a 5xx, a 429 or a connection error.
    pub max_retries: u32,
    /// First retry delay; doubled on each further retry (capped at 30 s).
    pub retry_base_delay: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            ca_files: HashMap::new(),
            client_certs: HashMap::new(),
            certs_dirs: default_certs_dirs(),
            insecure_pull: false,
            mirrors: HashMap::new(),
            registry_map: HashMap::new(),
            credentials: HashMap::new(),
            docker_config: None,
            cloud_auth: true,
            cloud_registries: HashMap::new(),
            max_concurrent_transfers: 4,
            chunk_size: 64 << 20,
            max_retries: 4,
            retry_base_delay: Duration::from_millis(300),
        }
    }
}

/// A TLS client certificate and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientCert {
    /// Parses the command-line form `HOST=CERT,KEY` (Kaniko's `--registry-client-cert`).
    pub fn parse_flag(spec: &str) -> Result<(String, ClientCert)> {
        let bad = || -> Error {
            ConfigError::ClientCertFlag {
                spec: spec.to_string(),
            }
            .into()
        };
        let (host, files) = spec.split_once('=').ok_or_else(bad)?;
        let (cert, key) = files.split_once(',').ok_or_else(bad)?;
        if host.is_empty() || cert.is_empty() || key.is_empty() || key.contains(',') {
            return Err(bad());
        }
        Ok((
            host.to_string(),
            ClientCert {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            },
        ))
    }
}

/// `/etc/docker/certs.d` and `~/.docker/certs.d` (Docker reads the first; the second
/// is where an unprivileged user can put them).
pub fn default_certs_dirs() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/etc/docker/certs.d")];
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        v.push(PathBuf::from(home).join(".docker").join("certs.d"));
    }
    v
}

/// Which way a connection goes: `insecure_pull` relaxes only pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Direction {
    Pull,
    Push,
}

/// The TLS material for one registry: CA bundles (PEM bytes, with where they came
/// from) and a client identity.
#[derive(Default)]
struct TlsMaterial {
    cas: Vec<(PathBuf, Vec<u8>)>,
    identity: Option<ClientCert>,
}

fn read_file(registry: &str, what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| {
        ConfigError::ReadTlsFile {
            registry: registry.to_string(),
            what,
            path: path.to_path_buf(),
            error,
        }
        .into()
    })
}

/// Whether `host[:port]` names a loopback address.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        registry.split(':').next().unwrap_or_default()
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A registry host as spoken to: its base URL and HTTP client.
pub(crate) struct Endpoint {
    /// The registry name (for credentials, token cache and messages).
    pub(crate) registry: String,
    pub(crate) base: Url,
    pub(crate) http: reqwest::Client,
    /// Whether the client presents a TLS client certificate.
    pub(crate) client_cert: bool,
}

impl Endpoint {
    pub(crate) fn url(&self, path: &str) -> Result<Url> {
        self.base.join(path).map_err(|e| Error::Protocol {
            registry: self.registry.clone(),
            reason: ProtocolError::BadUrlPath {
                path: path.to_string(),
                error: e,
            },
        })
    }
}

/// Shared state: clients per host, auth challenges, tokens, credentials.
pub(crate) struct Transport {
    pub(crate) opts: RegistryOptions,
    creds: CredentialStore,
    endpoints: tokio::sync::Mutex<HashMap<(String, bool), Arc<Endpoint>>>,
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: Mutex<TokenCache>,
    cred_cache: tokio::sync::Mutex<HashMap<String, Option<Credential>>>,
    cloud: CloudAuth,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Transport {
    pub(crate) fn new(opts: RegistryOptions) -> Result<Self> {
        let path = opts
            .docker_config
            .clone()
            .or_else(default_docker_config_path);
        let creds = CredentialStore::load(path.as_deref())?;
        Ok(Transport {
            opts,
            creds,
            endpoints: Default::default(),
            challenges: Default::default(),
            tokens: Default::default(),
            cred_cache: Default::default(),
            cloud: CloudAuth::new()?,
        })
    }

    /// The registry name after `registry_map` rewriting.
    pub(crate) fn map_registry(&self, registry: &str) -> String {
        self.opts
            .registry_map
            .get(registry)
            .cloned()
            .unwrap_or_else(|| registry.to_string())
    }

    /// Whether `registry` may be spoken to without verified TLS in `dir`.
    fn relaxed(&self, registry: &str, dir: Direction) -> bool {
        self.opts.insecure.iter().any(|h| h == registry)
            || (dir == Direction::Pull && self.opts.insecure_pull)
    }

    /// The registry's CA bundles and client certificate: `certs_dirs` first, then the
    /// explicit options (an explicit client certificate wins).
    fn tls_material(&self, registry: &str) -> Result<TlsMaterial> {
        let mut m = TlsMaterial::default();
        for dir in &self.opts.certs_dirs {
            let host_dir = dir.join(registry);
            let Ok(entries) = std::fs::read_dir(&host_dir) else {
                continue;
            };
            let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            for p in names {
                match p.extension().and_then(|e| e.to_str()) {
                    Some("crt") => {
                        let pem = read_file(registry, "CA file", &p)?;
                        m.cas.push((p, pem));
                    }
                    Some("cert") if m.identity.is_none() => {
                        let key = p.with_extension("key");
                        if !key.is_file() {
                            return Err(ConfigError::MissingClientKey {
                                registry: registry.to_string(),
                                cert: p,
                                key,
                            }
                            .into());
                        }
                        m.identity = Some(ClientCert { cert: p, key });
                    }
                    _ => {}
                }
            }
        }
        if let Some(ca) = self.opts.ca_files.get(registry) {
            let pem = read_file(registry, "CA file", ca)?;
            m.cas.push((ca.clone(), pem));
        }
        if let Some(c) = self.opts.client_certs.get(registry) {
            m.identity = Some(c.clone());
        }
        Ok(m)
    }

    /// The HTTP client for `registry`, and whether it presents a client certificate.
    fn build_client(&self, registry: &str, relaxed: bool) -> Result<(reqwest::Client, bool)> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120));
        if relaxed {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        let tls = self.tls_material(registry)?;
        for (path, pem) in &tls.cas {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|error| {
                ConfigError::CaNotPem {
                    registry: registry.to_string(),
                    path: path.clone(),
                    error,
                }
            })?;
            b = b.tls_certs_merge(certs);
        }
        if let Some(c) = &tls.identity {
            let mut pem = read_file(registry, "client certificate", &c.cert)?;
            pem.push(b'\n');
            pem.extend(read_file(registry, "client key", &c.key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|error| {
                ConfigError::ClientCertUnusable {
                    registry: registry.to_string(),
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                    error,
                }
            })?;
            b = b.identity(id);
        }
        let client = b.build().map_err(|error| ConfigError::HttpClient {
            registry: registry.to_string(),
            error,
        })?;
        Ok((client, tls.identity.is_some()))
    }

    /// The endpoint for pushing to `registry` (already mapped).
    pub(crate) async fn endpoint(&self, registry: &str) -> Result<Arc<Endpoint>> {
        self.endpoint_for(registry, Direction::Push).await
    }

    /// The endpoint for `registry` (already mapped) in direction `dir`, choosing HTTPS,
    /// or plain HTTP for a loopback / insecure registry that does not speak TLS.
    pub(crate) async fn endpoint_for(
        &self,
        registry: &str,
        dir: Direction,
    ) -> Result<Arc<Endpoint>> {
        let relaxed = self.relaxed(registry, dir);
        let key = (registry.to_string(), relaxed);
        let mut eps = self.endpoints.lock().await;
        if let Some(ep) = eps.get(&key) {
            return Ok(ep.clone());
        }
        let (http, client_cert) = self.build_client(registry, relaxed)?;
        let host = api_host(registry);
        let https =
            Url::parse(&format!("https://{host}/")).map_err(|error| ConfigError::InvalidHost {
                registry: registry.to_string(),
                error,
            })?;
        let base = if relaxed || is_loopback(registry) {
            // Docker's rule: try TLS first, fall back to plain HTTP.
            let probe = http
                .get(https.join("v2/").unwrap_or_else(|_| https.clone()))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match probe {
                Ok(_) => https,
                Err(e) => {
                    let plain = Url::parse(&format!("http://{host}/")).map_err(|error| {
                        ConfigError::InvalidHost {
                            registry: registry.to_string(),
                            error,
                        }
                    })?;
                    if speaks_plain_http(&http, &plain).await {
                        tracing::debug!(registry, error = %describe(&e), "TLS probe failed; using plain HTTP");
                        plain
                    } else {
                        // It speaks TLS (or nothing): keep HTTPS so the real TLS error
                        // (unknown CA, client certificate required, …) is what the user sees.
                        tracing::debug!(registry, error = %describe(&e), "TLS probe failed and plain HTTP is not served");
                        https
                    }
                }
            }
        } else {
            https
        };
        let ep = Arc::new(Endpoint {
            registry: registry.to_string(),
            base,
            http,
            client_cert,
        });
        eps.insert(key, ep.clone());
        Ok(ep)
    }

    /// The cloud registry `registry` is, if built-in cloud auth applies to it.
    fn cloud_kind(&self, registry: &str) -> Option<CloudRegistry> {
        if !self.opts.cloud_auth {
            return None;
        }
        self.opts
            .cloud_registries
            .get(registry)
            .cloned()
            .or_else(|| CloudRegistry::detect(registry))
    }

    /// Credentials for `registry`: explicit ones, then docker `config.json`, then the
    /// built-in cloud providers for a cloud registry; `None` means anonymous.
    async fn credential(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(c) = self.opts.credentials.get(registry) {
            return Ok(Some(c.clone()));
        }
        let stored = {
            let mut cache = self.cred_cache.lock().await;
            match cache.get(registry) {
                Some(c) => c.clone(),
                None => {
                    let c = self.creds.lookup(registry).await?;
                    cache.insert(registry.to_string(), c.clone());
                    c
                }
            }
        };
        if stored.is_some() {
            return Ok(stored);
        }
        let Some(kind) = self.cloud_kind(registry) else {
            return Ok(None);
        };
        let ep = self.endpoint(registry).await?;
        Ok(self
            .cloud
            .credential(registry, &kind, &ep.http, &ep.base)
            .await)
    }

    /// The `Authorization` value for a request to `ep` needing `scopes`, if the
    /// registry asked for authentication before.
    async fn auth_header(&self, ep: &Endpoint, scopes: &[String]) -> Result<Option<Secret>> {
        let challenge = lock(&self.challenges).get(&ep.registry).cloned();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(match self.credential(&ep.registry).await? {
                Some(Credential::Basic { username, password }) => {
                    Some(auth::basic_header(&username, &password))
                }
                _ => None,
            }),
            Some(Challenge::Bearer { realm, service }) => {
                if let Some(t) = lock(&self.tokens).get(&ep.registry, scopes) {
                    return Ok(Some(Secret::new(format!("Bearer {}", t.expose()))));
                }
                let cred = self.credential(&ep.registry).await?;
                let token = auth::fetch_token(
                    &ep.http,
                    &ep.registry,
                    &realm,
                    service.as_deref(),
                    scopes,
                    cred.as_ref(),
                )
                .await
                .map_err(|e| match (e, &cred) {
                    (
                        Error::Unauthorized {
                            registry, reason, ..
                        },
                        None,
                    ) => Error::Unauthorized {
                        cloud: self.cloud.failure(&registry),
                        reason,
                        registry,
                    },
                    (e, _) => e,
                })?;
                let header = Secret::new(format!("Bearer {}", token.value.expose()));
                lock(&self.tokens).put(&ep.registry, scopes, token);
                Ok(Some(header))
            }
        }
    }

    /// Sends the request `mk` builds, authenticating as the registry demands: on a 401
    /// the challenge is recorded (and a stale token dropped) and the request rebuilt
    /// and sent once more. Returns the response whatever its status, except a final 401.
    pub(crate) async fn send(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        what: &str,
        mk: &(dyn Fn(&reqwest::Client) -> Result<RequestBuilder> + Sync),
    ) -> Result<Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = mk(&ep.http)?;
            let header = self.auth_header(ep, scopes).await?;
            if let Some(h) = &header {
                req = req.header(reqwest::header::AUTHORIZATION, h.expose());
            }
            tracing::debug!(registry = %ep.registry, what, "request");
            let resp = req.send().await.map_err(|e| connect_error(ep, what, &e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge);
            lock(&self.tokens).forget(&ep.registry, scopes);
            if header.is_some() {
                // Cloud credentials the registry refused are not used again.
                self.cloud.forget(&ep.registry).await;
            }
            let had_creds = self.credential(&ep.registry).await?.is_some();
            if attempt >= 2 || challenge.is_none() {
                let (reason, cloud) = match (&challenge, had_creds, header.is_some()) {
                    (None, _, _) => (AuthError::NoChallenge, None),
                    (Some(Challenge::Basic), false, _) => (
                        AuthError::CredentialsRequired,
                        self.cloud.failure(&ep.registry),
                    ),
                    (Some(Challenge::Basic), true, _) => (AuthError::CredentialsRefused, None),
                    (Some(Challenge::Bearer { .. }), _, _) => (
                        AuthError::TokenRefused {
                            what: what.to_string(),
                        },
                        None,
                    ),
                };
                return Err(Error::Unauthorized {
                    registry: ep.registry.clone(),
                    reason,
                    cloud,
                });
            }
            if let Some(c) = challenge {
                lock(&self.challenges).insert(ep.registry.clone(), c);
            }
        }
    }

    /// Runs `op` again after a retryable failure (5xx, 429, connection error), waiting
    /// `retry_base_delay · 2^n` or the registry's `Retry-After`.
    pub(crate) async fn with_retries<T>(
        &self,
        what: &str,
        mut op: impl AsyncFnMut() -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 0u32;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let Some(after) = e.retry_hint() else {
                        return Err(e);
                    };
                    if attempt >= self.opts.max_retries {
                        return Err(e);
                    }
                    let backoff = self
                        .opts
                        .retry_base_delay
                        .saturating_mul(1u32 << attempt.min(16))
                        .min(Duration::from_secs(30));
                    let wait = after.map_or(backoff, |a| a.min(Duration::from_secs(60)));
                    tracing::info!(what, error = %e, wait_ms = wait.as_millis() as u64, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// The error for a request that got no response: a TLS failure (not retried, with what
/// to do about it) or a connection failure (retried).
pub(crate) fn connect_error(ep: &Endpoint, what: &str, e: &reqwest::Error) -> Error {
    let registry = ep.registry.as_str();
    let reason = describe(e);
    // A server that wants a certificate the client did not send answers
    // `certificate_required` (TLS 1.3) or `bad_certificate` (some servers, TLS 1.2).
    let refused_cert = reason.contains("BadCertificate") || reason.contains("bad certificate");
    let hint = if reason.contains("CertificateRequired")
        || reason.contains("certificate required")
        || (refused_cert && !ep.client_cert)
    {
        Some(format!(
            "the registry requires a TLS client certificate: give one with --registry-client-cert {registry}=CERT,KEY or put client.cert and client.key in /etc/docker/certs.d/{registry}/"
        ))
    } else if refused_cert {
        Some("the registry refused the TLS client certificate".to_string())
    } else if reason.contains("invalid peer certificate") {
        Some(format!(
            "the registry's TLS certificate is not trusted: give its CA with --registry-certificate {registry}=CA.pem or in /etc/docker/certs.d/{registry}/ca.crt, or mark the registry insecure"
        ))
    } else if reason.contains("received fatal alert") {
        Some("the registry refused the TLS handshake".to_string())
    } else {
        None
    };
    match hint {
        Some(hint) => Error::Tls {
            registry: registry.to_string(),
            what: what.to_string(),
            reason: format!("{hint} ({reason})"),
        },
        None => Error::Connect {
            registry: registry.to_string(),
            what: what.to_string(),
            reason,
        },
    }
}

/// Whether the server at `base` answers plain HTTP as a registry would, and not with
/// the 400 a TLS server gives a plain HTTP request.
async fn speaks_plain_http(http: &reqwest::Client, base: &Url) -> bool {
    let Ok(url) = base.join("v2/") else {
        return false;
    };
    match http.get(url).timeout(Duration::from_secs(10)).send().await {
        Ok(resp) if resp.status() == StatusCode::BAD_REQUEST => {
            let body = resp.bytes().await.unwrap_or_default();
            !String::from_utf8_lossy(&body).contains("HTTPS")
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

/// Turns a non-success response into [`Error::Status`], with the registry's error
/// message (from the distribution error JSON) and `Retry-After`.
pub(crate) async fn status_error(registry: &str, what: &str, resp: Response) -> Error {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.bytes().await.unwrap_or_default();
    Error::Status {
        registry: registry.to_string(),
        what: what.to_string(),
        status,
        message: error_message(&body),
        retry_after,
    }
}

/// `CODE: message` pairs of a distribution error body, or nothing.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) => e
            .errors
            .iter()
            .map(|i| format!("{}: {}", i.code, i.message))
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "[2001:db8::1]:443",
            "localhost.example",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn registry_errors_are_summarised() {
        assert_eq!(
            error_message(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(error_message(b"<html>"), "");
    }
}
