//! GCR / Artifact Registry built-in auth: an access token from a metadata server (a
//! small server in this test, reached through `GCE_METADATA_HOST`), then from a service
//! account key file (`GOOGLE_APPLICATION_CREDENTIALS`: a JWT signed with the key,
//! verified by this test's token endpoint); the registry's only user is
//! `oauth2accesstoken` with that token as password. One test per binary: the
//! credential sources are read from the process environment.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::HashMap;
use std::sync::Arc;

use harness::cloud::{capture_all_logs, isolate_cloud_env, MiniServer, SeenRequest};
use harness::{build_image, free_port, Mode, Registry};
use kiln_image::{BlobStore, Digest, Platform};
use kiln_registry::{CloudRegistry, RegistryClient, RegistryOptions};

const TOKEN: &str = "ya29.kiln-Gcr-Access-Token-8b1c";
const CLIENT_EMAIL: &str = "builder@kiln-test.iam.gserviceaccount.com";

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

#[test]
fn gcr_push_and_pull_with_metadata_server_and_service_account() {
    let tmp = tempfile::tempdir().unwrap();
    isolate_cloud_env(tmp.path());
    let logs = capture_all_logs();

    // A service account key.
    let key_pem = tmp.path().join("key.pem");
    let pub_pem = tmp.path().join("pub.pem");
    let openssl = |args: &[&str]| kiln_testkit::tls::openssl(tmp.path(), args);
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        key_pem.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        key_pem.to_str().unwrap(),
        "-pubout",
        "-out",
        pub_pem.to_str().unwrap(),
    ]);
    let private_key = std::fs::read_to_string(&key_pem).unwrap();
    let decoding =
        jsonwebtoken::DecodingKey::from_rsa_pem(&std::fs::read(&pub_pem).unwrap()).unwrap();

    // The metadata server and the OAuth2 token endpoint, one loopback server.
    let token_uri = Arc::new(std::sync::Mutex::new(String::new()));
    let tu = token_uri.clone();
    let ok = serde_json::json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"})
        .to_string();
    let server =
        MiniServer::start(
            move |r: &SeenRequest| match (r.method.as_str(), r.target.as_str()) {
                ("GET", "/computeMetadata/v1/instance/service-accounts/default/token") => {
                    if r.header("Metadata-Flavor") == Some("Google") {
                        (200, ok.clone())
                    } else {
                        (403, "{}".into())
                    }
                }
                ("POST", "/token") => {
                    let f = form(&r.body);
                    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                    v.set_audience(&[tu.lock().unwrap().as_str()]);
                    v.set_issuer(&[CLIENT_EMAIL]);
                    let claims = jsonwebtoken::decode::<serde_json::Value>(
                        f.get("assertion").map(String::as_str).unwrap_or_default(),
                        &decoding,
                        &v,
                    );
                    match claims {
                        Ok(c)
                            if f.get("grant_type").map(String::as_str)
                                == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
                                && c.claims["scope"]
                                    == "https://www.googleapis.com/auth/cloud-platform"
                                && c.header.kid.as_deref() == Some("kid-1") =>
                        {
                            (200, ok.clone())
                        }
                        _ => (400, r#"{"error":"invalid_grant"}"#.into()),
                    }
                }
                _ => (404, "{}".into()),
            },
        );
    *token_uri.lock().unwrap() = format!("http://{}/token", server.addr);

    let reg = Registry::start(Mode::BasicAs {
        user: "oauth2accesstoken".into(),
        password: TOKEN.into(),
    });
    let store = BlobStore::open(&tmp.path().join("s")).unwrap();
    let img = build_image(&store, "gcr", 2, 30_000);
    let opts = RegistryOptions {
        docker_config: Some(tmp.path().join("no-config.json")),
        cloud_registries: HashMap::from([(reg.host.clone(), CloudRegistry::Gcr)]),
        ..RegistryOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let amd64 = Platform::new("linux", "amd64", None);
    let mut everything = String::new();
    let seen = |path: &str| {
        server
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.target == path)
            .count()
    };

    // 1. The metadata server.
    std::env::set_var("GCE_METADATA_HOST", &server.addr);
    let client = RegistryClient::new(opts.clone()).unwrap();
    everything += &format!("{client:?}");
    let dest: kiln_registry::Reference = format!("{}/proj/app:v1", reg.host).parse().unwrap();
    let d = rt
        .block_on(client.push(&store, &img, &dest, &kiln_registry::NoProgress))
        .unwrap();
    assert_eq!(d, img.manifest.digest);
    assert_eq!(Digest::sha256(&reg.skopeo_raw_manifest("proj/app:v1")), d);
    let back = BlobStore::open(&tmp.path().join("back")).unwrap();
    let got = rt
        .block_on(client.pull(&back, &dest, &amd64, &kiln_registry::NoProgress))
        .unwrap();
    assert_eq!(got.manifest.digest, d);
    assert_eq!(
        seen("/computeMetadata/v1/instance/service-accounts/default/token"),
        1,
        "one token, cached"
    );
    assert_eq!(seen("/token"), 0);

    // 2. A service account key file wins over the metadata server.
    let key_file = tmp.path().join("sa.json");
    std::fs::write(
        &key_file,
        serde_json::json!({
            "type": "service_account",
            "project_id": "kiln-test",
            "private_key_id": "kid-1",
            "private_key": private_key,
            "client_email": CLIENT_EMAIL,
            "token_uri": token_uri.lock().unwrap().clone(),
        })
        .to_string(),
    )
    .unwrap();
    std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &key_file);
    let client = RegistryClient::new(opts.clone()).unwrap();
    let dest2: kiln_registry::Reference = format!("{}/proj/app:v2", reg.host).parse().unwrap();
    let d2 = rt
        .block_on(client.push(&store, &img, &dest2, &kiln_registry::NoProgress))
        .unwrap();
    assert_eq!(d2, d);
    assert_eq!(seen("/token"), 1);
    assert_eq!(
        seen("/computeMetadata/v1/instance/service-accounts/default/token"),
        1
    );

    // 3. Nowhere to get a token from: kiln goes on anonymously (public images must pull
    // anywhere), and the registry's refusal is one clear line naming it and why.
    std::env::remove_var("GOOGLE_APPLICATION_CREDENTIALS");
    let closed = format!("127.0.0.1:{}", free_port());
    std::env::set_var("GCE_METADATA_HOST", &closed);
    let client = RegistryClient::new(opts.clone()).unwrap();
    let e = rt
        .block_on(client.pull(&back, &dest, &amd64, &kiln_registry::NoProgress))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "registry {}: authentication failed: the registry requires credentials and none are configured for it (built-in GCR auth got no credentials: no GOOGLE_APPLICATION_CREDENTIALS and the metadata server {closed} is unreachable: ",
            reg.host
        )),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    everything += &e;

    everything += &logs.text();
    assert!(
        everything.contains(" TRACE ")
            && everything.contains("obtained cloud registry credentials"),
        "logging was not captured at TRACE"
    );
    let assertions: Vec<String> = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| form(&r.body).get("assertion").cloned())
        .collect();
    assert_eq!(assertions.len(), 1);
    let key_line = private_key.lines().nth(3).unwrap().to_string();
    for s in [TOKEN, key_line.as_str(), assertions[0].as_str()] {
        assert!(
            !everything.contains(s),
            "secret {s:?} leaked:\n{everything}"
        );
    }
}
