//! Shared helpers for the end-to-end tests: run the real `kiln` binary in
//! an isolated cache directory, write contexts, and ask real tools
//! (skopeo, umoci, podman) about what kiln produced.
#![allow(dead_code)]

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
        let src = which("busybox").expect("busybox-static is installed by scripts/setup.sh");
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

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
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

/// A CNCF distribution registry on a free loopback port, stopped on drop.
pub struct Registry {
    child: std::process::Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: {addr}}}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/setup.sh installs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Registry {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Registry {
    /// Where the registry keeps its repositories and blobs.
    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One entry of an unpacked image, everything a user of the image sees
/// except timestamps.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// A hash of the contents: equality of two test trees, not security.
    pub content: Option<u64>,
    pub link_target: Option<PathBuf>,
    /// For a file with several links: the first path (in sorted order) of
    /// those that share its inode.
    pub hardlink_group: Option<String>,
}

/// Every entry below `root` by relative path.
pub fn entries(root: &Path) -> std::collections::BTreeMap<String, Entry> {
    use std::os::unix::fs::MetadataExt;
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut std::collections::BTreeMap<String, Entry>,
        inodes: &mut std::collections::BTreeMap<u64, String>,
    ) {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        names.sort();
        for p in names {
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .to_string();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "special"
            };
            let content = ft.is_file().then(|| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(&std::fs::read(&p).expect("read"), &mut h);
                std::hash::Hasher::finish(&h)
            });
            let hardlink_group = (ft.is_file() && m.nlink() > 1)
                .then(|| inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone());
            out.insert(
                rel.clone(),
                Entry {
                    kind,
                    mode: if ft.is_symlink() {
                        0
                    } else {
                        m.mode() & 0o7777
                    },
                    uid: m.uid(),
                    gid: m.gid(),
                    size: if ft.is_dir() { 0 } else { m.len() },
                    content,
                    link_target: ft
                        .is_symlink()
                        .then(|| std::fs::read_link(&p).expect("readlink")),
                    hardlink_group,
                },
            );
            if ft.is_dir() {
                walk(root, &p, out, inodes);
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out, &mut std::collections::BTreeMap::new());
    out
}

/// `python3 -m http.server` on a free loopback port, stopped on drop.
pub struct HttpServer {
    child: std::process::Child,
    pub port: u16,
}

impl HttpServer {
    pub fn serve(dir: &Path) -> HttpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 (scripts/setup.sh installs it)");
        wait_for_port(port);
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 5 s) until something accepts connections on loopback `port`.
pub fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
