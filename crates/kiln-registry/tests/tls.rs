//! TLS per registry against a real CNCF distribution registry: mutual TLS (a client
//! certificate given explicitly or found in a Docker-style `certs.d` directory), and
//! `insecure_pull`, which relaxes TLS for pulls only.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::HashMap;
use std::path::Path;

use harness::{build_image, Mode, Registry};
use kiln_image::{BlobStore, Digest, Platform};
use kiln_registry::{ClientCert, NoProgress, Reference, RegistryClient, RegistryOptions};

/// Options with no docker config and no certificate directories of the machine's own.
fn opts(dir: &Path) -> RegistryOptions {
    RegistryOptions {
        docker_config: Some(dir.join("no-config.json")),
        certs_dirs: Vec::new(),
        max_retries: 1,
        retry_base_delay: std::time::Duration::from_millis(10),
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

fn amd64() -> Platform {
    Platform::new("linux", "amd64", None)
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let reg = Registry::start(Mode::MutualTls);
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("s")).unwrap();
    let img = build_image(&store, "mtls", 2, 20_000);
    let dest = r(&format!("{}/mtls/app:v1", reg.host));
    let ca = reg.ca.clone().unwrap();
    let (cert, key) = reg.client_cert.clone().unwrap();
    let rt = rt();

    // The CA alone: the registry refuses the connection, and the error says which
    // registry wants a client certificate and how to give one.
    let no_cert = RegistryClient::new(RegistryOptions {
        ca_files: HashMap::from([(reg.host.clone(), ca.clone())]),
        ..opts(tmp.path())
    })
    .unwrap();
    let e = rt
        .block_on(no_cert.push(&store, &img, &dest, &NoProgress))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("registry {}:", reg.host)), "{e}");
    assert!(
        e.contains(&format!(
            "the registry requires a TLS client certificate: give one with --registry-client-cert {}=CERT,KEY",
            reg.host
        )),
        "{e}"
    );

    // With the client certificate the push succeeds, and skopeo (presenting the same
    // certificate) reads the manifest kiln pushed.
    let client = RegistryClient::new(RegistryOptions {
        ca_files: HashMap::from([(reg.host.clone(), ca.clone())]),
        client_certs: HashMap::from([(
            reg.host.clone(),
            ClientCert {
                cert: cert.clone(),
                key: key.clone(),
            },
        )]),
        ..opts(tmp.path())
    })
    .unwrap();
    let d = rt
        .block_on(client.push(&store, &img, &dest, &NoProgress))
        .unwrap();
    assert_eq!(d, img.manifest.digest);
    assert_eq!(Digest::sha256(&reg.skopeo_raw_manifest("mtls/app:v1")), d);

    // Docker's convention: certs.d/HOST/{ca.crt,client.cert,client.key} alone is enough.
    let certs_d = tmp.path().join("certs.d");
    let host_dir = certs_d.join(&reg.host);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(&ca, host_dir.join("ca.crt")).unwrap();
    std::fs::copy(&cert, host_dir.join("client.cert")).unwrap();
    std::fs::copy(&key, host_dir.join("client.key")).unwrap();
    let by_dir = RegistryClient::new(RegistryOptions {
        certs_dirs: vec![tmp.path().join("missing"), certs_d.clone()],
        ..opts(tmp.path())
    })
    .unwrap();
    let back = BlobStore::open(&tmp.path().join("back")).unwrap();
    let got = rt
        .block_on(by_dir.pull(&back, &dest, &amd64(), &NoProgress))
        .unwrap();
    assert_eq!(got.manifest.digest, d);
    assert_eq!(
        kiln_image::load_image(&back, &d).unwrap(),
        kiln_image::load_image(&store, &d).unwrap()
    );

    // A client.cert without its key is a configuration error naming the file.
    std::fs::remove_file(host_dir.join("client.key")).unwrap();
    let half = RegistryClient::new(RegistryOptions {
        certs_dirs: vec![certs_d],
        ..opts(tmp.path())
    })
    .unwrap();
    let e = rt
        .block_on(half.pull(
            &BlobStore::open(&tmp.path().join("b2")).unwrap(),
            &dest,
            &amd64(),
            &NoProgress,
        ))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "registry {}: client certificate {} has no key {} beside it",
            reg.host,
            host_dir.join("client.cert").display(),
            host_dir.join("client.key").display()
        )
    );

    // A key that is not PEM: a configuration error naming both files.
    let junk = tmp.path().join("junk.key");
    std::fs::write(&junk, "not a key").unwrap();
    let bad = RegistryClient::new(RegistryOptions {
        client_certs: HashMap::from([(
            reg.host.clone(),
            ClientCert {
                cert: cert.clone(),
                key: junk.clone(),
            },
        )]),
        ..opts(tmp.path())
    })
    .unwrap();
    let e = rt
        .block_on(bad.push(&store, &img, &dest, &NoProgress))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "registry {}: client certificate {} with key {} is not usable",
            reg.host,
            cert.display(),
            junk.display()
        )),
        "{e}"
    );
}

