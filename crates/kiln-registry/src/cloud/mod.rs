//! Built-in cloud registry authentication, needing no credential helper binary: which
//! cloud registry a host is ([`CloudRegistry::detect`], or an explicit
//! [`crate::RegistryOptions::cloud_registries`] entry), and [`CloudAuth`], which gets
//! registry credentials from the cloud's own credential sources and caches them until
//! shortly before they expire.
//!
//! - ECR ([`ecr`]): AWS credentials through the standard chain, `GetAuthorizationToken`
//!   for the registry's region, used as Basic credentials `AWS:<token>`;
//! - GCR / Artifact Registry ([`gcr`]): an OAuth2 access token from
//!   `GOOGLE_APPLICATION_CREDENTIALS` or the metadata server, as Basic credentials
//!   `oauth2accesstoken:<token>`;
//! - ACR ([`acr`]): an Entra ID (AAD) token exchanged at the registry's
//!   `/oauth2/exchange` for a refresh token, used as an identity token.
//!
//! Explicit credentials and docker `config.json` entries always win over these; the
//! transport asks here only when neither has anything for the registry.

pub(crate) mod acr;
pub(crate) mod ecr;
pub(crate) mod gcr;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::credentials::Credential;
use crate::error::{CloudOverrideProblem, ConfigError, Error, Result};

/// A cloud registry kiln knows how to authenticate to by itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CloudRegistry {
    /// Amazon ECR (private) in `region`, owned by AWS account `account`.
    Ecr {
        account: String,
        region: String,
        /// Whether the registry is a FIPS endpoint (`dkr.ecr-fips`), so the ECR API is
        /// called at its FIPS endpoint too.
        fips: bool,
    },
    /// Google Container Registry or Artifact Registry.
    Gcr,
    /// Azure Container Registry.
    Acr,
}

impl CloudRegistry {
    /// Recognises a cloud registry from its host name (`host[:port]`):
    /// `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]` (and the dual-stack
    /// `<account>.dkr-ecr[-fips].<region>.on.aws`), `gcr.io` / `*.gcr.io` /
    /// `*-docker.pkg.dev`, `*.azurecr.io` (and the sovereign clouds' `azurecr.cn`,
    /// `azurecr.us`).
    pub fn detect(registry: &str) -> Option<CloudRegistry> {
        let host = strip_port(registry).to_ascii_lowercase();
        if let Some((account, region, fips)) = ecr::parse_host(&host) {
            return Some(CloudRegistry::Ecr {
                account,
                region,
                fips,
            });
        }
        if host == "gcr.io"
            || host.ends_with(".gcr.io")
            || host
                .strip_suffix("-docker.pkg.dev")
                .is_some_and(|region| !region.is_empty() && !region.contains('.'))
        {
            return Some(CloudRegistry::Gcr);
        }
        for suffix in [".azurecr.io", ".azurecr.cn", ".azurecr.us"] {
            if host
                .strip_suffix(suffix)
                .is_some_and(|name| !name.is_empty() && !name.contains('.'))
            {
                return Some(CloudRegistry::Acr);
            }
        }
        None
    }

    /// The provider's name in messages.
    pub fn provider(&self) -> &'static str {
        match self {
            CloudRegistry::Ecr { .. } => "ECR",
            CloudRegistry::Gcr => "GCR",
            CloudRegistry::Acr => "ACR",
        }
    }
}

/// Parses a cloud registry override as a command line gives it:
/// `HOST=ecr:ACCOUNT:REGION`, `HOST=ecr-fips:ACCOUNT:REGION`, `HOST=gcr` or `HOST=acr`.
/// Meant for registries reached under another name (a proxy, a private DNS name, a
/// test registry): kiln then authenticates to `HOST` as to that cloud registry.
pub fn parse_cloud_override(s: &str) -> Result<(String, CloudRegistry)> {
    let bad = |problem: CloudOverrideProblem| -> Error {
        ConfigError::CloudOverride {
            spec: s.to_string(),
            problem,
        }
        .into()
    };
    let (host, spec) = s
        .split_once('=')
        .ok_or_else(|| bad(CloudOverrideProblem::NoEquals))?;
    if host.is_empty() {
        return Err(bad(CloudOverrideProblem::EmptyHost));
    }
    let mut parts = spec.split(':');
    let kind = parts.next().unwrap_or_default().to_ascii_lowercase();
    let reg = match kind.as_str() {
        "ecr" | "ecr-fips" => {
            let (Some(account), Some(region), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad(CloudOverrideProblem::EcrNeedsAccountAndRegion));
            };
            if account.is_empty() || region.is_empty() {
                return Err(bad(CloudOverrideProblem::EcrNeedsAccountAndRegion));
            }
            CloudRegistry::Ecr {
                account: account.to_string(),
                region: region.to_string(),
                fips: kind == "ecr-fips",
            }
        }
        "gcr" if parts.next().is_none() => CloudRegistry::Gcr,
        "acr" if parts.next().is_none() => CloudRegistry::Acr,
        _ => return Err(bad(CloudOverrideProblem::UnknownProvider)),
    };
    Ok((host.to_string(), reg))
}

