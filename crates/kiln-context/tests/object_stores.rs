//! Object store contexts against real emulators on loopback: S3 (moto
//! server), Azure Blob (Azurite) and Google Cloud Storage
//! (gcp-storage-emulator). Objects are uploaded through object_store.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;
use kiln_context::open;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

fn upload(store: &dyn ObjectStore, key: &str, bytes: Vec<u8>) {
    block_on(store.put(
        &object_store::path::Path::from(key),
        PutPayload::from(bytes),
    ))
    .unwrap();
}

fn moto(port: u16) -> Server {
    start_server(
        Command::new("moto_server").args(["-H", "127.0.0.1", "-p", &port.to_string()]),
        port,
        "moto_server",
    )
}

fn s3_creds() -> [(&'static str, &'static str); 3] {
    [
        ("aws_access_key_id", "testing"),
        ("aws_secret_access_key", "testing"),
        ("aws_region", "us-east-1"),
    ]
}

/// Creates `bucket` in moto and uploads the sample context as
/// `ctx.tar.gz` and `ctx.tar.zst`.
fn s3_fixture(port: u16, bucket: &str) {
    let status = block_on(async {
        reqwest::Client::new()
            .put(format!("http://127.0.0.1:{port}/{bucket}"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "create bucket: {status}");
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_region("us-east-1")
        .build()
        .unwrap();
    upload(&store, "ctx.tar.gz", gzip(&sample_tar()));
    upload(&store, "dir/ctx.tar.zst", zstd(&sample_tar()));
}

#[test]
fn s3_context_from_moto() {
    let port = free_port();
    let _moto = moto(port);
    s3_fixture(port, "ctx-bucket");
    let endpoint = format!("http://127.0.0.1:{port}");

    for key in ["ctx.tar.gz", "dir/ctx.tar.zst"] {
        let work = tempfile::tempdir().unwrap();
        let mut o = opts_with(work.path(), &s3_creds());
        o.s3_endpoint = Some(endpoint.clone());
        o.s3_force_path_style = true;
        let ctx = open(&format!("s3://ctx-bucket/{key}"), None, &o)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_sample(&ctx);
    }

    // A missing key, a missing bucket: one line naming the object.
    for (spec, reason) in [
        ("s3://ctx-bucket/missing.tar.gz", "object not found"),
        ("s3://no-such-bucket/ctx.tar.gz", "bucket not found"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let mut o = opts_with(work.path(), &s3_creds());
        o.s3_endpoint = Some(endpoint.clone());
        o.s3_force_path_style = true;
        let e = open(spec, None, &o).unwrap_err();
        assert_eq!(e.to_string(), format!("build context {spec}: {reason}"));
        assert!(!work.path().join("context").exists());
    }

    // Kaniko's environment variables, and credentials from the AWS
    // environment, in a child process (the environment is per process).
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "s3_env_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KILN_CONTEXT_TEST_WORK", work.path())
        .env("S3_ENDPOINT", &endpoint)
        .env("S3_FORCE_PATH_STYLE", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

/// Run by `s3_context_from_moto` with S3_ENDPOINT, S3_FORCE_PATH_STYLE
/// and AWS credentials in the environment.
#[test]
#[ignore = "run by s3_context_from_moto in a child process"]
fn s3_env_child() {
    let work = std::env::var("KILN_CONTEXT_TEST_WORK").expect("set by the parent test");
    let ctx = open(
        "s3://ctx-bucket/ctx.tar.gz",
        None,
        &options(std::path::Path::new(&work)),
    )
    .unwrap();
    assert_sample(&ctx);
}

/// The well-known key of the storage emulator's `devstoreaccount1`.
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Creates a container in Azurite (object_store has no call for that):
/// one SharedKey-signed request made with Python's standard library.
const AZURE_CREATE_CONTAINER: &str = r#"
import base64, hmac, hashlib, sys, urllib.request, email.utils
port, container, key = sys.argv[1], sys.argv[2], base64.b64decode(sys.argv[3])
account = "devstoreaccount1"
headers = {"x-ms-date": email.utils.formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
canon = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
to_sign = "PUT\n" + "\n" * 11 + canon + f"/{account}/{account}/{container}\nrestype:container"
sig = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/{account}/{container}?restype=container",
    method="PUT", headers={**headers, "Content-Length": "0", "Authorization": f"SharedKey {account}:{sig}"})
print(urllib.request.urlopen(req).status)
"#;

#[test]
fn azure_blob_context_from_azurite() {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let _azurite = start_server(
        Command::new("azurite-blob")
            .current_dir(data.path())
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args([
                "--inMemoryPersistence",
                "--silent",
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ]),
        port,
        "azurite-blob",
    );
    let out = Command::new("python3")
        .args([
            "-c",
            AZURE_CREATE_CONTAINER,
            &port.to_string(),
            "ctx",
            AZURITE_KEY,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let endpoint = format!("http://127.0.0.1:{port}/devstoreaccount1");
    let store = object_store::azure::MicrosoftAzureBuilder::new()
        .with_account("devstoreaccount1")
        .with_access_key(AZURITE_KEY)
        .with_endpoint(endpoint.clone())
        .with_allow_http(true)
        .with_container_name("ctx")
        .build()
        .unwrap();
    upload(&store, "builds/ctx.tar.gz", gzip(&sample_tar()));

    let azure = [
        ("azure_storage_endpoint", endpoint.as_str()),
        ("azure_storage_account_key", AZURITE_KEY),
        ("allow_http", "true"),
    ];
    // The URL form users write, pointed at the emulator by the endpoint.
    let spec = "https://devstoreaccount1.blob.core.windows.net/ctx/builds/ctx.tar.gz";
    let work = tempfile::tempdir().unwrap();
    let ctx = open(spec, None, &opts_with(work.path(), &azure)).unwrap();
    assert_sample(&ctx);

    let mut with_account = azure.to_vec();
    with_account.push(("azure_storage_account_name", "devstoreaccount1"));
    let work = tempfile::tempdir().unwrap();
    let ctx = open(
        "azblob://ctx/builds/ctx.tar.gz",
        None,
        &opts_with(work.path(), &with_account),
    )
    .unwrap();
    assert_sample(&ctx);

    let missing = "https://devstoreaccount1.blob.core.windows.net/ctx/nope.tar.gz";
    let work = tempfile::tempdir().unwrap();
    let e = open(missing, None, &opts_with(work.path(), &azure)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("build context {missing}: object not found")
    );

    // A wrong key is refused, and the key never shows.
    let wrong = base64_of(&[7u8; 64]);
    let bad = [
        ("azure_storage_endpoint", endpoint.as_str()),
        ("azure_storage_account_key", wrong.as_str()),
        ("allow_http", "true"),
    ];
    let work = tempfile::tempdir().unwrap();
    let e = open(spec, None, &opts_with(work.path(), &bad))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("build context {spec}: ")), "{e}");
    assert!(e.contains("403"), "{e}");
    assert!(!e.contains(&wrong), "{e}");
}

fn base64_of(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn gcs_request_path_against_emulator() {
    let port = free_port();
    let _gcs = start_server(
        Command::new("gcp-storage-emulator").args([
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--in-memory",
            "--default-bucket",
            "ctxbucket",
            "--quiet",
        ]),
        port,
        "gcp-storage-emulator",
    );
    // (A bucket name without `-`: the emulator does not decode the
    // percent-encoded bucket names object_store sends.)
    let base = format!("http://127.0.0.1:{port}");
    // The emulator takes no OAuth: a service-account file that says so,
    // the way object_store is pointed at GCS emulators.
    let dir = tempfile::tempdir().unwrap();
    let account = dir.path().join("sa.json");
    std::fs::write(
        &account,
        format!(
            r#"{{"gcs_base_url": "{base}", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}}"#
        ),
    )
    .unwrap();
    let account = account.to_str().unwrap();

    let gcs = [("google_service_account", account)];
    // Only the miss is checked end to end: the emulator's object GET
    // omits the Last-Modified header object_store requires, so a hit
    // fails against it ("Last-Modified Header missing from response")
    // though real GCS sends it. The miss still proves the request path:
    // the service account settings, the base URL, the object path.
    let work = tempfile::tempdir().unwrap();
    let e = open(
        "gs://ctxbucket/nope.tar.gz",
        None,
        &opts_with(work.path(), &gcs),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "build context gs://ctxbucket/nope.tar.gz: object not found"
    );
    assert!(!work.path().join("context").exists());
}

#[test]
fn unknown_store_option_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    let e = open(
        "gs://b/k.tar.gz",
        None,
        &opts_with(work.path(), &[("aws_nonsense", "1")]),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "build context gs://b/k.tar.gz: unknown object store option \"aws_nonsense\""
    );
}
