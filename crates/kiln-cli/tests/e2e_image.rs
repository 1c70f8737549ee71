//! kiln's own image (images/kiln/Dockerfile), built by `scripts/image.sh`
//! with the kiln binary under test (self-hosting): its config and file tree
//! (checked with skopeo and umoci), reproducibility, and the image run by
//! podman — `/kaniko/executor` as the entrypoint building a Dockerfile from
//! a mounted context and from an http context named `localhost` (which
//! needs the image's libc, NSS and /etc files to work), and the debug
//! variant's busybox shell.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use kiln_testkit::tree::walk_order;

/// A fixed SOURCE_DATE_EPOCH: 2023-11-14T22:13:20Z.
const EPOCH: &str = "1700000000";
const CREATED: &str = "2023-11-14T22:13:20Z";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The kiln under test, copied into the sandbox once so that every build
/// in a test packages the same bytes even if cargo relinks the original.
fn kiln_copy(sb: &Sandbox) -> PathBuf {
    let copy = sb.path("kiln-under-test/kiln");
    if !copy.exists() {
        std::fs::create_dir_all(sb.path("kiln-under-test")).expect("mkdir");
        std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &copy).expect("copy kiln");
    }
    copy
}

/// Runs scripts/image.sh with the kiln under test and this sandbox's cache.
fn image_sh(sb: &Sandbox, cache: &str, args: &[&str]) -> Output {
    let out = Command::new(repo_root().join("scripts/image.sh"))
        .arg("--binary")
        .arg(kiln_copy(sb))
        .args(args)
        .env("KILN_CACHE_DIR", sb.path(cache))
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("TMPDIR", sb.dir.path())
        .output()
        .expect("run scripts/image.sh");
    assert_success(&out);
    out
}

fn git_head() -> String {
    let root = repo_root();
    run_tool("git", &["-C", &root.to_string_lossy(), "rev-parse", "HEAD"])
        .trim()
        .to_string()
}

/// The shared libraries the binary under test loads (ldd), by file name,
/// plus the name-service modules the image adds.
fn expected_libs(sb: &Sandbox) -> BTreeSet<String> {
    let ldd = run_tool("ldd", &[&kiln_copy(sb).to_string_lossy()]);
    let mut libs: BTreeSet<String> = ldd
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            match fields.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(*path),
                [path, ..] if path.starts_with('/') => Some(*path),
                _ => None,
            }
        })
        .filter_map(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().to_string())
        .collect();
    libs.insert("libnss_files.so.2".into());
    libs.insert("libnss_dns.so.2".into());
    libs
}

/// Unpacks an OCI archive (a tarred OCI layout) with tar + umoci.
fn unpack_archive(sb: &Sandbox, archive: &Path, tag: &str, name: &str) -> PathBuf {
    let layout = sb.path(&format!("{name}-layout"));
    std::fs::create_dir_all(&layout).expect("mkdir");
    run_tool(
        "tar",
        &[
            "-xf",
            &archive.to_string_lossy(),
            "-C",
            &layout.to_string_lossy(),
        ],
    );
    umoci_unpack(&layout, tag, &sb.path(&format!("{name}-bundle")))
}

/// A podman image loaded from a docker archive, removed on drop.
struct Loaded(String);

impl Loaded {
    fn load(archive: &Path, tag: &str) -> Loaded {
        let out = podman(&["load", "-i", &archive.to_string_lossy()]);
        assert_success(&out);
        Loaded(tag.to_string())
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "-f", &self.0]);
    }
}

