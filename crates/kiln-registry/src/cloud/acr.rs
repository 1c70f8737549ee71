//! Azure Container Registry: an Entra ID (AAD) access token — from a service principal
//! (`AZURE_CLIENT_ID` + `AZURE_TENANT_ID` + `AZURE_CLIENT_SECRET`), AKS workload
//! identity (`AZURE_FEDERATED_TOKEN_FILE` + client and tenant), or the managed identity
//! of the VM (instance metadata; `AZURE_CLIENT_ID` picks a user-assigned identity) — is
//! exchanged at the registry's `POST /oauth2/exchange` for an ACR refresh token, which the
//! registry's Bearer flow then uses as an identity token.
//!
//! `AZURE_AUTHORITY_HOST` overrides the login endpoint (sovereign clouds), as the Azure
//! SDKs do. Hand-written over reqwest: two form POSTs and a GET do not justify the Azure
//! SDK's second HTTP stack.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{env, post_form, renew_at, CloudError, Issued};
use crate::credentials::Credential;
use crate::secret::Secret;

/// The audience of the AAD token ACR exchanges (Azure Resource Manager).
const ARM_SCOPE: &str = "https://management.azure.com/.default";
const ARM_RESOURCE: &str = "https://management.azure.com/";
const IMDS_TOKEN_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// ACR refresh tokens are valid for three hours.
const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(3 * 3600);

#[derive(Deserialize)]
struct AadToken {
    #[serde(default)]
    access_token: Secret,
}

#[derive(Deserialize)]
struct Exchanged {
    #[serde(default)]
    refresh_token: Secret,
}

/// Gets an ACR refresh token for `registry`, whose API is at `base` via `registry_http`.
pub(crate) async fn credential(
    http: &reqwest::Client,
    registry: &str,
    registry_http: &reqwest::Client,
    base: &url::Url,
) -> Result<Issued, CloudError> {
    let tenant = env("AZURE_TENANT_ID");
    let aad = aad_token(http, tenant.as_deref()).await?;
    let url = base
        .join("oauth2/exchange")
        .map_err(|error| CloudError::RegistryUrl { error })?;
    let service = registry.split(':').next().unwrap_or(registry);
    let mut form = vec![
        ("grant_type", "access_token"),
        ("service", service),
        ("access_token", aad.expose()),
    ];
    if let Some(t) = tenant.as_deref() {
        form.push(("tenant", t));
    }
    let resp = post_form(registry_http, url.clone(), &form)
        .send()
        .await
        .map_err(|error| CloudError::Unreachable {
            url: url.to_string(),
            error,
        })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(CloudError::ExchangeRefused {
            status: status.as_u16(),
        });
    }
    let body = resp.bytes().await.map_err(|error| CloudError::ReadBody {
        url: url.to_string(),
        error,
    })?;
    let ex: Exchanged = serde_json::from_slice(&body).map_err(|_| CloudError::NotTokenJson {
        url: url.to_string(),
    })?;
    if ex.refresh_token.is_empty() {
        return Err(CloudError::NoToken {
            url: url.to_string(),
            field: "refresh_token",
        });
    }
    let now = SystemTime::now();
    Ok(Issued {
        credential: Credential::IdentityToken(ex.refresh_token),
        renew_at: renew_at(now + REFRESH_TOKEN_LIFETIME, now),
    })
}

/// An Entra ID access token for Azure Resource Manager.
async fn aad_token(http: &reqwest::Client, tenant: Option<&str>) -> Result<Secret, CloudError> {
    let client_id = env("AZURE_CLIENT_ID");
    let authority =
        env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| "https://login.microsoftonline.com".into());
    let authority = authority.trim_end_matches('/');
    let form_grant = match (&client_id, tenant) {
        (Some(id), Some(_)) => {
            if let Some(secret) = env("AZURE_CLIENT_SECRET") {
                Some(vec![
                    ("grant_type", "client_credentials".to_string()),
                    ("client_id", id.clone()),
                    ("client_secret", secret),
                    ("scope", ARM_SCOPE.to_string()),
                ])
            } else if let Some(file) = env("AZURE_FEDERATED_TOKEN_FILE") {
                let assertion = std::fs::read_to_string(&file).map_err(|error| {
                    CloudError::FederatedTokenFile {
                        path: file.clone(),
                        error,
                    }
                })?;
                Some(vec![
                    ("grant_type", "client_credentials".to_string()),
                    ("client_id", id.clone()),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
                    ),
                    ("client_assertion", assertion.trim().to_string()),
                    ("scope", ARM_SCOPE.to_string()),
                ])
            } else {
                None
            }
        }
        _ => None,
    };
    let (resp, what) = match (form_grant, tenant) {
        (Some(form), Some(tenant)) => {
            let url = format!("{authority}/{tenant}/oauth2/v2.0/token");
            let r = post_form(http, &url, &form).send().await.map_err(|error| {
                CloudError::Unreachable {
                    url: url.clone(),
                    error,
                }
            })?;
            (r, url)
        }
        _ => {
            let mut url = url::Url::parse(IMDS_TOKEN_URL)
                .map_err(|error| CloudError::MetadataUrl { error })?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("api-version", "2018-02-01")
                    .append_pair("resource", ARM_RESOURCE);
                if let Some(id) = client_id.as_deref() {
                    q.append_pair("client_id", id);
                }
            }
            let r = http
                .get(url)
                .header("Metadata", "true")
                .send()
                .await
                .map_err(|error| CloudError::NoAzureIdentity { error })?;
            (r, IMDS_TOKEN_URL.to_string())
        }
    };
    let status = resp.status();
    if !status.is_success() {
        return Err(CloudError::Refused {
            url: what,
            status: status.as_u16(),
            code: None,
        });
    }
    let body = resp.bytes().await.map_err(|error| CloudError::ReadBody {
        url: what.clone(),
        error,
    })?;
    let t: AadToken = serde_json::from_slice(&body)
        .map_err(|_| CloudError::NotTokenJson { url: what.clone() })?;
    if t.access_token.is_empty() {
        return Err(CloudError::NoToken {
            url: what,
            field: "access_token",
        });
    }
    // The AAD token is only exchanged, never cached: its expiry does not matter here.
    Ok(t.access_token)
}
