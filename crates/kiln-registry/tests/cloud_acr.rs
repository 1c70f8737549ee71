//! ACR built-in auth: a service principal's Entra ID token (from a login endpoint in
//! this test, reached through `AZURE_AUTHORITY_HOST`) is exchanged at the registry's
//! `/oauth2/exchange` for a refresh token, which the registry's Bearer flow turns into
//! an access token. The "registry" is a small server in this test that implements
//! those ACR endpoints and answers the authenticated manifest request with 404, so the
//! whole auth chain is exercised. One test per binary: credentials come from the
//! process environment.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use harness::cloud::{capture_all_logs, isolate_cloud_env, MiniServer, Reply, SeenRequest};
use kiln_image::{BlobStore, Platform};
use kiln_registry::{CloudRegistry, RegistryClient, RegistryOptions};

const CLIENT_SECRET: &str = "kiln-Azure-Client-Secret-19fe";
const AAD_TOKEN: &str = "kiln-Aad-Access-Token-6b20";
const REFRESH: &str = "kiln-Acr-Refresh-Token-c3d4";
const ACCESS: &str = "kiln-Acr-Access-Token-8e5f";

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn json(status: u16, v: serde_json::Value) -> Reply {
    Reply(status, v.to_string(), Vec::new())
}

#[test]
fn acr_token_exchange_with_a_service_principal() {
    let tmp = tempfile::tempdir().unwrap();
    isolate_cloud_env(tmp.path());
    let logs = capture_all_logs();

    let aad = MiniServer::start(|r: &SeenRequest| {
        let f = form(&r.body);
        let ok = r.method == "POST"
            && r.target == "/kiln-tenant/oauth2/v2.0/token"
            && f.get("grant_type").map(String::as_str) == Some("client_credentials")
            && f.get("client_id").map(String::as_str) == Some("kiln-client")
            && f.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
            && f.get("scope").map(String::as_str) == Some("https://management.azure.com/.default");
        if ok {
            json(
                200,
                serde_json::json!({"access_token": AAD_TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
            )
        } else {
            json(401, serde_json::json!({"error": "invalid_client"}))
        }
    });
    let me = Arc::new(Mutex::new(String::new()));
    let me2 = me.clone();
    let registry = MiniServer::start(move |r: &SeenRequest| {
        let addr = me2.lock().unwrap().clone();
        let f = form(&r.body);
        match (r.method.as_str(), r.target.as_str()) {
            ("POST", "/oauth2/exchange") => {
                if f.get("grant_type").map(String::as_str) == Some("access_token")
                    && f.get("access_token").map(String::as_str) == Some(AAD_TOKEN)
                    && f.get("service").map(String::as_str) == Some("127.0.0.1")
                    && f.get("tenant").map(String::as_str) == Some("kiln-tenant")
                {
                    json(200, serde_json::json!({"refresh_token": REFRESH}))
                } else {
                    json(401, serde_json::json!({"errors": []}))
                }
            }
            ("POST", "/oauth2/token") => {
                if f.get("grant_type").map(String::as_str) == Some("refresh_token")
                    && f.get("refresh_token").map(String::as_str) == Some(REFRESH)
                    && f.get("scope").map(String::as_str) == Some("repository:team/app:pull")
                {
                    json(200, serde_json::json!({"access_token": ACCESS}))
                } else {
                    json(401, serde_json::json!({"errors": []}))
                }
            }
            (_, t) if t.starts_with("/v2/") => {
                if r.header("Authorization") == Some(&format!("Bearer {ACCESS}")) {
                    json(
                        404,
                        serde_json::json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}),
                    )
                } else {
                    Reply(
                        401,
                        "{}".into(),
                        vec![(
                            "WWW-Authenticate".into(),
                            format!(
                                r#"Bearer realm="http://{addr}/oauth2/token",service="{addr}""#
                            ),
                        )],
                    )
                }
            }
            _ => json(404, serde_json::json!({})),
        }
    });
    *me.lock().unwrap() = registry.addr.clone();

    std::env::set_var("AZURE_CLIENT_ID", "kiln-client");
    std::env::set_var("AZURE_TENANT_ID", "kiln-tenant");
    std::env::set_var("AZURE_CLIENT_SECRET", CLIENT_SECRET);
    std::env::set_var("AZURE_AUTHORITY_HOST", format!("http://{}", aad.addr));

    let client = RegistryClient::new(RegistryOptions {
        docker_config: Some(tmp.path().join("no-config.json")),
        cloud_registries: HashMap::from([(registry.addr.clone(), CloudRegistry::Acr)]),
        ..RegistryOptions::default()
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = BlobStore::open(&tmp.path().join("s")).unwrap();
    let e = rt
        .block_on(client.pull(
            &store,
            &format!("{}/team/app:v1", registry.addr).parse().unwrap(),
            &Platform::new("linux", "amd64", None),
            &kiln_registry::NoProgress,
        ))
        .unwrap_err()
        .to_string();
    // Authenticated all the way: the registry's answer is about the manifest.
    assert!(
        e.starts_with(&format!("registry {}: ", registry.addr)) && e.contains("MANIFEST_UNKNOWN"),
        "{e}"
    );
    let count = |path: &str| {
        registry
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.target == path)
            .count()
    };
    assert_eq!(count("/oauth2/exchange"), 1);
    assert_eq!(count("/oauth2/token"), 1);
    assert_eq!(aad.seen.lock().unwrap().len(), 1);

    let everything = format!("{e} {client:?} {}", logs.text());
    assert!(everything.contains(" TRACE "), "logging was not captured");
    for s in [CLIENT_SECRET, AAD_TOKEN, REFRESH, ACCESS] {
        assert!(
            !everything.contains(s),
            "secret {s:?} leaked:\n{everything}"
        );
    }
}
