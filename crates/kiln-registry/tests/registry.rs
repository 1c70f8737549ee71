//! Integration tests against a real CNCF distribution registry (see `harness`).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use harness::{build_image, layout, Mode, Registry, PASSWORD, USER};
use kiln_image::{load_image, BlobStore, Digest, Platform};
use kiln_registry::{
    Credential, Reference, RegistryClient, RegistryOptions, Secret, SkipReason, TransferProgress,
};

/// Records every progress event.
#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl TransferProgress for Events {
    fn finished(&self, d: &Digest, total: u64) {
        self.0.lock().unwrap().push(format!("done {d} {total}"));
    }
    fn skipped(&self, d: &Digest, _size: u64, why: &SkipReason) {
        self.0.lock().unwrap().push(format!("skip {d} {why:?}"));
    }
    fn advanced(&self, d: &Digest, done: u64, total: u64) {
        assert!(done <= total, "{d}: {done} > {total}");
    }
}

impl Events {
    fn take(&self) -> Vec<String> {
        let mut v = std::mem::take(&mut *self.0.lock().unwrap());
        v.sort();
        v
    }
}

fn amd64() -> Platform {
    Platform::new("linux", "amd64", None)
}

/// Options with no docker config (the test machine's own must not leak in).
fn opts(dir: &std::path::Path) -> RegistryOptions {
    RegistryOptions {
        docker_config: Some(dir.join("no-config.json")),
        ..RegistryOptions::default()
    }
}

fn r(s: &str) -> Reference {
    s.parse().unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn pull_what_skopeo_pushed_then_pinned_pull_is_offline() {
    let reg = Registry::start(Mode::Plain);
    let tmp = tempfile::tempdir().unwrap();
    let src = BlobStore::open(&tmp.path().join("src")).unwrap();
    let img = build_image(&src, "pull", 3, 300_000);
    layout(&src, &img, &tmp.path().join("layout"), "v1");
    reg.skopeo_push(&tmp.path().join("layout"), "v1", "kiln/base:v1");

    let dst = BlobStore::open(&tmp.path().join("dst")).unwrap();
    let client = RegistryClient::new(opts(tmp.path())).unwrap();
    let ev = Events::default();
    let rt = rt();
    let got = rt
        .block_on(client.pull(
            &dst,
            &r(&format!("{}/kiln/base:v1", reg.host)),
            &amd64(),
            &ev,
        ))
        .unwrap();
    // skopeo copies an OCI layout verbatim: same manifest digest.
    assert_eq!(got.manifest.digest, img.manifest.digest);
    assert_eq!(got.config_digest, img.config_digest);
    assert_eq!(got.manifest.platform, Some(amd64()));
    let a = load_image(&src, &img.manifest.digest).unwrap();
    let b = load_image(&dst, &got.manifest.digest).unwrap();
    assert_eq!(a, b);
    for l in &b.layers {
        assert_eq!(
            Digest::sha256(&std::fs::read(dst.path(&l.digest)).unwrap()),
            l.digest
        );
    }
    let events = ev.take();
    assert_eq!(
        events.iter().filter(|e| e.starts_with("done ")).count(),
        4,
        "{events:?}"
    );

    // Pulling again: nothing is downloaded.
    rt.block_on(client.pull(
        &dst,
        &r(&format!("{}/kiln/base:v1", reg.host)),
        &amd64(),
        &ev,
    ))
    .unwrap();
    let events = ev.take();
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        events.iter().all(|e| e.ends_with("InLocalStore")),
        "{events:?}"
    );

    // A digest-pinned pull works with the registry gone.
    let host = reg.host.clone();
    drop(reg);
    let pinned = r(&format!("{host}/kiln/base@{}", img.manifest.digest));
    let fresh = RegistryClient::new(opts(tmp.path())).unwrap();
    let again = rt
        .block_on(fresh.pull(&dst, &pinned, &amd64(), &ev))
        .unwrap();
    assert_eq!(again, got);
    // …while a tag still needs the network, and the error names the registry.
    let e = rt
        .block_on(fresh.pull(&dst, &r(&format!("{host}/kiln/base:v1")), &amd64(), &ev))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("registry {host}: cannot reach")),
        "{e}"
    );
}

