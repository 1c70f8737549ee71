//! `FROM --platform=…` pulls the base image for that platform from a
//! multi-platform index, whatever platform the build targets.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn from_platform_picks_that_platform_out_of_an_index() {
    let reg = Registry::plain();
    // A two-platform base whose /arch names its platform.
    let base = Sandbox::new();
    base.dockerfile("FROM scratch\nARG TARGETARCH\nCOPY <<EOF /arch\n$TARGETARCH\nEOF\n");
    let image = format!("{}/lib/multi:1", reg.host);
    let o = base.kiln(&[
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &image,
        "--push",
        &base.context().to_string_lossy(),
    ]);
    assert_success(&o);

    let sb = Sandbox::new();
    sb.dockerfile(&format!(
        "FROM --platform=linux/arm64 {image} AS foreign\nFROM {image} AS native\nFROM scratch\nCOPY --from=foreign /arch /foreign\nCOPY --from=native /arch /native\n"
    ));
    let out = sb.path("out");
    let o = sb.kiln(&[
        "build",
        "--platform",
        "linux/amd64",
        "-t",
        "pick:latest",
        "--output",
        &format!("type=oci,dest={}", out.display()),
        &sb.context().to_string_lossy(),
    ]);
    assert_success(&o);
    let rootfs = umoci_unpack(&out, "latest", &sb.path("bundle"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("foreign")).expect("foreign"),
        "arm64\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("native")).expect("native"),
        "amd64\n"
    );
}
