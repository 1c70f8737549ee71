//! Hostile layers in place, inside podman: kiln's own image (built by
//! scripts/image.sh with the kiln under test) builds bases whose layers
//! point, through symlinks, at kiln's and Kaniko's own files, and a probe
//! shows those files unchanged (findings 1 and 5 of the security review);
//! a benign base is the control. A missing podman fails the tests.
//!
//! Real components only: the kiln binary, podman, the CNCF distribution
//! registry, skopeo and busybox.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::hostile::*;
use common::*;

// ---------------------------------------------------------------------------
// In place, inside podman: the layer shapes against kiln's own files.

/// A fixed SOURCE_DATE_EPOCH for kiln's image.
const EPOCH: &str = "1700000000";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A podman image of kiln (scripts/image.sh with the kiln under test),
/// removed on drop.
struct KilnImage(String);

impl KilnImage {
    fn build(sb: &Sandbox, name: &str) -> KilnImage {
        std::fs::create_dir_all(sb.path("kiln-under-test")).expect("mkdir");
        let copy = sb.path("kiln-under-test/kiln");
        std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &copy).expect("copy kiln");
        let tag = format!("localhost/kiln-e2e-hostile-{name}:{}", std::process::id());
        let archive = sb.path("kiln.tar");
        let out = std::process::Command::new(repo_root().join("scripts/image.sh"))
            .arg("--binary")
            .arg(&copy)
            .args(["--tag", &tag, "--output"])
            .arg(format!("docker-archive:{}", archive.display()))
            .env("KILN_CACHE_DIR", sb.path("image-cache"))
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("TMPDIR", sb.dir.path())
            .output()
            .expect("run scripts/image.sh");
        assert_success(&out);
        assert_success(&podman(&["load", "-i", &archive.to_string_lossy()]));
        KilnImage(tag)
    }
}

impl Drop for KilnImage {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "-f", &self.0]);
    }
}

/// What the probe prints about kiln's and Kaniko's files: modes, owners,
/// mtimes, sizes and contents' sums, and the whole listing (but `/`, whose
/// mtime the build changes, and kiln's scratch dir /kiln/tmp).
const PROBE: &str = "cd / && for f in /kiln/kiln /kiln /kaniko/.docker /kaniko/.docker/config.json /kaniko/executor; do \
  /probe/busybox stat -c '%n %f %a %u:%g %Y %s %h' \"$f\"; done; \
  /probe/busybox md5sum /kiln/kiln /kaniko/.docker/config.json; \
  /probe/busybox ls -lan --full-time /kiln /kaniko /kaniko/.docker \
  | /probe/busybox grep -v -e ' \\.\\.$' -e ' tmp$'";