#[test]
fn push_is_read_back_by_skopeo_with_mounts_and_chunks() {
    let reg = Registry::start(Mode::Plain);
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("s")).unwrap();
    let img = build_image(&store, "push", 3, 200_000);
    let client = RegistryClient::new(RegistryOptions {
        chunk_size: 64 * 1024, // forces chunked PATCH uploads for the layers
        ..opts(tmp.path())
    })
    .unwrap();
    let ev = Events::default();
    let rt = rt();
    let d = rt
        .block_on(client.push(&store, &img, &r(&format!("{}/team/app:1.0", reg.host)), &ev))
        .unwrap();
    assert_eq!(d, img.manifest.digest);
    let raw = reg.skopeo_raw_manifest("team/app:1.0");
    assert_eq!(Digest::sha256(&raw), img.manifest.digest);
    assert_eq!(raw, store.read_bytes(&img.manifest.digest).unwrap());
    let events = ev.take();
    assert_eq!(
        events.iter().filter(|e| e.starts_with("done ")).count(),
        4,
        "{events:?}"
    );

    // Same registry, other repository: every blob is mounted, nothing uploaded.
    let d2 = rt
        .block_on(client.push(&store, &img, &r(&format!("{}/other/app", reg.host)), &ev))
        .unwrap();
    assert_eq!(d2, img.manifest.digest);
    let events = ev.take();
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.ends_with("Mounted { from: \"team/app\" }")),
        "{events:?}"
    );
    assert_eq!(
        Digest::sha256(&reg.skopeo_raw_manifest("other/app:latest")),
        d2
    );

    // Pushing again: HEAD finds every blob.
    rt.block_on(client.push(&store, &img, &r(&format!("{}/team/app:1.1", reg.host)), &ev))
        .unwrap();
    let events = ev.take();
    assert!(
        events.len() == 4 && events.iter().all(|e| e.ends_with("ExistsInRegistry")),
        "{events:?}"
    );

    // A round trip through kiln's own pull.
    let back = BlobStore::open(&tmp.path().join("back")).unwrap();
    let got = rt
        .block_on(client.pull(&back, &r(&format!("{}/other/app", reg.host)), &amd64(), &ev))
        .unwrap();
    assert_eq!(
        load_image(&back, &got.manifest.digest).unwrap(),
        load_image(&store, &d).unwrap()
    );
}

/// Collects everything kiln logs (at TRACE) so tests can look for leaked secrets.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (LogBuf, tracing::subscriber::DefaultGuard) {
    let buf = LogBuf::default();
    let b2 = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || b2.clone())
        .finish();
    (buf.clone(), tracing::subscriber::set_default(sub))
}

fn write_docker_config(dir: &std::path::Path, host: &str, password: &str) -> std::path::PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    let path = dir.join("docker-config.json");
    std::fs::write(
        &path,
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    path
}

fn auth_round_trip(mode: Mode) {
    let reg = Registry::start(mode);
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("s")).unwrap();
    let img = build_image(&store, "auth", 2, 50_000);
    let (logs, _guard) = capture_logs();
    let rt = rt();
    let mut everything = String::new();

    // Credentials from a docker config.json ("auth" = base64 user:password).
    let client = RegistryClient::new(RegistryOptions {
        docker_config: Some(write_docker_config(tmp.path(), &reg.host, PASSWORD)),
        ..RegistryOptions::default()
    })
    .unwrap();
    everything += &format!("{client:?}");
    let dest = r(&format!("{}/secure/app:v1", reg.host));
    let d = rt
        .block_on(client.push(&store, &img, &dest, &kiln_registry::NoProgress))
        .unwrap();
    assert_eq!(Digest::sha256(&reg.skopeo_raw_manifest("secure/app:v1")), d);
    let back = BlobStore::open(&tmp.path().join("back")).unwrap();
    let got = rt
        .block_on(client.pull(&back, &dest, &amd64(), &kiln_registry::NoProgress))
        .unwrap();
    assert_eq!(got.manifest.digest, d);

    // Anonymous: refused, naming the registry.
    let anon = RegistryClient::new(opts(tmp.path())).unwrap();
    let e = rt
        .block_on(anon.pull(
            &back,
            &r(&format!("{}/secure/app:v1", reg.host)),
            &amd64(),
            &kiln_registry::NoProgress,
        ))
        .unwrap_err();
    let e = e.to_string();
    everything += &e;
    assert!(
        e.starts_with(&format!("registry {}: authentication failed:", reg.host)),
        "{e}"
    );

    // Wrong password (explicit credentials): refused, naming the registry.
    let wrong = "wrong-Pw-77-unique";
    let bad = RegistryClient::new(RegistryOptions {
        credentials: HashMap::from([(
            reg.host.clone(),
            Credential::Basic {
                username: USER.into(),
                password: Secret::new(wrong),
            },
        )]),
        ..opts(tmp.path())
    })
    .unwrap();
    everything += &format!("{bad:?}");
    let e = rt
        .block_on(bad.push(
            &store,
            &img,
            &r(&format!("{}/secure/other", reg.host)),
            &kiln_registry::NoProgress,
        ))
        .unwrap_err();
    everything += &format!("{e} {e:?}");
    let e = e.to_string();
    assert!(
        e.starts_with(&format!("registry {}: authentication failed:", reg.host)),
        "{e}"
    );

    everything += &String::from_utf8_lossy(&logs.0.lock().unwrap());
    assert!(everything.contains("request"), "logging was not captured");
    for secret in [PASSWORD, wrong] {
        assert!(!everything.contains(secret), "secret leaked:\n{everything}");
    }
    if let Some(ts) = &reg.token_server {
        let issued = ts.issued.lock().unwrap();
        assert!(!issued.is_empty());
        for t in issued.iter() {
            assert!(!everything.contains(t.as_str()), "token leaked");
        }
        let reqs = ts.requests.lock().unwrap();
        assert!(
            reqs.iter()
                .any(|(ok, s)| *ok && s == &["repository:secure/app:pull,push".to_string()]),
            "{reqs:?}"
        );
        assert!(
            reqs.iter()
                .any(|(ok, s)| *ok && s == &["repository:secure/app:pull".to_string()]),
            "{reqs:?}"
        );
    }
}