#[test]
fn image_config_tree_and_reproducible_digest() {
    let sb = Sandbox::new();
    let first = sb.path("kiln.tar");
    let second = sb.path("kiln-again.tar");
    let out = image_sh(
        &sb,
        "cache-a",
        &[
            "--tag",
            "kiln-e2e:image",
            "--output",
            &format!("oci-archive:{}", first.display()),
        ],
    );
    let digest = stdout(&out).trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert!(
        stderr(&out).contains("image.sh: built kiln-e2e:image (kiln)"),
        "{}",
        stderr(&out)
    );
    let first_ref = format!("oci-archive:{}:image", first.display());
    let cfg = skopeo_config(&first_ref);
    let c = &cfg["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/kaniko/executor"]));
    assert!(c.get("Cmd").is_none_or(|v| v.is_null()), "{c}");
    assert_eq!(c["User"], "0:0");
    assert_eq!(c["WorkingDir"], "/workspace");
    assert_eq!(
        c["Env"],
        serde_json::json!([
            "PATH=/kiln:/kaniko",
            "HOME=/root",
            "USER=root",
            "SSL_CERT_FILE=/kiln/ssl/certs/ca-certificates.crt",
            "SSL_CERT_DIR=/kaniko/ssl/certs",
            "DOCKER_CONFIG=/kaniko/.docker/",
            "TMPDIR=/kiln/tmp"
        ])
    );
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "kiln");
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.revision"], git_head());
    assert_eq!(labels["org.opencontainers.image.created"], CREATED);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(cfg["created"], CREATED);
    assert_eq!(cfg["os"], "linux");

    // The file tree: exactly these paths, with these modes and owners.
    let rootfs = unpack_archive(&sb, &first, "image", "kiln");
    let libs = expected_libs(&sb);
    let mut expected: Vec<String> = [
        "etc",
        "etc/group",
        "etc/hosts",
        "etc/nsswitch.conf",
        "etc/passwd",
        "etc/ssl",
        "etc/ssl/certs",
        "etc/ssl/certs/ca-certificates.crt",
        "kaniko",
        "kaniko/.docker",
        "kaniko/executor",
        "kaniko/ssl",
        "kaniko/ssl/certs",
        "kaniko/ssl/certs/ca-certificates.crt",
        "kiln",
        "kiln/.in-place-container",
        "kiln/kiln",
        "kiln/lib",
        "kiln/ssl",
        "kiln/ssl/certs",
        "kiln/ssl/certs/ca-certificates.crt",
        "kiln/tmp",
        "workspace",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(libs.iter().map(|l| format!("kiln/lib/{l}")))
    .collect();
    expected.sort();
    assert_eq!(walk_order(&rootfs), expected);
    for dir in [
        "etc",
        "etc/ssl/certs",
        "kaniko",
        "kaniko/.docker",
        "kaniko/ssl",
        "kaniko/ssl/certs",
        "kiln",
        "kiln/lib",
        "kiln/ssl",
        "kiln/ssl/certs",
        "workspace",
    ] {
        assert_eq!(mode_of(&rootfs.join(dir)), 0o755, "{dir}");
    }
    for path in &expected {
        assert_eq!(owner_of(&rootfs.join(path)), (0, 0), "{path}");
    }
    // kiln's TMPDIR: sticky and world-writable, kept by in-place builds.
    assert_eq!(mode_of(&rootfs.join("kiln/tmp")), 0o1777);
    let kiln = rootfs.join("kiln/kiln");
    assert_eq!(mode_of(&kiln), 0o755);
    assert_eq!(
        std::fs::read_link(rootfs.join("kaniko/executor")).expect("executor is a link"),
        Path::new("/kiln/kiln")
    );
    // The CA bundle sits under /kiln (never overwritten by an in-place
    // build); Kaniko's and Debian's paths link to it.
    for link in [
        "etc/ssl/certs/ca-certificates.crt",
        "kaniko/ssl/certs/ca-certificates.crt",
    ] {
        assert_eq!(
            std::fs::read_link(rootfs.join(link)).expect("link"),
            Path::new("/kiln/ssl/certs/ca-certificates.crt"),
            "{link}"
        );
    }
    assert_eq!(
        std::fs::read(rootfs.join("kiln/ssl/certs/ca-certificates.crt")).expect("bundle"),
        std::fs::read("/etc/ssl/certs/ca-certificates.crt").expect("host bundle")
    );
    assert_eq!(
        mode_of(&rootfs.join("kiln/ssl/certs/ca-certificates.crt")),
        0o644
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("kiln/.in-place-container")).expect("marker"),
        "This container is kiln's image: kiln may build in place here (its own root filesystem is expendable).\n"
    );
    assert_eq!(mode_of(&rootfs.join("kiln/.in-place-container")), 0o644);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/passwd")).expect("passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/nsswitch.conf")).expect("nsswitch"),
        "passwd: files\ngroup: files\nhosts: files dns\n"
    );
    // The binary is stripped and loads its libraries from /kiln/lib only,
    // so base layers extracted over / cannot swap its libc.
    let interp = run_tool(
        "patchelf",
        &["--print-interpreter", &kiln.to_string_lossy()],
    );
    assert_eq!(interp.trim(), "/kiln/lib/ld-linux-x86-64.so.2");
    let rpath = run_tool("patchelf", &["--print-rpath", &kiln.to_string_lossy()]);
    assert_eq!(rpath.trim(), "/kiln/lib");
    let sections = run_tool("readelf", &["-S", "-W", &kiln.to_string_lossy()]);
    assert!(!sections.contains(".debug_info"), "not stripped");
    assert!(!sections.contains(".symtab"), "not stripped");

    // Reproducible: a second build from a fresh cache and a fresh staging
    // directory gives the same image, byte for byte.
    let again = image_sh(
        &sb,
        "cache-b",
        &[
            "--tag",
            "kiln-e2e:image",
            "--output",
            &format!("oci-archive:{}", second.display()),
        ],
    );
    let second_ref = format!("oci-archive:{}:image", second.display());
    assert_eq!(
        skopeo_config(&second_ref),
        cfg,
        "the same config and layer contents (diff IDs)"
    );
    assert_eq!(stdout(&again).trim(), digest, "the same compressed layers");
    assert_eq!(skopeo_manifest(&first_ref), skopeo_manifest(&second_ref));
}

