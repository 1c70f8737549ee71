//! A real distribution as the base: a Debian bookworm made by debootstrap
//! (Debian's mirror over plain HTTP), imported as an image by kiln, and a
//! RUN step that installs a package with apt-get; podman runs the result.
//!
//! The debootstrapped root is kept as a tar under the system temp dir
//! between runs (it only depends on the mirror), so only the first run on a
//! machine pays for it.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A minbase bookworm root filesystem as a tar, made once per machine.
fn debian_rootfs_tar() -> PathBuf {
    let tar = std::env::temp_dir().join("kiln-test-debian-bookworm-minbase.tar");
    if tar.is_file() {
        return tar;
    }
    let work = tempfile::Builder::new()
        .prefix("kiln-debootstrap-")
        .tempdir_in(std::env::temp_dir())
        .expect("temp dir");
    let root = work.path().join("root");
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&root)
        .arg("http://deb.debian.org/debian")
        .output()
        .expect("debootstrap (scripts/setup.sh installs it)");
    assert_success(&out);
    // Written beside, then renamed: a killed run leaves no half tar.
    let partial = work.path().join("rootfs.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--numeric-owner", "-cf"])
        .arg(&partial)
        .arg(".")
        .output()
        .expect("tar");
    assert_success(&out);
    std::fs::rename(&partial, &tar)
        .or_else(|_| std::fs::copy(&partial, &tar).map(|_| ()))
        .expect("keep the rootfs tar");
    tar
}

/// Imports the rootfs tar as an OCI layout (`FROM scratch` + `ADD`).
fn debian_image(sb: &Sandbox, tar: &Path) -> PathBuf {
    let ctx = sb.path("base-ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::copy(tar, ctx.join("rootfs.tar")).expect("copy rootfs");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD rootfs.tar /\nENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nCMD [\"bash\"]\n",
    )
    .expect("Dockerfile");
    let layout = sb.path("debian");
    let o = sb.kiln(&[
        "build",
        "-t",
        "debian:bookworm",
        "--output",
        &format!("type=oci,dest={}", layout.display()),
        &ctx.to_string_lossy(),
    ]);
    assert_success(&o);
    layout
}

#[test]
fn apt_get_install_in_run_on_a_debootstrapped_debian() {
    let tar = debian_rootfs_tar();
    let sb = Sandbox::new();
    let layout = debian_image(&sb, &tar);
    sb.dockerfile(&format!(
        "FROM oci-layout://{}:bookworm\nRUN apt-get update \\\n && apt-get install -y --no-install-recommends hello \\\n && rm -rf /var/lib/apt/lists/*\nRUN useradd --create-home builder\nUSER builder\nWORKDIR /home/builder\nRUN hello > greeting.txt\nCMD [\"sh\", \"-c\", \"cat greeting.txt; id -un\"]\n",
        layout.display()
    ));
    let archive = sb.path("app.tar");
    let o = sb.kiln(&[
        "build",
        "-t",
        "localhost/kiln-e2e-debian:1",
        "--output",
        &format!("type=docker,dest={}", archive.display()),
        &sb.context().to_string_lossy(),
    ]);
    assert_success(&o);

    // The package is in the image, owned and placed as dpkg put it.
    let cfg = skopeo_config(&format!("docker-archive:{}", archive.display()));
    assert_eq!(cfg["config"]["User"], "builder");
    assert_eq!(cfg["config"]["WorkingDir"], "/home/builder");

    let load = podman(&["load", "-i", &archive.to_string_lossy()]);
    assert_success(&load);
    let run = podman_run(&["--network", "none", "localhost/kiln-e2e-debian:1"]);
    let _ = podman(&["rmi", "-f", "localhost/kiln-e2e-debian:1"]);
    assert_success(&run);
    assert_eq!(stdout(&run), "Hello, world!\nbuilder\n");
}