#[test]
fn basic_auth_with_docker_config() {
    auth_round_trip(Mode::Basic);
}

#[test]
fn bearer_token_auth() {
    auth_round_trip(Mode::Token);
}

#[test]
fn tls_registry_with_generated_ca() {
    let reg = Registry::start(Mode::Tls);
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("s")).unwrap();
    let img = build_image(&store, "tls", 1, 10_000);
    let rt = rt();
    let dest = r(&format!("{}/tls/app:v1", reg.host));

    // Without the CA, TLS fails and the plain-HTTP fallback cannot work either.
    let no_ca = RegistryClient::new(opts(tmp.path())).unwrap();
    let e = rt
        .block_on(no_ca.push(&store, &img, &dest, &kiln_registry::NoProgress))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("registry {}:", reg.host)), "{e}");

    let client = RegistryClient::new(RegistryOptions {
        ca_files: HashMap::from([(reg.host.clone(), reg.ca.clone().unwrap())]),
        ..opts(tmp.path())
    })
    .unwrap();
    let d = rt
        .block_on(client.push(&store, &img, &dest, &kiln_registry::NoProgress))
        .unwrap();
    assert_eq!(Digest::sha256(&reg.skopeo_raw_manifest("tls/app:v1")), d);

    // Marked insecure: TLS without verification works too.
    let insecure = RegistryClient::new(RegistryOptions {
        insecure: vec![reg.host.clone()],
        ..opts(tmp.path())
    })
    .unwrap();
    let back = BlobStore::open(&tmp.path().join("back")).unwrap();
    let got = rt
        .block_on(insecure.pull(&back, &dest, &amd64(), &kiln_registry::NoProgress))
        .unwrap();
    assert_eq!(got.manifest.digest, d);
}