#[test]
fn executor_entrypoint_builds_from_a_mounted_and_an_http_context() {
    let sb = Sandbox::new();
    let archive = sb.path("kiln-docker.tar");
    let tag = format!("localhost/kiln-e2e-image:{}", std::process::id());
    image_sh(
        &sb,
        "cache",
        &[
            "--tag",
            &tag,
            "--output",
            &format!("docker-archive:{}", archive.display()),
        ],
    );
    let _image = Loaded::load(&archive, &tag);

    // kiln itself, and Kaniko's command line through the entrypoint.
    let version = podman_run(&[
        "--network",
        "none",
        "--entrypoint",
        "/kiln/kiln",
        &tag,
        "--version",
    ]);
    assert_success(&version);
    assert_eq!(
        stdout(&version),
        format!("kiln {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = podman_run(&["--network", "none", &tag, "--help"]);
    assert_success(&help);
    assert!(
        stdout(&help).contains("Usage: executor executor [OPTIONS]"),
        "{}",
        stdout(&help)
    );

    // A Kaniko-style Job: the context mounted at /workspace (the executor's
    // default), the result written to a mounted directory.
    sb.write("hello.txt", "hello from the context\n");
    sb.dockerfile("FROM scratch\nCOPY hello.txt /hello.txt\nCMD [\"/hello\"]\n");
    let out_dir = sb.path("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let ctx_mount = format!("{}:/workspace:ro", sb.context().display());
    let out_mount = format!("{}:/out", out_dir.display());
    let run = podman_run(&[
        "--network",
        "none",
        "-v",
        &ctx_mount,
        "-v",
        &out_mount,
        &tag,
        "--no-push",
        "--tar-path",
        "/out/image.tar",
        "--oci-layout-path",
        "/out/layout",
        "--digest-file",
        "/out/digest",
    ]);
    assert_success(&run);
    let digest = std::fs::read_to_string(out_dir.join("digest")).expect("digest file");
    assert_eq!(stdout(&run).trim(), digest);
    let cfg = skopeo_config(&format!(
        "docker-archive:{}",
        out_dir.join("image.tar").display()
    ));
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/hello"]));
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(1));
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("layout/index.json")).expect("index.json"),
    )
    .expect("json");
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());

    // The context from http://localhost:PORT: the name resolves through the
    // image's libc, nsswitch.conf and /etc/hosts.
    let served = sb.path("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    run_tool(
        "tar",
        &[
            "-czf",
            &served.join("ctx.tar.gz").to_string_lossy(),
            "-C",
            &sb.context().to_string_lossy(),
            ".",
        ],
    );
    let http = StaticServer::http(&served);
    let url = format!("http://localhost:{}/ctx.tar.gz", http.port);
    let run = podman_run(&[
        "--network",
        "host",
        "-v",
        &out_mount,
        &tag,
        "--context",
        &url,
        "--destination",
        "localhost/kiln-e2e/hello:http",
        "--no-push",
        "--oci-layout-path",
        "/out/from-http",
    ]);
    assert_success(&run);
    // The executor writes Docker media types, as Kaniko does; umoci reads
    // OCI ones, so skopeo converts first (the layout holds one image, with
    // no ref name, as Kaniko writes it).
    let converted = sb.path("from-http-oci");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--format",
            "oci",
            &format!("oci:{}", out_dir.join("from-http").display()),
            &format!("oci:{}:http", converted.display()),
        ],
    );
    let rootfs = umoci_unpack(&converted, "http", &sb.path("http-bundle"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("hello.txt")).expect("hello.txt"),
        "hello from the context\n"
    );
}