/// `host[:port]` → `host` (an IPv6 literal keeps its brackets).
fn strip_port(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry
            .find(']')
            .and_then(|i| registry.get(..=i))
            .unwrap_or(registry);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Credentials renew this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// How long to keep credentials whose reported expiry is already (nearly) past — clock
/// skew, or a test server with a fixed date: they are used, and asked for again soon.
const MIN_LIFETIME: Duration = Duration::from_secs(60);

/// When credentials expiring at `expires` (as the issuer says) should be renewed.
pub(crate) fn renew_at(expires: SystemTime, now: SystemTime) -> Instant {
    let remaining = expires.duration_since(now).unwrap_or_default();
    let keep = remaining.saturating_sub(REFRESH_MARGIN).max(MIN_LIFETIME);
    Instant::now() + keep
}

/// Why a cloud provider gave no registry credentials. Messages name the endpoint,
/// file or variable concerned and the HTTP status or OAuth2 error code, never a token,
/// key or response body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CloudError {
    #[error("cannot set up the cloud credentials HTTP client: {}", crate::error::describe(.error))]
    HttpClient { error: Arc<reqwest::Error> },
    #[error("cannot reach {url}: {}", crate::error::describe(.error))]
    Unreachable { url: String, error: reqwest::Error },
    #[error("{url}: {}", crate::error::describe(.error))]
    ReadBody { url: String, error: reqwest::Error },
    #[error("{url} refused the token request: HTTP {status}{}", .code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Refused {
        url: String,
        status: u16,
        /// The OAuth2 `error` code of the response, if it had one.
        code: Option<String>,
    },
    #[error("{url} returned something other than a token JSON")]
    NotTokenJson { url: String },
    #[error("{url} returned no {field}")]
    NoToken { url: String, field: &'static str },
    /// ACR: the registry's `/oauth2/exchange` refused the Entra ID token.
    #[error("the registry refused to exchange the Entra ID token: HTTP {status}")]
    ExchangeRefused { status: u16 },
    #[error("bad registry URL: {error}")]
    RegistryUrl { error: url::ParseError },
    #[error("bad instance metadata URL: {error}")]
    MetadataUrl { error: url::ParseError },
    #[error("cannot read AZURE_FEDERATED_TOKEN_FILE {path}: {error}")]
    FederatedTokenFile { path: String, error: std::io::Error },
    #[error("no service principal (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_CLIENT_SECRET) and no managed identity endpoint: {}", crate::error::describe(.error))]
    NoAzureIdentity { error: reqwest::Error },
    #[error("cannot read credentials file {}: {error}", .path.display())]
    ReadKeyFile {
        path: PathBuf,
        error: std::io::Error,
    },
    /// serde_json's message names a line and column, never the content.
    #[error("credentials file {} is not JSON: {error}", .path.display())]
    KeyFileNotJson {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("credentials file {} has type {kind:?}; kiln understands \"service_account\" and \"authorized_user\"", .path.display())]
    KeyFileType { path: PathBuf, kind: String },
    #[error("credentials file {}: {error}", .path.display())]
    Assertion {
        path: PathBuf,
        error: gcr::AssertionError,
    },
    #[error("no GOOGLE_APPLICATION_CREDENTIALS and the metadata server {host} is unreachable: {}", crate::error::describe(.error))]
    MetadataUnreachable { host: String, error: reqwest::Error },
    /// The SDK's error report flattened to one line: the SDK's error value holds the
    /// raw HTTP response, which kiln does not keep.
    #[error("GetAuthorizationToken in {region} failed: {detail}")]
    GetAuthorizationToken { region: String, detail: String },
    #[error("GetAuthorizationToken returned no authorization data")]
    NoAuthorizationData,
    #[error("GetAuthorizationToken returned no token")]
    NoAuthorizationToken,
    #[error(transparent)]
    EcrToken(#[from] ecr::TokenError),
}

/// Credentials obtained from a cloud provider, with when to renew them.
pub(crate) struct Issued {
    pub(crate) credential: Credential,
    pub(crate) renew_at: Instant,
}

/// Gets and caches cloud registry credentials (one entry per registry).
pub(crate) struct CloudAuth {
    /// Made at the first cloud registry: building a client loads the
    /// system's CA certificates, which a build that meets none should not pay.
    http: std::sync::OnceLock<std::result::Result<reqwest::Client, Arc<reqwest::Error>>>,
    ecr: ecr::Ecr,
    cache: tokio::sync::Mutex<HashMap<String, Issued>>,
    /// Why no credentials could be had for a registry, and when to try again.
    failures: std::sync::Mutex<HashMap<String, (Failure, Instant)>>,
}

impl CloudAuth {
    pub(crate) fn new() -> Result<Self> {
        Ok(CloudAuth {
            http: std::sync::OnceLock::new(),
            ecr: ecr::Ecr::default(),
            cache: Default::default(),
            failures: Default::default(),
        })
    }

    fn http(&self) -> std::result::Result<&reqwest::Client, CloudError> {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(Duration::from_secs(60))
                    .build()
                    .map_err(Arc::new)
            })
            .as_ref()
            .map_err(|error| CloudError::HttpClient {
                error: error.clone(),
            })
    }

    /// Credentials for `registry`, which is a `kind` cloud registry; `registry_http` and
    /// `registry_base` reach the registry itself (ACR's token exchange happens there).
    ///
    /// `None` when the provider has no credentials to give (not on that cloud, nothing
    /// configured, or its endpoint refused): kiln then goes on anonymously — public
    /// images on gcr.io must pull on any machine — and [`CloudAuth::failure`] says why,
    /// for the error should the registry insist. A failure is remembered for a minute.
    pub(crate) async fn credential(
        &self,
        registry: &str,
        kind: &CloudRegistry,
        registry_http: &reqwest::Client,
        registry_base: &url::Url,
    ) -> Option<Credential> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(registry).filter(|c| c.renew_at > Instant::now()) {
            return Some(c.credential.clone());
        }
        if let Some((_, retry)) = self.failed(registry) {
            if retry > Instant::now() {
                return None;
            }
        }
        let issued = match kind {
            CloudRegistry::Ecr {
                account,
                region,
                fips,
            } => self.ecr.credential(account, region, *fips).await,
            CloudRegistry::Gcr => match self.http() {
                Ok(http) => gcr::credential(http).await,
                Err(e) => Err(e),
            },
            CloudRegistry::Acr => match self.http() {
                Ok(http) => acr::credential(http, registry, registry_http, registry_base).await,
                Err(e) => Err(e),
            },
        };
        match issued {
            Ok(issued) => {
                tracing::debug!(
                    registry,
                    provider = kind.provider(),
                    "obtained cloud registry credentials"
                );
                lock(&self.failures).remove(registry);
                let c = issued.credential.clone();
                cache.insert(registry.to_string(), issued);
                Some(c)
            }
            Err(error) => {
                let failure = Failure {
                    provider: kind.provider(),
                    error: Arc::new(error),
                };
                tracing::debug!(registry, reason = %failure, "going on without cloud credentials");
                lock(&self.failures).insert(
                    registry.to_string(),
                    (failure, Instant::now() + MIN_LIFETIME),
                );
                None
            }
        }
    }

    fn failed(&self, registry: &str) -> Option<(Failure, Instant)> {
        lock(&self.failures).get(registry).cloned()
    }

    /// Why the last attempt to get credentials for `registry` failed, if it did.
    pub(crate) fn failure(&self, registry: &str) -> Option<Failure> {
        self.failed(registry).map(|(failure, _)| failure)
    }

    /// Drops the cached credentials for `registry` (the registry refused them).
    pub(crate) async fn forget(&self, registry: &str) {
        self.cache.lock().await.remove(registry);
    }
}