#[test]
fn faults_are_retried_and_the_manifest_goes_last() {
    use harness::proxy::{Fault, Proxy, Rule};
    let reg = Registry::start(Mode::Plain);
    let rule = |method, path_part, fault| Rule {
        method,
        path_part,
        fault,
    };
    let proxy = Proxy::start(
        &reg.host,
        vec![
            rule(
                "POST",
                "/blobs/uploads/",
                Fault::TooManyRequests { retry_after: 1 },
            ),
            rule("PUT", "digest=", Fault::DropBeforeResponse),
            rule("PATCH", "/blobs/uploads/", Fault::Status(502)),
            rule("HEAD", "/blobs/", Fault::Status(500)),
            rule("PUT", "/manifests/", Fault::Status(503)),
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("s")).unwrap();
    let img = build_image(&store, "faults", 2, 150_000);
    let client = RegistryClient::new(RegistryOptions {
        chunk_size: 100_000,
        retry_base_delay: std::time::Duration::from_millis(20),
        ..opts(tmp.path())
    })
    .unwrap();
    let rt = rt();
    let dest = r(&format!("{}/faulty/app:v1", proxy.addr));
    let d = rt
        .block_on(client.push(&store, &img, &dest, &kiln_registry::NoProgress))
        .unwrap();
    assert_eq!(d, img.manifest.digest);
    assert!(
        proxy.pending().is_empty(),
        "faults not hit: {:?}",
        proxy.pending()
    );
    assert_eq!(Digest::sha256(&reg.skopeo_raw_manifest("faulty/app:v1")), d);
    {
        let log = proxy.log.lock().unwrap();
        let last_blob = log
            .iter()
            .rposition(|(m, p, s)| m == "PUT" && p.contains("digest=") && s == "201")
            .unwrap();
        let first_manifest = log
            .iter()
            .position(|(m, p, _)| m == "PUT" && p.contains("/manifests/"))
            .unwrap();
        assert!(first_manifest > last_blob, "{log:?}");
    }

    let layer = load_image(&store, &d).unwrap().layers[0].digest.to_string();
    let layer_path: &'static str = Box::leak(layer.into_boxed_str());
    // Pull through the proxy with a blob response cut half-way and a 500 on the
    // manifest: retried, resumed with a Range request, verified.
    let proxy = Proxy::start(
        &reg.host,
        vec![
            rule("GET", "/manifests/", Fault::Status(500)),
            // A layer (150 kB), so half the response holds part of the body.
            rule("GET", layer_path, Fault::CutResponseHalfway),
        ],
    );
    let back = BlobStore::open(&tmp.path().join("back")).unwrap();
    let got = rt
        .block_on(client.pull(
            &back,
            &r(&format!("{}/faulty/app:v1", proxy.addr)),
            &amd64(),
            &kiln_registry::NoProgress,
        ))
        .unwrap();
    assert!(
        proxy.pending().is_empty(),
        "faults not hit: {:?}",
        proxy.pending()
    );
    assert_eq!(
        load_image(&back, &got.manifest.digest).unwrap(),
        load_image(&store, &d).unwrap()
    );
    let log = proxy.log.lock().unwrap();
    assert!(
        log.iter()
            .any(|(m, p, s)| m == "GET" && p.contains("/blobs/") && s == "206"),
        "no resumed download: {log:?}"
    );

    // Retries give up eventually, with the registry and the reason in one line.
    let dead = Proxy::start(
        &reg.host,
        (0..10)
            .map(|_| rule("GET", "/manifests/", Fault::Status(503)))
            .collect(),
    );
    let e = rt
        .block_on(client.pull(
            &BlobStore::open(&tmp.path().join("none")).unwrap(),
            &r(&format!("{}/faulty/app:v1", dead.addr)),
            &amd64(),
            &kiln_registry::NoProgress,
        ))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "registry {}: fetching the manifest of {}/faulty/app:v1 failed: HTTP 503",
            dead.addr, dead.addr
        )
    );
    assert_eq!(dead.pending().len(), 5, "1 try + 4 retries");
}

/// Twenty pushes through a proxy that fails a fifth of all requests at random
/// (5xx, 429, dropped connections, responses cut half-way): every push lands with
/// the digest of the image pushed, and the registry serves that manifest.
#[test]
fn twenty_pushes_at_a_twenty_percent_error_rate_all_land() {
    use harness::proxy::Proxy;
    let reg = Registry::start(Mode::Plain);
    let proxy = Proxy::start_random(&reg.host, 20, 0x6b69_6c6e);
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("s")).unwrap();
    // A failed blob upload is retried as a whole session (POST, then PUT),
    // and each request fails a fifth of the time here, so one attempt fails
    // about a third of the time: with the default 4 retries one of the ~60
    // uploads runs out every few runs. 8 retries make a
    // lost push a one-in-hundreds event; what the test pins is that retried
    // pushes land whole and with the right digest.
    let client = RegistryClient::new(RegistryOptions {
        chunk_size: 100_000,
        retry_base_delay: std::time::Duration::from_millis(10),
        max_retries: 8,
        ..opts(tmp.path())
    })
    .unwrap();
    let rt = rt();
    for i in 0..20 {
        let img = build_image(&store, &format!("flaky-{i:02}"), 2, 60_000 + i * 1_000);
        let repo = format!("flaky/app{i}:v1");
        let dest = r(&format!("{}/{repo}", proxy.addr));
        let d = rt
            .block_on(client.push(&store, &img, &dest, &kiln_registry::NoProgress))
            .unwrap_or_else(|e| panic!("push {i} failed: {e}"));
        assert_eq!(d, img.manifest.digest, "push {i}");
        assert_eq!(
            Digest::sha256(&reg.skopeo_raw_manifest(&repo)),
            d,
            "push {i}"
        );
    }
    let guard = proxy.random.lock().unwrap();
    let faults = guard.as_ref().unwrap();
    let rate = faults.injected * 100 / faults.seen.max(1);
    eprintln!(
        "20 pushes: {} of {} requests failed by the proxy",
        faults.injected, faults.seen
    );
    assert!(
        faults.seen >= 100 && (12..=28).contains(&rate),
        "{} of {} requests failed",
        faults.injected,
        faults.seen
    );
}

