//! A real CNCF distribution registry (`docker-registry`) on a free loopback
//! port, in one of several configurations: plain HTTP, htpasswd Basic auth,
//! token auth with a small in-process token server, TLS with a CA made for
//! the test, and mutual TLS. It logs to `registry.log` in its directory;
//! the process (and the token server) stop on drop. Also the skopeo flags
//! to reach it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::tls::{openssl, TestCa};
use crate::{net, tools};

/// The user of [`Mode::Basic`] and of the token server.
pub const USER: &str = "kiln-tester";
/// The password of [`USER`].
pub const PASSWORD: &str = "pw-Zq8!unique-secret-41";

/// How the registry is configured.
pub enum Mode {
    /// Plain HTTP, no auth.
    Plain,
    /// htpasswd Basic auth for [`USER`] / [`PASSWORD`].
    Basic,
    /// htpasswd Basic auth for this user and password.
    BasicAs { user: String, password: String },
    /// Bearer tokens from a [`TokenServer`] that accepts [`USER`] / [`PASSWORD`].
    Token,
    /// TLS with a certificate for `127.0.0.1` issued by a test CA.
    Tls,
    /// TLS that also requires a client certificate signed by the test CA
    /// (`http.tls.clientcas`); the client's certificate and key are in
    /// [`Registry::client_cert`].
    MutualTls,
}

/// A running registry; killed on drop.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`
    pub host: String,
    /// The CA certificate (TLS modes).
    pub ca: Option<PathBuf>,
    /// The client certificate and key the registry accepts (mutual TLS mode).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub token_server: Option<TokenServer>,
    /// The Basic credentials the registry accepts (htpasswd modes).
    pub creds: Option<(String, String)>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// A plain HTTP registry without auth.
    pub fn plain() -> Registry {
        Registry::start(Mode::Plain)
    }

    pub fn start(mode: Mode) -> Registry {
        tools::require("docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let host = format!("127.0.0.1:{}", net::free_port());
        let mut http_extra = String::new();
        let mut auth_extra = String::new();
        let mut ca = None;
        let mut client_cert = None;
        let mut token_server = None;
        let mut creds = None;
        let mode = match mode {
            Mode::Basic => Mode::BasicAs {
                user: USER.into(),
                password: PASSWORD.into(),
            },
            m => m,
        };
        match mode {
            Mode::Plain => {}
            Mode::Basic => unreachable!("rewritten above"),
            Mode::BasicAs { user, password } => {
                let hash = bcrypt::hash(&password, 5).expect("bcrypt");
                std::fs::write(d.join("htpasswd"), format!("{user}:{hash}\n")).expect("htpasswd");
                creds = Some((user, password));
                auth_extra = format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    d.join("htpasswd").display()
                );
            }
            Mode::Token => {
                openssl(
                    d,
                    &[
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-keyout",
                        "token.key",
                        "-out",
                        "token.crt",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=kiln-token-issuer",
                    ],
                );
                openssl(
                    d,
                    &[
                        "x509",
                        "-in",
                        "token.crt",
                        "-outform",
                        "DER",
                        "-out",
                        "token.der",
                    ],
                );
                let ts = TokenServer::start(&d.join("token.key"), &d.join("token.der"));
                auth_extra = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: kiln-test-registry\n    issuer: kiln-token-issuer\n    rootcertbundle: {}\n",
                    ts.addr,
                    d.join("token.crt").display()
                );
                token_server = Some(ts);
            }
            Mode::Tls | Mode::MutualTls => {
                let test_ca = TestCa::new(d, "kiln test CA");
                let (crt, key) = test_ca.server_for_loopback_ip();
                http_extra = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    crt.display(),
                    key.display()
                );
                let certs_d = d.join("certs.d");
                std::fs::create_dir_all(&certs_d).expect("mkdir certs.d");
                std::fs::copy(test_ca.cert(), certs_d.join("ca.crt")).expect("copy ca");
                if matches!(mode, Mode::MutualTls) {
                    let (cert, key) = test_ca.client("kiln test client");
                    http_extra.push_str(&format!(
                        "    clientcas:\n      - {}\n",
                        test_ca.cert().display()
                    ));
                    // skopeo reads client.cert/client.key from its cert dir.
                    for f in [&cert, &key] {
                        std::fs::copy(f, certs_d.join(f.file_name().expect("name")))
                            .expect("copy client cert");
                    }
                    client_cert = Some((cert, key));
                }
                ca = Some(test_ca.cert());
            }
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: kiln-test-http-secret\n{http_extra}{auth_extra}",
            d.join("data").display()
        );
        std::fs::write(d.join("config.yml"), config).expect("config");
        let log = std::fs::File::create(d.join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "docker-registry: {e}; {}",
                    tools::missing("docker-registry")
                )
            });
        let reg = Registry {
            child,
            dir,
            host,
            ca,
            client_cert,
            token_server,
            creds,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&reg.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// What the registry logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A file in the registry's directory (`ca.crt`, `client.cert`, ...).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Where the registry keeps its repositories and blobs.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A Docker-style certificate directory for this registry (TLS modes):
    /// `ca.crt`, and `client.cert` / `client.key` in mutual TLS mode.
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// skopeo flags to talk to this registry as destination (`dest-`),
    /// source (`src-`) or the only side (``).
    pub fn skopeo_flags(&self, side: &str) -> Vec<String> {
        let mut f = Vec::new();
        match &self.ca {
            Some(_) => f.push(format!("--{side}cert-dir={}", self.cert_dir().display())),
            None => f.push(format!("--{side}tls-verify=false")),
        }
        if let Some((user, password)) = &self.creds {
            f.push(format!("--{side}creds={user}:{password}"));
        } else if self.token_server.is_some() {
            f.push(format!("--{side}creds={USER}:{PASSWORD}"));
        }
        f
    }

    /// `skopeo copy --all oci:LAYOUT:TAG docker://HOST/REPO`.
    pub fn skopeo_push(&self, layout: &Path, tag: &str, repo: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.arg("copy").arg("--quiet").arg("--all");
        cmd.args(self.skopeo_flags("dest-"));
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}", self.host));
        tools::run_cmd(&mut cmd);
    }

    /// `skopeo inspect --raw docker://HOST/REPO`: the manifest bytes.
    pub fn skopeo_raw_manifest(&self, repo: &str) -> Vec<u8> {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect").arg("--raw");
        cmd.args(self.skopeo_flags(""));
        cmd.arg(format!("docker://{}/{repo}", self.host));
        tools::run_cmd(&mut cmd)
    }
}

