//! Cloud auth test helpers: the `moto` server (AWS STS and ECR) on a loopback port,
//! a process-wide TRACE log capture (every thread, the AWS SDK's included), and a tiny
//! HTTP server for Google's metadata and OAuth2 token endpoints.
//!
//! Each cloud test binary holds one test, since the credential chains read the process
//! environment.

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use kiln_testkit::http::{Response, TinyServer};
use kiln_testkit::net::{free_port, start_server, Server};

/// A running `moto_server`.
pub struct Moto {
    _server: Server,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let server = start_server(
            Command::new("moto_server").args(["-H", "127.0.0.1", "-p", &port.to_string()]),
            port,
            "moto_server (PyPI moto[server])",
        );
        Moto {
            _server: server,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

/// Everything logged, process-wide, at TRACE.
#[derive(Clone, Default)]
pub struct LogBuf(pub Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs (once) a global TRACE subscriber writing into the returned buffer.
pub fn capture_all_logs() -> LogBuf {
    static BUF: OnceLock<LogBuf> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = LogBuf::default();
        let b2 = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || b2.clone())
            .finish();
        tracing::subscriber::set_global_default(sub).expect("global subscriber");
        buf
    })
    .clone()
}

/// One HTTP request as the mini server saw it.
pub use kiln_testkit::http::Request as SeenRequest;

/// A response: status, JSON body and extra headers.
pub struct Reply(pub u16, pub String, pub Vec<(String, String)>);

impl From<(u16, String)> for Reply {
    fn from((status, body): (u16, String)) -> Reply {
        Reply(status, body, Vec::new())
    }
}

/// kiln-testkit's [`TinyServer`] answering JSON: every request is recorded.
pub struct MiniServer {
    pub addr: String,
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl MiniServer {
    pub fn start<R: Into<Reply>>(
        handler: impl Fn(&SeenRequest) -> R + Send + Sync + 'static,
    ) -> MiniServer {
        let server = TinyServer::start(move |r| {
            let Reply(status, body, extra) = handler(r).into();
            let mut resp =
                Response::new(status, body.into_bytes()).header("Content-Type", "application/json");
            resp.headers.extend(extra);
            resp
        });
        MiniServer {
            addr: server.addr.to_string(),
            seen: server.seen,
        }
    }
}

/// Points every AWS and Google credential source of this process at nothing, so only
/// what a test sets is found (the machine's own configuration must not leak in).
pub fn isolate_cloud_env(dir: &std::path::Path) {
    for v in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_ECR",
        "AWS_ENDPOINT_URL_STS",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GCE_METADATA_HOST",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
    ] {
        std::env::remove_var(v);
    }
    std::env::set_var("AWS_CONFIG_FILE", dir.join("no-aws-config"));
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        dir.join("no-aws-credentials"),
    );
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("CLOUDSDK_CONFIG", dir.join("no-gcloud"));
}

/// The account every ECR test registry belongs to (moto's default account).
pub const ECR_ACCOUNT: &str = "123456789012";
pub const ECR_REGION: &str = "us-east-1";

/// Asks the AWS endpoint (moto) for an ECR token with the process's credential chain,
/// as a registry operator would, and returns the registry password it decodes to.
pub fn moto_ecr_password(rt: &tokio::runtime::Runtime) -> String {
    use base64::Engine as _;
    rt.block_on(async {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(ECR_REGION))
            .load()
            .await;
        let out = aws_sdk_ecr::Client::new(&conf)
            .get_authorization_token()
            .send()
            .await
            .expect("GetAuthorizationToken on moto");
        let token = out.authorization_data()[0]
            .authorization_token()
            .expect("token")
            .to_string();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(token)
            .unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (user, password) = raw.split_once(':').unwrap();
        assert_eq!(user, "AWS");
        password.to_string()
    })
}