#[test]
fn index_platform_selection_and_mirrors() {
    let origin = Registry::start(Mode::Plain);
    let mirror = Registry::start(Mode::Plain);
    let tmp = tempfile::tempdir().unwrap();
    let src = BlobStore::open(&tmp.path().join("src")).unwrap();
    let amd = harness::build_image_for(&src, "multi", 1, 20_000, "amd64");
    let arm = harness::build_image_for(&src, "multi", 1, 20_000, "arm64");
    let index = harness::index_layout(
        &src,
        &[amd.clone(), arm.clone()],
        &tmp.path().join("l"),
        "multi",
    );
    origin.skopeo_push(&tmp.path().join("l"), "multi", "lib/multi:v1");
    mirror.skopeo_push(&tmp.path().join("l"), "multi", "lib/multi:v1");
    let rt = rt();
    let client = RegistryClient::new(opts(tmp.path())).unwrap();
    let dst = BlobStore::open(&tmp.path().join("dst")).unwrap();
    let reference = r(&format!("{}/lib/multi:v1", origin.host));
    let pull =
        |p: Platform| rt.block_on(client.pull(&dst, &reference, &p, &kiln_registry::NoProgress));

    let got = pull(Platform::new("linux", "arm64", Some("v8"))).unwrap();
    assert_eq!(got.manifest.digest, arm.manifest.digest);
    assert_eq!(
        got.manifest.platform,
        Some(Platform::new("linux", "arm64", None))
    );
    assert_eq!(pull(amd64()).unwrap().manifest.digest, amd.manifest.digest);
    let e = pull(Platform::new("linux", "s390x", None))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("registry {}: {reference} has no image for platform linux/s390x (available: linux/amd64, linux/arm64)", origin.host)
    );

    // The index digest, pinned, resolves from the store alone.
    let pinned = reference.with_digest(index);
    let offline = RegistryClient::new(RegistryOptions {
        registry_map: HashMap::from([(origin.host.clone(), "127.0.0.1:1".to_string())]),
        ..opts(tmp.path())
    })
    .unwrap();
    let local = rt
        .block_on(offline.pull(
            &dst,
            &r(&pinned.to_string().replace(&origin.host, "127.0.0.1:1")),
            &amd64(),
            &kiln_registry::NoProgress,
        ))
        .unwrap();
    assert_eq!(local.manifest.digest, amd.manifest.digest);

    // Mirrors: a dead one is skipped, the next one serves; a reference the mirror lacks
    // falls back to the origin (whose error is reported).
    let via_mirror = RegistryClient::new(RegistryOptions {
        mirrors: HashMap::from([(
            "kiln.invalid:5000".to_string(),
            vec!["127.0.0.1:1".to_string(), mirror.host.clone()],
        )]),
        registry_map: HashMap::from([(
            "kiln.invalid:5000".to_string(),
            "kiln.invalid:5000".to_string(),
        )]),
        ..opts(tmp.path())
    })
    .unwrap();
    let fresh = BlobStore::open(&tmp.path().join("fresh")).unwrap();
    let got = rt
        .block_on(via_mirror.pull(
            &fresh,
            &r("kiln.invalid:5000/lib/multi:v1"),
            &amd64(),
            &kiln_registry::NoProgress,
        ))
        .unwrap();
    assert_eq!(got.manifest.digest, amd.manifest.digest);
    let e = rt
        .block_on(via_mirror.pull(
            &fresh,
            &r("kiln.invalid:5000/lib/absent:v1"),
            &amd64(),
            &kiln_registry::NoProgress,
        ))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("registry kiln.invalid:5000: cannot reach"),
        "{e}"
    );
}
