//! Google Container Registry / Artifact Registry: an OAuth2 access token, used as the
//! password of the user `oauth2accesstoken`. Sources, first found wins:
//!
//! 1. `GOOGLE_APPLICATION_CREDENTIALS` naming a service account key (a JWT signed with
//!    its key, exchanged at the key file's `token_uri`) or an `authorized_user` file
//!    (its refresh token exchanged at `token_uri`);
//! 2. gcloud's application default credentials file
//!    (`$CLOUDSDK_CONFIG/application_default_credentials.json`, else
//!    `~/.config/gcloud/…`), same two kinds;
//! 3. the metadata server (`GCE_METADATA_HOST`, else `metadata.google.internal`), as on
//!    GCE, GKE (workload identity) and Cloud Run.
//!
//! Hand-written over HTTP (reqwest): the Google auth crates pull in a second HTTP and
//! TLS stack for three small requests; the JWT is signed with `jsonwebtoken`.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::{env, expires_in, post_form, renew_at, CloudError, Issued};
use crate::credentials::Credential;
use crate::secret::Secret;

/// The registry user name an access token goes with.
pub(crate) const USERNAME: &str = "oauth2accesstoken";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// A credentials file: a service account key or gcloud's `authorized_user`.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    client_email: String,
    #[serde(default)]
    private_key: Secret,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: Secret,
    #[serde(default)]
    refresh_token: Secret,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: Secret,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthError {
    #[serde(default)]
    error: String,
}

/// Why a service account key cannot sign the token request. jsonwebtoken's errors
/// describe the key's format, never its content.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AssertionError {
    #[error("the service account key has no client_email or private_key")]
    MissingKey,
    #[error("the service account private_key is unusable: {0}")]
    UnusableKey(jsonwebtoken::errors::Error),
    #[error("cannot sign the token request: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// Gets an access token and wraps it as registry credentials.
pub(crate) async fn credential(http: &reqwest::Client) -> Result<Issued, CloudError> {
    let (token, expires) = match key_file() {
        Some(path) => from_key_file(http, &path).await?,
        None => from_metadata(http).await?,
    };
    Ok(Issued {
        credential: Credential::Basic {
            username: USERNAME.to_string(),
            password: token,
        },
        renew_at: renew_at(expires, SystemTime::now()),
    })
}

/// The credentials file to use, if any.
fn key_file() -> Option<PathBuf> {
    if let Some(p) = env("GOOGLE_APPLICATION_CREDENTIALS") {
        return Some(PathBuf::from(p));
    }
    let dir = env("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config").join("gcloud")))?;
    let adc = dir.join("application_default_credentials.json");
    adc.is_file().then_some(adc)
}

async fn from_key_file(
    http: &reqwest::Client,
    path: &std::path::Path,
) -> Result<(Secret, SystemTime), CloudError> {
    let bytes = std::fs::read(path).map_err(|error| CloudError::ReadKeyFile {
        path: path.to_path_buf(),
        error,
    })?;
    // serde_json's errors name a line and column, never the content.
    let key: KeyFile =
        serde_json::from_slice(&bytes).map_err(|error| CloudError::KeyFileNotJson {
            path: path.to_path_buf(),
            error,
        })?;
    let token_uri = key
        .token_uri
        .clone()
        .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
    let form: Vec<(&str, String)> = match key.kind.as_str() {
        "service_account" => {
            let assertion =
                sign_assertion(&key, &token_uri).map_err(|error| CloudError::Assertion {
                    path: path.to_path_buf(),
                    error,
                })?;
            vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string(),
                ),
                ("assertion", assertion),
            ]
        }
        "authorized_user" => vec![
            ("grant_type", "refresh_token".to_string()),
            ("client_id", key.client_id.clone()),
            ("client_secret", key.client_secret.expose().to_string()),
            ("refresh_token", key.refresh_token.expose().to_string()),
        ],
        other => {
            return Err(CloudError::KeyFileType {
                path: path.to_path_buf(),
                kind: other.to_string(),
            })
        }
    };
    let resp = post_form(http, &token_uri, &form)
        .send()
        .await
        .map_err(|error| CloudError::Unreachable {
            url: token_uri.clone(),
            error,
        })?;
    token_response(resp, &token_uri).await
}

/// A signed JWT asserting the service account, for the OAuth2 JWT-bearer grant.
fn sign_assertion(key: &KeyFile, token_uri: &str) -> Result<String, AssertionError> {
    if key.client_email.is_empty() || key.private_key.is_empty() {
        return Err(AssertionError::MissingKey);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let claims = serde_json::json!({
        "iss": key.client_email,
        "scope": SCOPE,
        "aud": token_uri,
        "iat": now,
        "exp": now + 3600,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = key.private_key_id.clone();
    // jsonwebtoken's errors describe the key's format, never its content.
    let enc = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.expose().as_bytes())
        .map_err(AssertionError::UnusableKey)?;
    jsonwebtoken::encode(&header, &claims, &enc).map_err(AssertionError::Sign)
}

async fn from_metadata(http: &reqwest::Client) -> Result<(Secret, SystemTime), CloudError> {
    let host = env("GCE_METADATA_HOST").unwrap_or_else(|| "metadata.google.internal".into());
    let url = format!("http://{host}{METADATA_TOKEN_PATH}");
    let resp = http
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .map_err(|error| CloudError::MetadataUnreachable {
            host: host.clone(),
            error,
        })?;
    token_response(resp, &url).await
}

/// Reads an OAuth2 token response; errors carry the status and the OAuth2 `error` code
/// only, never the body.
async fn token_response(
    resp: reqwest::Response,
    url: &str,
) -> Result<(Secret, SystemTime), CloudError> {
    let status = resp.status();
    let body = resp.bytes().await.map_err(|error| CloudError::ReadBody {
        url: url.to_string(),
        error,
    })?;
    if !status.is_success() {
        let code = serde_json::from_slice::<OAuthError>(&body)
            .map(|e| e.error)
            .ok()
            .filter(|c| !c.is_empty());
        return Err(CloudError::Refused {
            url: url.to_string(),
            status: status.as_u16(),
            code,
        });
    }
    let t: TokenResponse = serde_json::from_slice(&body).map_err(|_| CloudError::NotTokenJson {
        url: url.to_string(),
    })?;
    if t.access_token.is_empty() {
        return Err(CloudError::NoToken {
            url: url.to_string(),
            field: "access_token",
        });
    }
    Ok((t.access_token, expires_in(t.expires_in, 3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_never_print_secrets() {
        let k: KeyFile = serde_json::from_str(
            r#"{"type":"authorized_user","client_id":"c","client_secret":"cs-Unique-1","refresh_token":"rt-Unique-2"}"#,
        )
        .unwrap();
        assert_eq!(k.client_secret.expose(), "cs-Unique-1");
        let shown = format!("{:?} {:?}", k.client_secret, k.refresh_token);
        assert_eq!(shown, "*** ***");
        let e = sign_assertion(&k, DEFAULT_TOKEN_URI)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the service account key has no client_email or private_key"
        );
    }
}
