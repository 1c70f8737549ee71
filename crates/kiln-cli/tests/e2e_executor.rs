//! `kiln executor` with Kaniko's flags, against a real CNCF distribution
//! registry on loopback: push to destinations, Kaniko's digest files, a
//! tarball, and a base image pulled back from the registry.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn kaniko_flags_push_to_a_registry_and_write_digest_files() {
    let reg = Registry::plain();
    let sb = Sandbox::new();
    sb.busybox();
    sb.write("app/hello.txt", "hello\n");
    sb.dockerfile(
        "FROM scratch\nCOPY busybox /bin/busybox\nARG WHO\nCOPY app/ /app/\nLABEL who=$WHO\nCMD [\"/bin/busybox\", \"cat\", \"/app/hello.txt\"]\n",
    );
    let ctx = format!("dir://{}", sb.context().display());
    let dest1 = format!("{}/team/app:v1", reg.host);
    let dest2 = format!("{}/team/app:stable", reg.host);
    let out = sb.kiln(&[
        "executor",
        "--context",
        &ctx,
        "--dockerfile",
        "Dockerfile",
        "--destination",
        &dest1,
        "-d",
        &dest2,
        "--build-arg",
        "WHO=ci",
        "--digest-file",
        &sb.path("digest").to_string_lossy(),
        "--image-name-with-digest-file",
        &sb.path("names").to_string_lossy(),
        "--image-name-tag-with-digest-file",
        &sb.path("tags").to_string_lossy(),
        "--tar-path",
        &sb.path("image.tar").to_string_lossy(),
        "--cleanup",
        "--skip-unused-stages=true",
        "--verbosity=debug",
    ]);
    assert_success(&out);
    let digest = std::fs::read_to_string(sb.path("digest")).expect("digest file");
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert_eq!(stdout(&out).trim(), digest);
    assert_eq!(
        std::fs::read_to_string(sb.path("names")).expect("names"),
        format!("{0}/team/app@{digest}\n{0}/team/app@{digest}\n", reg.host)
    );
    assert_eq!(
        std::fs::read_to_string(sb.path("tags")).expect("tags"),
        format!("{dest1}@{digest}\n{dest2}@{digest}\n")
    );
    // The registry serves both tags with the built manifest.
    for dest in [&dest1, &dest2] {
        let inspect = run_tool(
            "skopeo",
            &["inspect", "--tls-verify=false", &format!("docker://{dest}")],
        );
        let v: serde_json::Value = serde_json::from_str(&inspect).expect("json");
        assert_eq!(v["Digest"].as_str(), Some(digest.as_str()));
        assert_eq!(v["Labels"]["who"], "ci");
    }
    // Kaniko's executor pushes Docker v2 schema 2 manifests.
    let manifest = skopeo_manifest(&format!("docker://{dest1}"));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    // The tarball loads as docker-archive.
    let cfg = skopeo_config(&format!(
        "docker-archive:{}",
        sb.path("image.tar").display()
    ));
    assert_eq!(cfg["config"]["Labels"]["who"], "ci");

    // A second build uses the pushed image as its base, pulled from the
    // registry, and runs a RUN step on it.
    let child = Sandbox::new();
    child.dockerfile(&format!(
        "FROM {dest1}\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox cat /app/hello.txt > /copied.txt\"]\n"
    ));
    let layout = child.path("child-oci");
    let ctx = child.context().to_string_lossy().to_string();
    let out = child.kiln(&[
        "build",
        "-t",
        "child:1",
        "--output",
        &format!("type=oci,dest={}", layout.display()),
        &ctx,
    ]);
    assert_success(&out);
    assert!(stderr(&out).contains("pulling"), "{}", stderr(&out));
    let rootfs = umoci_unpack(&layout, "1", &child.path("bundle"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("copied.txt")).expect("copied"),
        "hello\n"
    );
}

#[test]
fn kaniko_requires_a_destination_or_no_push() {
    let sb = Sandbox::new();
    sb.dockerfile("FROM scratch\n");
    let ctx = sb.context().to_string_lossy().to_string();
    let out = sb.kiln(&["executor", "--context", &ctx]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--destination"), "{}", stderr(&out));
    let out = sb.kiln(&[
        "executor",
        "--context",
        &ctx,
        "--no-push",
        "--snapshot-mode=bogus",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--snapshot-mode bogus"),
        "{}",
        stderr(&out)
    );
    let out = sb.kiln(&[
        "executor",
        "--context",
        &ctx,
        "--no-push",
        "--cache=true",
        "--cache-repo",
        "localhost:1/cache",
    ]);
    // The cache flags are honoured now (e2e_cache covers them): no warning,
    // and a build with no steps never needs the unreachable cache repo.
    assert_success(&out);
    assert!(
        !stderr(&out).contains("warning: --cache"),
        "{}",
        stderr(&out)
    );
}