#[test]
fn insecure_pull_relaxes_pulls_but_not_pushes() {
    // A TLS registry whose CA the client is not told about.
    let reg = Registry::start(Mode::Tls);
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&tmp.path().join("s")).unwrap();
    let img = build_image(&store, "ipull", 1, 10_000);
    let layout = tmp.path().join("layout");
    harness::layout(&store, &img, &layout, "v1");
    reg.skopeo_push(&layout, "v1", "base/img:v1");
    let src = r(&format!("{}/base/img:v1", reg.host));
    let dest = r(&format!("{}/out/img:v1", reg.host));
    let rt = rt();

    // Verified TLS: the pull fails on the unknown CA.
    let strict = RegistryClient::new(opts(tmp.path())).unwrap();
    let e = rt
        .block_on(strict.pull(
            &BlobStore::open(&tmp.path().join("p0")).unwrap(),
            &src,
            &amd64(),
            &NoProgress,
        ))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("registry {}:", reg.host)), "{e}");
    assert!(e.contains("certificate"), "{e}");

    // insecure_pull: the pull works without verification ...
    let relaxed = RegistryClient::new(RegistryOptions {
        insecure_pull: true,
        ..opts(tmp.path())
    })
    .unwrap();
    let pulled = BlobStore::open(&tmp.path().join("p1")).unwrap();
    let got = rt
        .block_on(relaxed.pull(&pulled, &src, &amd64(), &NoProgress))
        .unwrap();
    assert_eq!(got.manifest.digest, img.manifest.digest);

    // ... but a push to the same registry still verifies its certificate.
    let e = rt
        .block_on(relaxed.push(&pulled, &got, &dest, &NoProgress))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("registry {}:", reg.host)), "{e}");
    assert!(e.contains("certificate"), "{e}");

    // Given the CA for the destination, the same client pushes what it pulled.
    let both = RegistryClient::new(RegistryOptions {
        insecure_pull: true,
        ca_files: HashMap::from([(reg.host.clone(), reg.ca.clone().unwrap())]),
        ..opts(tmp.path())
    })
    .unwrap();
    let d = rt
        .block_on(both.push(&pulled, &got, &dest, &NoProgress))
        .unwrap();
    assert_eq!(d, img.manifest.digest);
    assert_eq!(Digest::sha256(&reg.skopeo_raw_manifest("out/img:v1")), d);
}

#[test]
fn client_cert_flags_parse() {
    let (host, c) = ClientCert::parse_flag("my.registry:5000=/c/cert.pem,/c/key.pem").unwrap();
    assert_eq!(host, "my.registry:5000");
    assert_eq!(
        c,
        ClientCert {
            cert: "/c/cert.pem".into(),
            key: "/c/key.pem".into()
        }
    );
    for bad in ["host", "host=/c", "=/a,/b", "h=,/b", "h=/a,", "h=/a,/b,/c"] {
        assert_eq!(
            ClientCert::parse_flag(bad).unwrap_err().to_string(),
            format!(
                "--registry-client-cert {bad}: expected HOST=/path/to/cert.pem,/path/to/key.pem"
            )
        );
    }
}
