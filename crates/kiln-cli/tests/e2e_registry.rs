//! End-to-end registry tests of the `kiln` binary against real CNCF distribution
//! registries: client certificates (mutual TLS) by flag and by Docker's `certs.d`
//! directory, Kaniko's `--insecure-pull` relaxing pulls but not pushes, and
//! multi-platform builds pushed and exported as one image index, read back by skopeo
//! and umoci.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{assert_success, run_tool, stderr, stdout, Registry, Sandbox};
use kiln_testkit::registry::Mode;

/// What these tests ask of a TLS registry (kiln-testkit's, in `Tls` or
/// `MutualTls` mode).
trait TlsRegistry {
    fn ca(&self) -> String;
    /// `--registry-client-cert` value for this registry.
    fn client_cert_flag(&self) -> String;
    fn cert_dir_flag(&self) -> String;
    /// `skopeo inspect --raw` of `REPO:TAG` here.
    fn raw(&self, image: &str) -> String;
    /// Copies an OCI layout image into this registry with skopeo.
    fn put(&self, layout: &Path, tag: &str, image: &str);
}

impl TlsRegistry for Registry {
    fn ca(&self) -> String {
        self.file("ca.crt").display().to_string()
    }

    fn client_cert_flag(&self) -> String {
        format!(
            "{}={},{}",
            self.host,
            self.file("client.cert").display(),
            self.file("client.key").display()
        )
    }

    fn cert_dir_flag(&self) -> String {
        format!("--cert-dir={}", self.cert_dir().display())
    }

    fn raw(&self, image: &str) -> String {
        run_tool(
            "skopeo",
            &[
                "inspect",
                &self.cert_dir_flag(),
                "--raw",
                &format!("docker://{}/{image}", self.host),
            ],
        )
    }

    fn put(&self, layout: &Path, tag: &str, image: &str) {
        run_tool(
            "skopeo",
            &[
                "copy",
                "--quiet",
                &format!("--dest-cert-dir={}", self.cert_dir().display()),
                &format!("oci:{}:{tag}", layout.display()),
                &format!("docker://{}/{image}", self.host),
            ],
        );
    }
}

fn sha256_of(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(bytes)
            .expect("write");
    }
    let out = child.wait_with_output().expect("sha256sum");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    format!(
        "sha256:{}",
        text.split_whitespace().next().unwrap_or_default()
    )
}

/// Builds a one-file image into an OCI layout `name` (tag `v1`) in the sandbox.
fn small_layout(sb: &Sandbox, name: &str, file: &str, content: &str) -> PathBuf {
    let ctx = sb.path(&format!("{name}-ctx"));
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(ctx.join(file), content).expect("write");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nCOPY {file} /{file}\n"),
    )
    .expect("write");
    let layout = sb.path(name);
    let out = sb.kiln(&[
        "build",
        "-t",
        "x:v1",
        "--output",
        &format!("type=oci,dest={}", layout.display()),
        &ctx.display().to_string(),
    ]);
    assert_success(&out);
    layout
}

