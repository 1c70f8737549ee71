//! Test harness: starts a real CNCF distribution registry (`docker-registry`) on a free
//! loopback port in one of several configurations (plain, htpasswd Basic, token auth
//! with a small in-process token server, TLS with a generated CA), builds tiny test
//! images with kiln-image, and runs skopeo. Every process it starts is killed on drop.

#![allow(dead_code)]

pub mod cloud;
pub mod proxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kiln_image::{
    store_image, write_layer_threads, write_oci_layout, BlobStore, EntryKind, Format, Image,
    ImageConfig, LayerEntry, LayerOptions, StoredImage,
};

pub const USER: &str = "kiln-tester";
pub const PASSWORD: &str = "pw-Zq8!unique-secret-41";

pub enum Mode {
    Plain,
    /// htpasswd Basic auth for [`USER`] / [`PASSWORD`].
    Basic,
    /// htpasswd Basic auth for this user and password.
    BasicAs {
        user: String,
        password: String,
    },
    Token,
    Tls,
    /// TLS that also requires a client certificate signed by the test CA
    /// (`http.tls.clientcas`); the client's certificate and key are in
    /// [`Registry::client_cert`].
    MutualTls,
}

pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`
    pub host: String,
    /// The CA certificate (TLS mode).
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

impl Registry {
    pub fn start(mode: Mode) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut extra = String::new();
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
        let mutual = matches!(mode, Mode::MutualTls);
        match mode {
            Mode::Plain => {}
            Mode::Basic => unreachable!("rewritten above"),
            Mode::BasicAs { user, password } => {
                let hash = bcrypt::hash(&password, 5).expect("bcrypt");
                std::fs::write(d.join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
                creds = Some((user, password));
                extra = format!(
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
                extra = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: kiln-test-registry\n    issuer: kiln-token-issuer\n    rootcertbundle: {}\n",
                    ts.addr,
                    d.join("token.crt").display()
                );
                token_server = Some(ts);
            }
            Mode::Tls | Mode::MutualTls => {
                openssl(
                    d,
                    &[
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-keyout",
                        "ca.key",
                        "-out",
                        "ca.crt",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=kiln test CA",
                    ],
                );
                openssl(
                    d,
                    &[
                        "req",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-keyout",
                        "srv.key",
                        "-out",
                        "srv.csr",
                        "-subj",
                        "/CN=127.0.0.1",
                    ],
                );
                std::fs::write(
                    d.join("ext.cnf"),
                    "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
                )
                .unwrap();
                openssl(
                    d,
                    &[
                        "x509",
                        "-req",
                        "-in",
                        "srv.csr",
                        "-CA",
                        "ca.crt",
                        "-CAkey",
                        "ca.key",
                        "-CAcreateserial",
                        "-out",
                        "srv.crt",
                        "-days",
                        "2",
                        "-extfile",
                        "ext.cnf",
                    ],
                );
                extra = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    d.join("srv.crt").display(),
                    d.join("srv.key").display()
                );
                std::fs::create_dir_all(d.join("certs.d")).unwrap();
                std::fs::copy(d.join("ca.crt"), d.join("certs.d").join("ca.crt")).unwrap();
                if mutual {
                    openssl(
                        d,
                        &[
                            "req",
                            "-newkey",
                            "rsa:2048",
                            "-nodes",
                            "-keyout",
                            "client.key",
                            "-out",
                            "client.csr",
                            "-subj",
                            "/CN=kiln test client",
                        ],
                    );
                    std::fs::write(
                        d.join("client-ext.cnf"),
                        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
                    )
                    .unwrap();
                    openssl(
                        d,
                        &[
                            "x509",
                            "-req",
                            "-in",
                            "client.csr",
                            "-CA",
                            "ca.crt",
                            "-CAkey",
                            "ca.key",
                            "-CAcreateserial",
                            "-out",
                            "client.cert",
                            "-days",
                            "2",
                            "-extfile",
                            "client-ext.cnf",
                        ],
                    );
                    extra.push_str(&format!(
                        "    clientcas:\n      - {}\n",
                        d.join("ca.crt").display()
                    ));
                    // skopeo reads client.cert/client.key from its cert dir.
                    for f in ["client.cert", "client.key"] {
                        std::fs::copy(d.join(f), d.join("certs.d").join(f)).unwrap();
                    }
                    client_cert = Some((d.join("client.cert"), d.join("client.key")));
                }
                ca = Some(d.join("ca.crt"));
            }
        }
        let (http_extra, auth_extra) = if extra.starts_with("  tls") {
            (extra, String::new())
        } else {
            (String::new(), extra)
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: kiln-test-http-secret\n{http_extra}{auth_extra}",
            d.join("data").display()
        );
        std::fs::write(d.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry (Debian package docker-registry; see scripts/setup.sh)");
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// skopeo flags to talk to this registry as destination (`dest`) or source (`src`).
    pub fn skopeo_flags(&self, side: &str) -> Vec<String> {
        let mut f = Vec::new();
        match &self.ca {
            Some(ca) => f.push(format!(
                "--{side}cert-dir={}",
                ca.parent().unwrap().join("certs.d").display()
            )),
            None => f.push(format!("--{side}tls-verify=false")),
        }
        if let Some((user, password)) = &self.creds {
            f.push(format!("--{side}creds={user}:{password}"));
        } else if self.needs_auth() {
            f.push(format!("--{side}creds={USER}:{PASSWORD}"));
        }
        f
    }

    fn needs_auth(&self) -> bool {
        self.dir.path().join("htpasswd").exists() || self.token_server.is_some()
    }

    /// `skopeo copy oci:LAYOUT docker://HOST/REPO`.
    pub fn skopeo_push(&self, layout: &Path, tag: &str, repo: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.arg("copy").arg("--quiet").arg("--all");
        cmd.args(self.skopeo_flags("dest-"));
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}", self.host));
        run(&mut cmd);
    }

    /// `skopeo inspect --raw docker://HOST/REPO`: the manifest bytes.
    pub fn skopeo_raw_manifest(&self, repo: &str) -> Vec<u8> {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect").arg("--raw");
        cmd.args(self.skopeo_flags(""));
        cmd.arg(format!("docker://{}/{repo}", self.host));
        let out = cmd.output().expect("skopeo");
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// A tiny image: `layers` layers, each with one file of `size` deterministic bytes.
pub fn build_image(store: &BlobStore, tag_seed: &str, layers: usize, size: usize) -> StoredImage {
    build_image_for(store, tag_seed, layers, size, "amd64")
}

/// [`build_image`] for linux/`arch`.
pub fn build_image_for(
    store: &BlobStore,
    tag_seed: &str,
    layers: usize,
    size: usize,
    arch: &str,
) -> StoredImage {
    let mut ls = Vec::new();
    for i in 0..layers {
        let mut content = Vec::with_capacity(size);
        let mut x: u32 = 2166136261 ^ (i as u32) ^ tag_seed.len() as u32;
        for b in tag_seed.bytes() {
            x = x.wrapping_mul(16777619) ^ u32::from(b);
        }
        while content.len() < size {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            content.extend_from_slice(&x.to_le_bytes());
        }
        content.truncate(size);
        let entries = vec![LayerEntry {
            path: format!("data/{tag_seed}-{i}.bin"),
            kind: EntryKind::Bytes(content),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: Vec::new(),
        }];
        ls.push(write_layer_threads(store, entries, &LayerOptions::default(), 1).expect("layer"));
    }
    let config = ImageConfig {
        architecture: arch.into(),
        os: "linux".into(),
        ..ImageConfig::default()
    };
    store_image(store, &Image { config, layers: ls }, Format::Oci).expect("store image")
}

/// Writes `image` as an OCI layout in `dir` tagged `tag`.
pub fn layout(store: &BlobStore, image: &StoredImage, dir: &Path, tag: &str) {
    write_oci_layout(store, dir, &[(image.clone(), Some(tag.to_string()))]).expect("layout");
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

/// Writes an OCI layout at `dir` whose ref `tag` is an image index over `images`, and
/// returns the index digest.
pub fn index_layout(
    store: &BlobStore,
    images: &[StoredImage],
    dir: &Path,
    tag: &str,
) -> kiln_image::Digest {
    let entries: Vec<(StoredImage, Option<String>)> =
        images.iter().map(|i| (i.clone(), None)).collect();
    write_oci_layout(store, dir, &entries).expect("layout");
    let index = kiln_image::Index {
        manifests: images.iter().map(|i| i.manifest.clone()).collect(),
        ..kiln_image::Index::default()
    };
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = store.put_bytes(&bytes).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(digest.hex()), &bytes).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": kiln_image::MT_OCI_INDEX,
            "digest": digest.to_string(),
            "size": bytes.len(),
            "annotations": {kiln_image::ANNOTATION_REF_NAME: tag},
        }],
    });
    std::fs::write(dir.join("index.json"), top.to_string()).unwrap();
    digest
}