/// A remembered failure of built-in cloud auth, for the error should the registry
/// insist on credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[error("built-in {provider} auth got no credentials: {error}")]
pub struct Failure {
    provider: &'static str,
    error: Arc<CloudError>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads an environment variable, treating an empty value as unset.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A POST of `form` as `application/x-www-form-urlencoded` (reqwest's own `form` needs
/// a feature that would rebuild reqwest for one helper).
pub(crate) fn post_form<K: AsRef<str>, V: AsRef<str>>(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    form: &[(K, V)],
) -> reqwest::RequestBuilder {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in form {
        ser.append_pair(k.as_ref(), v.as_ref());
    }
    http.post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(ser.finish())
}

/// The `expires_in` seconds of an OAuth2 token response as an absolute time.
pub(crate) fn expires_in(secs: Option<u64>, default: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(secs.unwrap_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_recognised() {
        assert_eq!(
            CloudRegistry::detect("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some(CloudRegistry::Ecr {
                account: "123456789012".into(),
                region: "eu-west-1".into(),
                fips: false
            })
        );
        assert_eq!(
            CloudRegistry::detect("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com:443"),
            Some(CloudRegistry::Ecr {
                account: "123456789012".into(),
                region: "us-gov-west-1".into(),
                fips: true
            })
        );
        assert_eq!(
            CloudRegistry::detect("210987654321.DKR.ECR.cn-north-1.amazonaws.com.cn"),
            Some(CloudRegistry::Ecr {
                account: "210987654321".into(),
                region: "cn-north-1".into(),
                fips: false
            })
        );
        assert_eq!(
            CloudRegistry::detect("123456789012.dkr-ecr.ap-south-1.on.aws"),
            Some(CloudRegistry::Ecr {
                account: "123456789012".into(),
                region: "ap-south-1".into(),
                fips: false
            })
        );
        for gcr in [
            "gcr.io",
            "eu.gcr.io",
            "us-docker.pkg.dev",
            "europe-west1-docker.pkg.dev",
        ] {
            assert_eq!(
                CloudRegistry::detect(gcr),
                Some(CloudRegistry::Gcr),
                "{gcr}"
            );
        }
        for acr in [
            "myreg.azurecr.io",
            "myreg.azurecr.cn",
            "MyReg.azurecr.io:443",
        ] {
            assert_eq!(
                CloudRegistry::detect(acr),
                Some(CloudRegistry::Acr),
                "{acr}"
            );
        }
        for other in [
            "docker.io",
            "public.ecr.aws",
            "12345.dkr.ecr.eu-west-1.amazonaws.com", // not a 12-digit account
            "123456789012.dkr.ecr.amazonaws.com",    // no region
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example",
            "evil.example/123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "notgcr.io",
            "gcr.io.evil.example",
            "docker.pkg.dev",
            "-docker.pkg.dev",
            "a.b-docker.pkg.dev",
            "azurecr.io",
            "a.b.azurecr.io",
            "127.0.0.1:5000",
            "[::1]:5000",
        ] {
            assert_eq!(CloudRegistry::detect(other), None, "{other}");
        }
    }

    #[test]
    fn overrides_parse() {
        assert_eq!(
            parse_cloud_override("127.0.0.1:5000=ecr:123456789012:us-east-1").unwrap(),
            (
                "127.0.0.1:5000".to_string(),
                CloudRegistry::Ecr {
                    account: "123456789012".into(),
                    region: "us-east-1".into(),
                    fips: false
                }
            )
        );
        assert_eq!(
            parse_cloud_override("r.internal=GCR").unwrap(),
            ("r.internal".to_string(), CloudRegistry::Gcr)
        );
        assert_eq!(
            parse_cloud_override("r.internal=acr").unwrap(),
            ("r.internal".to_string(), CloudRegistry::Acr)
        );
        let e = parse_cloud_override("r=ecr:123").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid cloud registry override \"r=ecr:123\": ECR needs an account and a region (expected HOST=ecr:ACCOUNT:REGION, HOST=gcr or HOST=acr)"
        );
        assert!(parse_cloud_override("r").is_err());
        assert!(parse_cloud_override("=gcr").is_err());
        assert!(parse_cloud_override("r=gcr:x").is_err());
        assert!(parse_cloud_override("r=quay").is_err());
    }

    #[test]
    fn renewal_is_early_but_not_immediate() {
        let now = SystemTime::now();
        let t0 = Instant::now();
        let r = renew_at(now + Duration::from_secs(12 * 3600), now);
        let d = r.duration_since(t0);
        assert!(
            d >= Duration::from_secs(12 * 3600 - 5 * 60 - 1)
                && d <= Duration::from_secs(12 * 3600 - 5 * 60 + 1),
            "{d:?}"
        );
        // Already expired (skew, fixed-date test servers): kept one minute.
        let r = renew_at(now - Duration::from_secs(3600), now);
        let d = r.duration_since(t0);
        assert!(
            d >= Duration::from_secs(59) && d <= Duration::from_secs(61),
            "{d:?}"
        );
    }
}