#[test]
fn client_certificates_by_flag_and_by_certs_dir() {
    let reg = Registry::start(Mode::MutualTls);
    let sb = Sandbox::new();
    sb.write("hello.txt", "hello mtls\n");
    sb.dockerfile("FROM scratch\nCOPY hello.txt /hello.txt\n");
    let ctx = sb.context().display().to_string();
    let tag = format!("{}/mtls/app:v1", reg.host);
    let ca_flag = format!("{}={}", reg.host, reg.ca());

    // The CA alone: refused, and the error names the registry and the fix.
    let out = sb.kiln(&[
        "build",
        "--push",
        "-t",
        &tag,
        "--registry-certificate",
        &ca_flag,
        &ctx,
    ]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "registry {}: TLS failed for checking blob",
            reg.host
        )) && err.contains(&format!(
            "the registry requires a TLS client certificate: give one with --registry-client-cert {}=CERT,KEY",
            reg.host
        )),
        "{err}"
    );

    // kiln build --registry-client-cert HOST=CERT,KEY: pushed, and skopeo (presenting
    // the same certificate) reads the manifest whose digest kiln printed.
    let out = sb.kiln(&[
        "build",
        "--push",
        "-t",
        &tag,
        "--registry-certificate",
        &ca_flag,
        "--registry-client-cert",
        &reg.client_cert_flag(),
        &ctx,
    ]);
    assert_success(&out);
    let digest = stdout(&out).trim().to_string();
    assert_eq!(sha256_of(reg.raw("mtls/app:v1").as_bytes()), digest);

    // Kaniko's executor flag: pulls the image just pushed as its base and pushes
    // the result to the same registry.
    sb.dockerfile(&format!("FROM {tag}\nCOPY hello.txt /again.txt\n"));
    let out = sb.kiln(&[
        "executor",
        "--context",
        &ctx,
        "--dockerfile",
        "Dockerfile",
        "--destination",
        &format!("{}/mtls/derived:v1", reg.host),
        "--registry-certificate",
        &ca_flag,
        "--registry-client-cert",
        &reg.client_cert_flag(),
    ]);
    assert_success(&out);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let manifest: serde_json::Value =
        serde_json::from_str(&reg.raw("mtls/derived:v1")).expect("json");
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(2));

    // Docker's convention: ~/.docker/certs.d/HOST/{ca.crt,client.cert,client.key}
    // with no flag at all.
    let home = sb.path("home");
    let certs = home.join(".docker").join("certs.d").join(&reg.host);
    std::fs::create_dir_all(&certs).expect("mkdir");
    for (from, to) in [
        ("ca.crt", "ca.crt"),
        ("client.cert", "client.cert"),
        ("client.key", "client.key"),
    ] {
        std::fs::copy(reg.file(from), certs.join(to)).expect("copy");
    }
    sb.dockerfile("FROM scratch\nCOPY hello.txt /hello.txt\n");
    let out = sb.kiln_env(
        &[
            "build",
            "--push",
            "-t",
            &format!("{}/mtls/by-dir:v1", reg.host),
            &ctx,
        ],
        &[("HOME", &home.display().to_string())],
    );
    assert_success(&out);
    assert_eq!(
        sha256_of(reg.raw("mtls/by-dir:v1").as_bytes()),
        stdout(&out).trim()
    );
}

#[test]
fn insecure_pull_relaxes_pulls_not_pushes() {
    let plain = Registry::plain();
    let source = Registry::start(Mode::Tls);
    let dest = Registry::start(Mode::Tls);
    let sb = Sandbox::new();

    // The base image on a plain-HTTP registry, a COPY --from image on a TLS registry
    // whose CA kiln is not given.
    let base = small_layout(&sb, "base", "base.txt", "from the plain registry\n");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", base.display()),
            &format!("docker://{}/base:v1", plain.host),
        ],
    );
    let extra = small_layout(&sb, "extra", "extra.txt", "from the TLS registry\n");
    source.put(&extra, "v1", "extra:v1");

    sb.dockerfile(&format!(
        "FROM {}/base:v1\nCOPY --from={}/extra:v1 /extra.txt /extra.txt\n",
        plain.host, source.host
    ));
    let ctx = sb.context().display().to_string();
    let destination = format!("{}/out/app:v1", dest.host);
    let executor = |extra: &[&str]| {
        let mut args = vec![
            "executor",
            "--context",
            &ctx,
            "--dockerfile",
            "Dockerfile",
            "--destination",
            &destination,
        ];
        args.extend_from_slice(extra);
        sb.kiln(&args)
    };

    // Without --insecure-pull the TLS source is not trusted.
    let dest_ca = format!("{}={}", dest.host, dest.ca());
    let out = executor(&["--registry-certificate", &dest_ca]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "registry {}: TLS failed for fetching the manifest of {}/extra:v1: the registry's TLS certificate is not trusted",
            source.host, source.host
        )),
        "{}",
        stderr(&out)
    );

    // --insecure-pull: both pulls work, but the push still verifies the destination.
    let out = executor(&["--insecure-pull"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(!err.contains("warning"), "{err}");
    assert!(
        err.contains(&format!(
            "registry {}: TLS failed for checking blob",
            dest.host
        )) && err.contains("the registry's TLS certificate is not trusted"),
        "{err}"
    );

    // Kaniko's other spelling, with the destination's CA: the build is pushed.
    let out = executor(&["--skip-tls-verify-pull", "--registry-certificate", &dest_ca]);
    assert_success(&out);
    let digest = stdout(&out).trim().to_string();
    let raw = dest.raw("out/app:v1");
    assert_eq!(sha256_of(raw.as_bytes()), digest);
    let manifest: serde_json::Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(2));

    // The pushed image holds both files.
    let layout = sb.path("pushed");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &dest.cert_dir_flag().replace("--cert-dir", "--src-cert-dir"),
            &format!("docker://{destination}"),
            &format!("oci:{}:v1", layout.display()),
        ],
    );
    let rootfs = common::umoci_unpack(&layout, "v1", &sb.path("bundle"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("base.txt"))
            .ok()
            .as_deref(),
        Some("from the plain registry\n")
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("extra.txt"))
            .ok()
            .as_deref(),
        Some("from the TLS registry\n")
    );

    // kiln build spells it --insecure-pull too.
    let out = sb.kiln(&[
        "build",
        "--insecure-pull",
        "--push",
        "-t",
        &format!("{}/out/build:v1", dest.host),
        "--registry-certificate",
        &dest_ca,
        &ctx,
    ]);
    assert_success(&out);
}