#[test]
fn https_context_trusts_a_ca_mounted_into_kaniko_ssl_certs() {
    let sb = Sandbox::new();
    let archive = sb.path("kiln-docker.tar");
    let tag = format!("localhost/kiln-e2e-image-tls:{}", std::process::id());
    image_sh(
        &sb,
        "cache",
        &[
            "--tag",
            &tag,
            "--output",
            &format!("docker-archive:{}", archive.display()),
        ],
    );
    let _image = Loaded::load(&archive, &tag);
    sb.write("hello.txt", "hello over https\n");
    sb.dockerfile("FROM scratch\nCOPY hello.txt /hello.txt\n");
    let served = sb.path("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    run_tool(
        "tar",
        &[
            "-czf",
            &served.join("ctx.tar.gz").to_string_lossy(),
            "-C",
            &sb.context().to_string_lossy(),
            ".",
        ],
    );
    let https = StaticServer::https(&served, &sb.path("tls"));
    let url = format!("https://localhost:{}/ctx.tar.gz", https.port);
    // The image's own bundle does not know the test CA.
    let refused = podman_run(&["--network", "host", &tag, "--context", &url, "--no-push"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        stderr(&refused)
    );
    // Mounted into /kaniko/ssl/certs/ as with Kaniko, it is trusted.
    let out_dir = sb.path("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let ca_mount = format!(
        "{}:/kaniko/ssl/certs/extra-ca.crt:ro",
        https.ca.as_ref().expect("https has a CA").display()
    );
    let out_mount = format!("{}:/out", out_dir.display());
    let run = podman_run(&[
        "--network",
        "host",
        "-v",
        &ca_mount,
        "-v",
        &out_mount,
        &tag,
        "--context",
        &url,
        "--no-push",
        "--tar-path",
        "/out/image.tar",
    ]);
    assert_success(&run);
    let converted = sb.path("https-oci");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--format",
            "oci",
            &format!("docker-archive:{}", out_dir.join("image.tar").display()),
            &format!("oci:{}:https", converted.display()),
        ],
    );
    let rootfs = umoci_unpack(&converted, "https", &sb.path("https-bundle"));
    assert_eq!(walk_order(&rootfs), ["hello.txt"]);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("hello.txt")).expect("hello.txt"),
        "hello over https\n"
    );
}

#[test]
fn debug_variant_has_a_busybox_shell() {
    let sb = Sandbox::new();
    let archive = sb.path("kiln-debug-docker.tar");
    let tag = format!("localhost/kiln-e2e-image-debug:{}", std::process::id());
    let out = image_sh(
        &sb,
        "cache",
        &[
            "--debug",
            "--tag",
            &tag,
            "--output",
            &format!("docker-archive:{}", archive.display()),
        ],
    );
    assert!(stderr(&out).contains("(debug)"), "{}", stderr(&out));
    let cfg = skopeo_config(&format!("docker-archive:{}", archive.display()));
    let c = &cfg["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/kaniko/executor"]));
    assert_eq!(c["Shell"], serde_json::json!(["/busybox/sh", "-c"]));
    assert_eq!(c["Env"][0], "PATH=/kiln:/kaniko:/busybox");

    let _image = Loaded::load(&archive, &tag);
    let run = podman_run(&[
        "--network",
        "none",
        "--entrypoint",
        "/busybox/sh",
        &tag,
        "-c",
        "echo \"$PATH\"; readlink /busybox/sh; cat /kiln/.in-place-container; executor --help | head -n 3 | tail -n 1",
    ]);
    assert_success(&run);
    assert_eq!(
        stdout(&run),
        "/kiln:/kaniko:/busybox\n/busybox/busybox\nThis container is kiln's image: kiln may build in place here (its own root filesystem is expendable).\nUsage: executor executor [OPTIONS]\n"
    );
}