/// A token server: issues JWTs (RS256, `x5c` = the registry-trusted certificate) to
/// clients presenting `USER`/`PASSWORD` as Basic credentials, granting the requested
/// scopes. Serves HTTP/1.1 on a loopback port from a thread.
/// Token requests served: (authenticated, scopes).
pub type TokenLog = Arc<Mutex<Vec<(bool, Vec<String>)>>>;

pub struct TokenServer {
    pub addr: String,
    /// Every token issued (for leak checks).
    pub issued: Arc<Mutex<Vec<String>>>,
    /// Requests served: (authenticated, scopes).
    pub requests: TokenLog,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

impl TokenServer {
    fn start(key: &Path, cert_der: &Path) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(key).unwrap()).unwrap();
        let x5c =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(cert_der).unwrap());
        let issued = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (i2, r2, s2) = (issued.clone(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = serve_token(&mut conn, &key, &x5c, &i2, &r2);
            }
        });
        TokenServer {
            addr,
            issued,
            requests,
            stop,
        }
    }
}

fn serve_token(
    conn: &mut TcpStream,
    key: &jsonwebtoken::EncodingKey,
    x5c: &str,
    issued: &Mutex<Vec<String>>,
    requests: &Mutex<Vec<(bool, Vec<String>)>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut auth = None;
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" => auth = Some(v.trim().to_string()),
                "content-length" => content_length = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let url = url::Url::parse(&format!("http://x{target}")).unwrap();
    let scopes: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.to_string())
        .collect();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let authed = auth.as_deref() == Some(expected.as_str());
    requests.lock().unwrap().push((authed, scopes.clone()));
    if !authed {
        let msg = "{\"details\":\"invalid credentials\"}";
        write!(conn, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}", msg.len())?;
        return Ok(());
    }
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (t, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": t, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "kiln-token-issuer", "sub": USER, "aud": "kiln-test-registry",
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", issued.lock().unwrap().len()), "access": access,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5c = Some(vec![x5c.to_string()]);
    let token = jsonwebtoken::encode(&header, &claims, key).unwrap();
    issued.lock().unwrap().push(token.clone());
    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
    write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    Ok(())
}
