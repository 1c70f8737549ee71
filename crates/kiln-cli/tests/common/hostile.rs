//! Helpers of the hostile-input tests (`e2e_hostile*.rs`): raw tars whose
//! names and link names go in verbatim, OCI layouts and pushes of hostile
//! layers, host canaries that must stay unchanged, paths that must not come
//! into existence, and builds under one isolation mode.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use super::*;

// ---------------------------------------------------------------------------
// Raw tars (names and link names verbatim), OCI layouts, pushes.

/// A raw ustar stream: names go into the header as they are, `..` and
/// absolute names included.
#[derive(Default)]
pub struct Tar(pub Vec<u8>);

pub fn octal(field: &mut [u8], v: u64) {
    let n = field.len() - 1;
    let s = format!("{v:0n$o}");
    field[..n].copy_from_slice(s.as_bytes());
    field[n] = 0;
}

impl Tar {
    pub fn entry(&mut self, name: &str, tf: u8, link: &str, mode: u32, data: &[u8]) -> &mut Self {
        // Longer names and link names go in GNU long-name records first.
        if link.len() > 100 {
            self.entry(
                "././@LongLink",
                b'K',
                "",
                0,
                &[link.as_bytes(), b"\0"].concat(),
            );
        }
        if name.len() > 100 {
            self.entry(
                "././@LongLink",
                b'L',
                "",
                0,
                &[name.as_bytes(), b"\0"].concat(),
            );
        }
        let (name, link) = (&name[..name.len().min(100)], &link[..link.len().min(100)]);
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = tf;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }
    pub fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.entry(name, b'0', "", mode, data)
    }
    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.entry(name, b'5', "", mode, b"")
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, b'2', target, 0o777, b"")
    }
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.0);
        out.resize(out.len() + 1024, 0);
        out
    }
}

/// A layer holding a static busybox as /bin/busybox with the applets the
/// tests' RUN steps use.
pub fn busybox_layer() -> Vec<u8> {
    let bb = std::fs::read(which("busybox").expect("busybox (scripts/setup.sh installs it)"))
        .expect("read busybox");
    let mut t = Tar::default();
    t.dir("bin/", 0o755).file("bin/busybox", &bb, 0o755);
    for applet in [
        "sh", "true", "ln", "cat", "mkdir", "ls", "touch", "echo", "stat", "id",
    ] {
        t.symlink(&format!("bin/{applet}"), "busybox");
    }
    t.dir("tmp/", 0o1777).finish()
}

/// Writes an OCI layout at `dir` holding one image, tag `1`, whose layers
/// are the given uncompressed tars.
pub fn write_layout(dir: &Path, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir blobs");
    let put = |bytes: &[u8]| -> String {
        let d = kiln_image::Digest::sha256(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).expect("write blob");
        d.as_str().to_string()
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let d = put(l);
        diff_ids.push(d.clone());
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d, "size": l.len()}));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
    .expect("json");
    let cfg = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cfg, "size": config.len()},
        "layers": descs}))
    .expect("json");
    let m = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "1"}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
}

/// Pushes a hand-made image (busybox plus `hostile`) to the registry as
/// `<addr>/hostile/<name>:1` and returns that reference.
pub fn push_hostile(reg: &Registry, name: &str, hostile: Vec<u8>) -> String {
    let dir = tempfile::tempdir().expect("layout dir");
    let layout = dir.path().join("layout");
    write_layout(&layout, &[busybox_layer(), hostile]);
    let image = format!("{}/hostile/{name}:1", reg.host);
    run_tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:1", layout.display()),
            &format!("docker://{image}"),
        ],
    );
    image
}

// ---------------------------------------------------------------------------
// Host canaries.

pub const CANARY_MTIME: i64 = 1_600_000_000;
pub const CANARY_OWNER: u32 = 4321;

/// A directory in /tmp (`/tmp/kiln-hostile-<case>-<pid>-<n>`) holding a
/// file `canary` and a directory `cdir/keep`, all with known modes, owner
/// and mtimes; removed on drop.
pub struct HostCanary {
    pub dir: PathBuf,
    pub before: String,
}

pub fn unique(tag: &str) -> PathBuf {
    unique_in("/tmp", tag)
}

