//! Shared helpers for the end-to-end tests: run the real `kiln` binary in
//! an isolated cache directory, write contexts, and ask real tools
//! (skopeo, umoci, podman) about what kiln produced. Registries, HTTP
//! servers, tree dumps, ports and tool checks come from kiln-testkit.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unused_imports)]

pub mod cache;
pub mod hostile;

pub use kiln_testkit::http::StaticServer;
pub use kiln_testkit::isolation_matrix;
pub use kiln_testkit::net::{free_port, wait_for_port};
pub use kiln_testkit::registry::Registry;
pub use kiln_testkit::tools::{require, which};
pub use kiln_testkit::tree::{entries, Entry};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch area for one test: a context dir, a cache dir, an output dir.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("kiln-e2e-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn context(&self) -> PathBuf {
        self.path("ctx")
    }

    /// Writes a file under the context, creating parents.
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let p = self.context().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, contents).expect("write");
        p
    }

    pub fn write_mode(&self, rel: &str, contents: &str, mode: u32) -> PathBuf {
        let p = self.write(rel, contents);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    pub fn dockerfile(&self, text: &str) -> PathBuf {
        self.write("Dockerfile", text)
    }

    /// Copies the static busybox into the context as `busybox`.
    pub fn busybox(&self) -> PathBuf {
        let src = require("busybox");
        let dst = self.context().join("busybox");
        std::fs::create_dir_all(self.context()).expect("mkdir");
        std::fs::copy(src, &dst).expect("copy busybox");
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dst
    }

    /// Runs `kiln build` with this sandbox's cache dir.
    pub fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_env(args, &[])
    }

    pub fn kiln_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(args)
            .env("KILN_CACHE_DIR", self.path("cache"))
            .env_remove("SOURCE_DATE_EPOCH")
            .current_dir(self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run kiln")
    }

    /// Builds the context into an OCI layout at `out` and returns the digest.
    pub fn build_oci(&self, out: &str, extra: &[&str]) -> String {
        let dest = format!("type=oci,dest={}", self.path(out).display());
        let ctx = self.context();
        let mut args = vec!["build", "-t", "test:latest", "--output", &dest];
        args.extend_from_slice(extra);
        let ctx_s = ctx.to_string_lossy().to_string();
        args.push(&ctx_s);
        let out = self.kiln(&args);
        assert_success(&out);
        stdout(&out).trim().to_string()
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn assert_success(o: &Output) {
    assert!(
        o.status.success(),
        "command failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Runs a tool and returns its stdout, failing the test with its stderr.
pub fn run_tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} could not start: {e} (scripts/setup.sh installs it)")
        });
    assert_success(&out);
    stdout(&out)
}

/// Test registries speak plain HTTP on loopback.
fn tls_flag(image: &str) -> &'static str {
    if image.starts_with("docker://") {
        "--tls-verify=false"
    } else {
        "--tls-verify=true"
    }
}

/// Runs a tool and returns its raw stdout.
pub fn run_tool_bytes(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} could not start: {e}"));
    assert_success(&out);
    out.stdout
}

/// `skopeo inspect --config` of an image, as JSON.
pub fn skopeo_config(image: &str) -> serde_json::Value {
    let tls = tls_flag(image);
    let text = run_tool("skopeo", &["inspect", tls, "--config", "--raw", image]);
    serde_json::from_str(&text).expect("skopeo prints JSON")
}

/// `skopeo inspect --raw` (the manifest) of an image, as JSON.
pub fn skopeo_manifest(image: &str) -> serde_json::Value {
    let tls = tls_flag(image);
    let text = run_tool("skopeo", &["inspect", tls, "--raw", image]);
    serde_json::from_str(&text).expect("skopeo prints JSON")
}

/// Unpacks an OCI layout image with umoci and returns the rootfs path.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    let image = format!("{}:{}", layout.display(), tag);
    run_tool(
        "umoci",
        &["unpack", "--image", &image, &bundle.to_string_lossy()],
    );
    bundle.join("rootfs")
}

/// The podman flags these machines need.
pub fn podman(args: &[&str]) -> Output {
    let mut full = vec!["--runtime", "runc", "--cgroup-manager=cgroupfs"];
    full.extend_from_slice(args);
    Command::new("podman")
        .args(&full)
        .output()
        .expect("podman could not start (scripts/setup.sh installs it)")
}

/// `podman run --rm` with the ulimits this machine's podman needs, then
/// `args` (more run options, the image, the command).
pub fn podman_run(args: &[&str]) -> Output {
    let mut full = vec![
        "run",
        "--rm",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    full.extend_from_slice(args);
    podman(&full)
}

pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

pub fn owner_of(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid())
}