/// Runs an in-place build of `dockerfile` in kiln's image under podman
/// (as an ordinary container: default capabilities, the host's loopback
/// network for the registry) and returns the probe's view of kiln's files
/// before and after, and the build's output. The probe is a busybox
/// bind-mounted at /probe, a mount point the build leaves alone.
fn in_place_probe(sb: &Sandbox, kiln: &KilnImage, dockerfile: &str) -> (String, String, String) {
    sb.dockerfile(dockerfile);
    let busybox = which("busybox").expect("busybox (scripts/setup.sh installs it)");
    let probe_mount = format!("{}:/probe/busybox:ro", busybox.display());
    let ctx_mount = format!("{}:/workspace:ro", sb.context().display());
    let script = format!(
        "echo '{{\"auths\":{{}}}}' > /kaniko/.docker/config.json; {PROBE}; echo =====; \
         /kaniko/executor --context dir:///workspace --dockerfile Dockerfile --no-push --isolation in-place 2>&1; \
         echo \"=====exit $?\"; {PROBE}"
    );
    let out = podman_run(&[
        "--network",
        "host",
        "-v",
        &probe_mount,
        "-v",
        &ctx_mount,
        "--entrypoint",
        "/probe/busybox",
        &kiln.0,
        "sh",
        "-c",
        &script,
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("=====exit"),
        "the probe did not run:\n{text}\n{}",
        stderr(&out)
    );
    let (before, rest) = text.split_once("=====\n").expect("marker");
    let (log, after) = rest.split_once("=====exit").expect("marker");
    let after = after.split_once('\n').map(|(_, a)| a).unwrap_or("");
    (before.to_string(), after.to_string(), log.to_string())
}

fn assert_kiln_untouched(before: &str, after: &str, log: &str) {
    assert!(
        log.contains("in-place") || log.contains("in place"),
        "the build did not run in place:\n{log}"
    );
    assert_eq!(
        before, after,
        "the in-place build changed kiln's or Kaniko's files\nbuild log:\n{log}"
    );
}

#[test]
fn finding1_chmod_through_symlink_replacing_dir_in_place() {
    require("podman");
    let reg = Registry::plain();
    let image = push_hostile(
        &reg,
        "f1-inplace",
        Tar::default()
            .dir("d/", 0o6777)
            .symlink("d", "/kiln/kiln")
            .dir("e/", 0o777)
            .symlink("e", "/kaniko/.docker")
            .dir("g/", 0o6777)
            .symlink("g", "../../../../kaniko/.docker/config.json")
            .finish(),
    );
    let sb = Sandbox::new();
    let kiln = KilnImage::build(&sb, "f1");
    let (before, after, log) = in_place_probe(&sb, &kiln, &format!("FROM {image}\nRUN echo ran\n"));
    assert_kiln_untouched(&before, &after, &log);
}

#[test]
fn finding5_inplace_protected_path_through_parent_symlink_in_place() {
    require("podman");
    let reg = Registry::plain();
    let write = push_hostile(
        &reg,
        "f5-write",
        Tar::default()
            .symlink("kl", "/kiln")
            .file("kl/x", b"planted", 0o755)
            .file("kl/kiln", b"#!/bin/sh\necho replaced\n", 0o755)
            .symlink("kd", "kaniko/.docker")
            .file("kd/config.json", b"{\"credsStore\":\"evil\"}", 0o644)
            .finish(),
    );
    let whiteout = push_hostile(
        &reg,
        "f5-whiteout",
        Tar::default()
            .symlink("kw", "/kaniko")
            .file("kw/.wh..docker", b"", 0)
            .symlink("ko", "/kiln")
            .file("ko/.wh..wh..opq", b"", 0)
            .finish(),
    );
    let sb = Sandbox::new();
    let kiln = KilnImage::build(&sb, "f5");
    for image in [write, whiteout] {
        let (before, after, log) =
            in_place_probe(&sb, &kiln, &format!("FROM {image}\nRUN echo ran\n"));
        assert_kiln_untouched(&before, &after, &log);
        assert!(
            !after.contains(" x\n"),
            "a file was planted in /kiln:\n{after}"
        );
    }
}

/// The control for the two tests above: an in-place build of a benign base
/// (with a legitimate symlink and a directory) leaves the probe's view of
/// kiln's files exactly as it was, so any difference they see is the
/// layer's doing.
#[test]
fn in_place_probe_sees_no_change_from_a_benign_base() {
    require("podman");
    let reg = Registry::plain();
    let image = push_hostile(
        &reg,
        "benign",
        Tar::default()
            .dir("d/", 0o6777)
            .symlink("l", "/kiln")
            .dir("opt/", 0o755)
            .file("opt/f", b"f", 0o644)
            .finish(),
    );
    let sb = Sandbox::new();
    let kiln = KilnImage::build(&sb, "benign");
    let (before, after, log) = in_place_probe(
        &sb,
        &kiln,
        &format!("FROM {image}\nRUN echo ran > /opt/ran\n"),
    );
    assert!(log.contains("built stage-0"), "the build failed:\n{log}");
    assert_kiln_untouched(&before, &after, &log);
    assert!(before.contains("/kiln/kiln 81ed 755"), "{before}");
}