/// The whole ECR flow against a loopback registry whose only user is `AWS` with
/// `password` (the token moto issues): push and pull with built-in ECR auth; explicit
/// and config.json credentials take precedence; without the override (or with cloud
/// auth off) kiln is anonymous. No string of `secrets` may appear in any output;
/// returns that output (errors, `Debug` of clients, TRACE logs) for further checks.
pub fn ecr_round_trip(
    rt: &tokio::runtime::Runtime,
    logs: &LogBuf,
    password: &str,
    secrets: &[String],
) -> String {
    use super::{build_image, Mode, Registry};
    use kiln_image::{load_image, BlobStore, Digest, Platform};
    use kiln_registry::{CloudRegistry, Credential, RegistryClient, RegistryOptions, Secret};
    use std::collections::HashMap;

    let reg = Registry::start(Mode::BasicAs {
        user: "AWS".into(),
        password: password.into(),
    });
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("s")).unwrap();
    let img = build_image(&store, "ecr", 2, 40_000);
    let ecr = CloudRegistry::Ecr {
        account: ECR_ACCOUNT.into(),
        region: ECR_REGION.into(),
        fips: false,
    };
    let base = RegistryOptions {
        docker_config: Some(tmp.path().join("no-config.json")),
        ..RegistryOptions::default()
    };
    let opts = RegistryOptions {
        cloud_registries: HashMap::from([(reg.host.clone(), ecr.clone())]),
        ..base.clone()
    };
    let mut everything = String::new();
    let dest: kiln_registry::Reference = format!("{}/team/app:v1", reg.host).parse().unwrap();

    let client = RegistryClient::new(opts.clone()).unwrap();
    everything += &format!("{client:?}");
    let d = rt
        .block_on(client.push(&store, &img, &dest, &kiln_registry::NoProgress))
        .unwrap();
    assert_eq!(d, img.manifest.digest);
    assert_eq!(Digest::sha256(&reg.skopeo_raw_manifest("team/app:v1")), d);
    let back = BlobStore::open(&tmp.path().join("back")).unwrap();
    let got = rt
        .block_on(client.pull(
            &back,
            &dest,
            &Platform::new("linux", "amd64", None),
            &kiln_registry::NoProgress,
        ))
        .unwrap();
    assert_eq!(got.manifest.digest, d);
    assert_eq!(
        load_image(&back, &d).unwrap(),
        load_image(&store, &d).unwrap()
    );
    assert_eq!(
        logs.text()
            .matches("ECR authorization token obtained")
            .count(),
        1,
        "the token is cached for the whole push and pull"
    );

    let refused = |o: RegistryOptions, everything: &mut String| -> String {
        let c = RegistryClient::new(o).unwrap();
        *everything += &format!("{c:?}");
        let e = rt
            .block_on(c.pull(
                &back,
                &dest,
                &Platform::new("linux", "amd64", None),
                &kiln_registry::NoProgress,
            ))
            .unwrap_err();
        *everything += &format!("{e} {e:?}");
        e.to_string()
    };
    // Explicit credentials win over the cloud provider, even when wrong.
    let e = refused(
        RegistryOptions {
            credentials: HashMap::from([(
                reg.host.clone(),
                Credential::Basic {
                    username: "AWS".into(),
                    password: Secret::new("explicit-wrong"),
                },
            )]),
            ..opts.clone()
        },
        &mut everything,
    );
    assert_eq!(
        e,
        format!(
            "registry {}: authentication failed: the registry refused the credentials",
            reg.host
        )
    );
    // So do docker config.json entries.
    use base64::Engine as _;
    let cfg = tmp.path().join("config.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.host,
            base64::engine::general_purpose::STANDARD.encode("AWS:config-wrong")
        ),
    )
    .unwrap();
    let e = refused(
        RegistryOptions {
            docker_config: Some(cfg),
            ..opts.clone()
        },
        &mut everything,
    );
    assert!(e.ends_with("the registry refused the credentials"), "{e}");
    // Not an ECR host without the override, and no cloud auth when it is off.
    let none = format!(
        "registry {}: authentication failed: the registry requires credentials and none are configured for it",
        reg.host
    );
    assert_eq!(refused(base.clone(), &mut everything), none);
    assert_eq!(
        refused(
            RegistryOptions {
                cloud_auth: false,
                ..opts.clone()
            },
            &mut everything
        ),
        none
    );

    everything += &logs.text();
    assert!(
        everything.contains(" TRACE ") && everything.contains("kiln_registry"),
        "logging was not captured at TRACE"
    );
    let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    for s in secrets
        .iter()
        .map(String::as_str)
        .chain([password, token.as_str()])
    {
        assert!(
            !everything.contains(s),
            "secret {s:?} leaked:\n{everything}"
        );
    }
    everything
}

/// moto's record of the roles assumed through STS: (session name, access key id,
/// secret access key, session token).
pub fn moto_assumed_roles(
    rt: &tokio::runtime::Runtime,
    moto: &Moto,
) -> Vec<(String, String, String, String)> {
    let body = rt.block_on(async {
        reqwest::get(format!("{}/moto-api/data.json", moto.endpoint))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let s = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or_default().to_string();
    v["sts"]["AssumedRole"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        s(r, "session_name"),
                        s(r, "access_key_id"),
                        s(r, "secret_access_key"),
                        s(r, "session_token"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