#[test]
fn multi_platform_build_is_one_index() {
    let reg = Registry::plain();
    let sb = Sandbox::new();
    sb.busybox();
    sb.write("hello.txt", "hello from every platform\n");
    // The generator stage runs on the build machine and writes the target
    // architecture; the final stage only copies.
    sb.dockerfile(
        "FROM --platform=$BUILDPLATFORM scratch AS gen\nCOPY busybox /bin/busybox\nARG TARGETARCH\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo $TARGETARCH > /arch\"]\n\nFROM scratch\nARG TARGETARCH\nCOPY hello.txt /hello-$TARGETARCH.txt\nCOPY --from=gen /arch /arch\n",
    );
    let ctx = sb.context().display().to_string();
    let tag = format!("{}/multi/app:v1", reg.host);
    let layout = sb.path("out-layout");
    let archive = sb.path("out.tar");
    let out = sb.kiln(&[
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &tag,
        "--push",
        "--output",
        &format!("type=oci,dest={}", layout.display()),
        "--output",
        &format!("type=oci,dest={}", archive.display()),
        "--metadata-file",
        &sb.path("meta.json").display().to_string(),
        &ctx,
    ]);
    assert_success(&out);
    let digest = stdout(&out).trim().to_string();

    // The tag names an index listing both platforms.
    let raw = run_tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{tag}"),
        ],
    );
    assert_eq!(sha256_of(raw.as_bytes()), digest);
    let index: serde_json::Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: Vec<(String, String)> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                m["platform"]["os"].as_str().unwrap_or_default().to_string(),
                m["platform"]["architecture"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        vec![
            ("linux".to_string(), "amd64".to_string()),
            ("linux".to_string(), "arm64".to_string())
        ]
    );

    // Each platform's image, as a client on that platform gets it.
    for arch in ["amd64", "arm64"] {
        let dir = sb.path(&format!("copy-{arch}"));
        run_tool(
            "skopeo",
            &[
                "--override-arch",
                arch,
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                &format!("docker://{tag}"),
                &format!("oci:{}:{arch}", dir.display()),
            ],
        );
        let config: serde_json::Value = serde_json::from_str(&run_tool(
            "skopeo",
            &[
                "inspect",
                "--config",
                "--raw",
                &format!("oci:{}:{arch}", dir.display()),
            ],
        ))
        .expect("json");
        assert_eq!(config["architecture"], arch);
        let rootfs = common::umoci_unpack(&dir, arch, &sb.path(&format!("bundle-{arch}")));
        assert_eq!(
            std::fs::read_to_string(rootfs.join("arch")).ok().as_deref(),
            Some(format!("{arch}\n").as_str())
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join(format!("hello-{arch}.txt")))
                .ok()
                .as_deref(),
            Some("hello from every platform\n")
        );
    }

    // The OCI layout and the OCI archive hold the same index under the tag's name.
    let top: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(layout.join("index.json")).expect("index.json"),
    )
    .expect("json");
    let entries = top["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), 1, "{top}");
    assert_eq!(entries[0]["digest"], digest.as_str());
    assert_eq!(
        entries[0]["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    for image in [
        format!("oci:{}:v1", layout.display()),
        format!("oci-archive:{}:v1", archive.display()),
    ] {
        let raw = run_tool("skopeo", &["inspect", "--raw", &image]);
        assert_eq!(sha256_of(raw.as_bytes()), digest, "{image}");
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.path("meta.json")).expect("metadata"))
            .expect("json");
    assert_eq!(meta["containerimage.digest"], digest.as_str());
    assert_eq!(
        meta["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );

    // A docker archive holds one image: refused with a clear error.
    let out = sb.kiln(&[
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "--output",
        &format!("type=docker,dest={}", sb.path("d.tar").display()),
        &ctx,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "docker archive {} holds one image: build one --platform for it, or use type=oci / type=local",
            sb.path("d.tar").display()
        )),
        "{}",
        stderr(&out)
    );
}