pub fn unique_in(dir: &str, tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    PathBuf::from(format!(
        "{dir}/kiln-hostile-{tag}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

impl HostCanary {
    pub fn new(tag: &str) -> HostCanary {
        let dir = unique(tag);
        std::fs::create_dir(&dir).expect("mkdir canary");
        std::fs::write(dir.join("canary"), "host canary\n").expect("write");
        std::fs::create_dir(dir.join("cdir")).expect("mkdir");
        std::fs::write(dir.join("cdir/keep"), "keep me\n").expect("write");
        for (p, mode) in [
            (dir.join("cdir/keep"), 0o640),
            (dir.join("canary"), 0o640),
            (dir.join("cdir"), 0o750),
            (dir.clone(), 0o755),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            if running_as_root() {
                std::os::unix::fs::chown(&p, Some(CANARY_OWNER), Some(CANARY_OWNER))
                    .expect("chown");
            }
            set_mtime(&p, CANARY_MTIME);
        }
        let before = snapshot(&dir);
        HostCanary { dir, before }
    }

    pub fn path(&self) -> &str {
        self.dir.to_str().expect("utf-8")
    }

    pub fn file(&self) -> String {
        format!("{}/canary", self.path())
    }

    pub fn cdir(&self) -> String {
        format!("{}/cdir", self.path())
    }

    /// The canary path relative to the image root.
    pub fn rel(&self) -> &str {
        self.path().trim_start_matches('/')
    }

    pub fn assert_unchanged(&self, out: &Output) {
        assert_eq!(
            self.before,
            snapshot(&self.dir),
            "the build changed the host outside its root\nstderr:\n{}",
            stderr(out)
        );
    }
}

impl Drop for HostCanary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A path in /tmp that must not come into existence; removed on drop if it
/// does.
pub struct MustNotExist(pub PathBuf);

impl MustNotExist {
    pub fn new(tag: &str) -> MustNotExist {
        MustNotExist(unique(tag))
    }
    pub fn in_dir(dir: &str, tag: &str) -> MustNotExist {
        MustNotExist(unique_in(dir, tag))
    }
    pub fn name(&self) -> String {
        self.0
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned()
    }
    pub fn assert_absent(&self, out: &Output) {
        let made = std::fs::symlink_metadata(&self.0).ok();
        assert!(
            made.is_none(),
            "the build created {} on the host (owner {:?})\nstderr:\n{}",
            self.0.display(),
            made.map(|m| (m.uid(), m.gid())),
            stderr(out)
        );
    }
}

impl Drop for MustNotExist {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

pub fn set_mtime(p: &Path, secs: i64) {
    let f = std::fs::File::open(p).expect("open");
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
        .expect("set times");
}

pub use kiln_testkit::tree::snapshot;

// ---------------------------------------------------------------------------
// Building.

/// Builds the sandbox's context under `isolation` into an OCI layout and,
/// when the build succeeds, unpacks it: (kiln's output, the rootfs).
pub fn build(sb: &Sandbox, isolation: &str) -> (Output, Option<PathBuf>) {
    let layout = sb.path("out");
    let dest = format!("type=oci,dest={}", layout.display());
    let ctx = sb.context().to_string_lossy().to_string();
    let out = sb.kiln(&[
        "build",
        "--progress",
        "plain",
        "--isolation",
        isolation,
        "-t",
        "hostile:latest",
        "--output",
        &dest,
        &ctx,
    ]);
    if !out.status.success() {
        eprintln!("build failed (allowed when it says why):\n{}", stderr(&out));
        assert!(
            stderr(&out).to_lowercase().contains("error"),
            "a failed build must say why:\n{}",
            stderr(&out)
        );
        return (out, None);
    }
    let rootfs = umoci_unpack(&layout, "latest", &sb.path("bundle"));
    (out, Some(rootfs))
}

/// The build succeeded; its rootfs.
pub fn built(out: &Output, rootfs: Option<PathBuf>) -> PathBuf {
    rootfs.unwrap_or_else(|| {
        panic!(
            "the build must succeed and hold the shape inside the image:\n{}",
            stderr(out)
        )
    })
}

/// Writes `tar` gzipped into the context as `name`.
pub fn context_targz(sb: &Sandbox, name: &str, tar: &[u8]) {
    let raw = sb.path(&format!("{name}.raw"));
    std::fs::write(&raw, tar).expect("write tar");
    let gz = run_tool_bytes("gzip", &["-c", "-n", &raw.to_string_lossy()]);
    std::fs::create_dir_all(sb.context()).expect("mkdir");
    std::fs::write(sb.context().join(name), gz).expect("write tar.gz");
}

/// The unpacked output of a build that succeeded.
pub fn rootfs_if_built(sb: &Sandbox, out: &Output) -> Option<PathBuf> {
    out.status
        .success()
        .then(|| sb.path("bundle/rootfs"))
        .filter(|r| r.is_dir())
}

/// Every file below `root` whose contents are the host canaries'.
pub fn leaked(root: &Path) -> Vec<String> {
    entries(root)
        .into_iter()
        .filter(|(p, e)| {
            e.kind == "file"
                && std::fs::read(root.join(p))
                    .is_ok_and(|b| b == b"host canary\n" || b == b"keep me\n")
        })
        .map(|(p, _)| p)
        .collect()
}
