//! Hostile inputs end to end through the kiln binary: base images in a
//! loopback registry whose layers were written by hand (a directory
//! replaced by a symlink to a host file, symlinks out of the root), the same
//! image as a `COPY --from` source, `ADD`ed archives with escaping shapes,
//! and Dockerfile paths (WORKDIR, COPY destinations, mount targets, sources
//! and cache ids) that lead through symlinks in the image. Every case keeps
//! a host canary in /tmp with known content, mode, owner and mtime and
//! asserts it is unchanged; the build either fails with an error or holds
//! the shape inside the image. Each case runs under `--isolation userns`
//! and `--isolation root`; the layer shapes also run in place, inside
//! podman, against kiln's own files (findings 1 and 5 of the security
//! review).
//!
//! Real components only: the kiln binary, the CNCF distribution registry,
//! skopeo, umoci, busybox, gzip and (in place) podman.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

// ---------------------------------------------------------------------------
// Raw tars (names and link names verbatim), OCI layouts, pushes.

/// A raw ustar stream: names go into the header as they are, `..` and
/// absolute names included.
#[derive(Default)]
struct Tar(Vec<u8>);

fn octal(field: &mut [u8], v: u64) {
    let n = field.len() - 1;
    let s = format!("{v:0n$o}");
    field[..n].copy_from_slice(s.as_bytes());
    field[n] = 0;
}

impl Tar {
    fn entry(&mut self, name: &str, tf: u8, link: &str, mode: u32, data: &[u8]) -> &mut Self {
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
    fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.entry(name, b'0', "", mode, data)
    }
    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.entry(name, b'5', "", mode, b"")
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, b'2', target, 0o777, b"")
    }
    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.0);
        out.resize(out.len() + 1024, 0);
        out
    }
}

/// A layer holding a static busybox as /bin/busybox with the applets the
/// tests' RUN steps use.
fn busybox_layer() -> Vec<u8> {
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
fn write_layout(dir: &Path, layers: &[Vec<u8>]) {
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
fn push_hostile(reg: &Registry, name: &str, hostile: Vec<u8>) -> String {
    let dir = tempfile::tempdir().expect("layout dir");
    let layout = dir.path().join("layout");
    write_layout(&layout, &[busybox_layer(), hostile]);
    let image = format!("{}/hostile/{name}:1", reg.addr);
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

const CANARY_MTIME: i64 = 1_600_000_000;
const CANARY_OWNER: u32 = 4321;

/// A directory in /tmp (`/tmp/kiln-hostile-<case>-<pid>-<n>`) holding a
/// file `canary` and a directory `cdir/keep`, all with known modes, owner
/// and mtimes; removed on drop.
struct HostCanary {
    dir: PathBuf,
    before: String,
}

fn unique(tag: &str) -> PathBuf {
    unique_in("/tmp", tag)
}

fn unique_in(dir: &str, tag: &str) -> PathBuf {
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
    fn new(tag: &str) -> HostCanary {
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

    fn path(&self) -> &str {
        self.dir.to_str().expect("utf-8")
    }

    fn file(&self) -> String {
        format!("{}/canary", self.path())
    }

    fn cdir(&self) -> String {
        format!("{}/cdir", self.path())
    }

    /// The canary path relative to the image root.
    fn rel(&self) -> &str {
        self.path().trim_start_matches('/')
    }

    fn assert_unchanged(&self, out: &Output) {
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
struct MustNotExist(PathBuf);

impl MustNotExist {
    fn new(tag: &str) -> MustNotExist {
        MustNotExist(unique(tag))
    }
    fn in_dir(dir: &str, tag: &str) -> MustNotExist {
        MustNotExist(unique_in(dir, tag))
    }
    fn name(&self) -> String {
        self.0
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned()
    }
    fn assert_absent(&self, out: &Output) {
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

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn set_mtime(p: &Path, secs: i64) {
    let f = std::fs::File::open(p).expect("open");
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
        .expect("set times");
}

/// Type, mode, owner, mtime, inode, link count and contents of every entry
/// below `top`.
fn snapshot(top: &Path) -> String {
    fn walk(p: &Path, rel: &str, out: &mut String) {
        let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let what = if m.is_file() {
            format!("file {:?}", std::fs::read(p).expect("read"))
        } else if m.file_type().is_symlink() {
            format!("link {:?}", std::fs::read_link(p).expect("readlink"))
        } else if m.is_dir() {
            "dir".into()
        } else {
            format!("special {:x}", m.rdev())
        };
        out.push_str(&format!(
            "{rel}: {what} mode={:o} owner={}:{} mtime={} ino={} nlink={}\n",
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.ino(),
            m.nlink()
        ));
        if m.is_dir() {
            let mut kids: Vec<_> = std::fs::read_dir(p)
                .expect("read dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            kids.sort();
            for k in kids {
                let k = k.to_string_lossy().into_owned();
                walk(&p.join(&k), &format!("{rel}/{k}"), out);
            }
        }
    }
    let mut out = String::new();
    walk(top, ".", &mut out);
    out
}

// ---------------------------------------------------------------------------
// Building.

/// Builds the sandbox's context under `isolation` into an OCI layout and,
/// when the build succeeds, unpacks it: (kiln's output, the rootfs).
fn build(sb: &Sandbox, isolation: &str) -> (Output, Option<PathBuf>) {
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
fn built(out: &Output, rootfs: Option<PathBuf>) -> PathBuf {
    rootfs.unwrap_or_else(|| {
        panic!(
            "the build must succeed and hold the shape inside the image:\n{}",
            stderr(out)
        )
    })
}

/// One line per case: `mod $name { fn userns(); fn root() }`, each calling
/// `$case` with that isolation.
macro_rules! under_userns_and_root {
    ($(#[$m:meta])* $name:ident => $case:ident) => {
        mod $name {
            $(#[$m])*
            #[test]
            fn userns() {
                super::$case("userns")
            }
            $(#[$m])*
            #[test]
            fn root() {
                super::$case("root")
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Finding 1: a directory replaced by a symlink, in a base image, a COPY
// --from image and an ADDed archive.

/// `d/` 6777 then `d -> <host file>`, `e/` 0777 then `e -> <host dir>`.
fn finding1_layer(c: &HostCanary) -> Vec<u8> {
    Tar::default()
        .dir("d/", 0o6777)
        .symlink("d", &c.file())
        .dir("e/", 0o777)
        .symlink("e", &c.cdir())
        .finish()
}

fn finding1_base_image(isolation: &str) {
    let c = HostCanary::new("f1-base");
    let reg = Registry::start();
    let image = push_hostile(&reg, "f1-base", finding1_layer(&c));
    let sb = Sandbox::new();
    sb.dockerfile(&format!("FROM {image}\nRUN echo ran > /ran\n"));
    let (out, rootfs) = build(&sb, isolation);
    c.assert_unchanged(&out);
    if let Some(r) = rootfs {
        assert_eq!(
            std::fs::read_link(r.join("d")).expect("d"),
            Path::new(&c.file())
        );
    }
}
under_userns_and_root!(
    finding1_chmod_through_symlink_replacing_dir_base_image => finding1_base_image
);

fn finding1_copy_from(isolation: &str) {
    let c = HostCanary::new("f1-from");
    let reg = Registry::start();
    let image = push_hostile(&reg, "f1-from", finding1_layer(&c));
    let sb = Sandbox::new();
    sb.dockerfile(&format!("FROM scratch\nCOPY --from={image} / /imported/\n"));
    let (out, _) = build(&sb, isolation);
    c.assert_unchanged(&out);
}
under_userns_and_root!(
    finding1_chmod_through_symlink_replacing_dir_copy_from => finding1_copy_from
);

/// Writes `tar` gzipped into the context as `name`.
fn context_targz(sb: &Sandbox, name: &str, tar: &[u8]) {
    let raw = sb.path(&format!("{name}.raw"));
    std::fs::write(&raw, tar).expect("write tar");
    let gz = run_tool_bytes("gzip", &["-c", "-n", &raw.to_string_lossy()]);
    std::fs::create_dir_all(sb.context()).expect("mkdir");
    std::fs::write(sb.context().join(name), gz).expect("write tar.gz");
}

fn finding1_add_archive(isolation: &str) {
    let c = HostCanary::new("f1-add");
    let sb = Sandbox::new();
    context_targz(&sb, "evil.tar.gz", &finding1_layer(&c));
    sb.dockerfile("FROM scratch\nADD evil.tar.gz /x/\n");
    let (out, _) = build(&sb, isolation);
    c.assert_unchanged(&out);
}
under_userns_and_root!(
    finding1_chmod_through_symlink_replacing_dir_add_archive => finding1_add_archive
);

// ---------------------------------------------------------------------------
// ADDed archives: symlink-then-write, `..`, absolute names.

fn add_symlink_then_write(isolation: &str) {
    let c = HostCanary::new("add-sym");
    let sb = Sandbox::new();
    let climb = format!("{}{}", "../".repeat(40), c.rel());
    let tar = Tar::default()
        .symlink("abs", &c.cdir())
        .file("abs/keep", b"pwn", 0o4777)
        .file("abs/new", b"pwn", 0o644)
        .symlink("rel", &climb)
        .file("rel/canary", b"pwn", 0o4777)
        .symlink("f", &c.file())
        .file("f", b"replaced", 0o4777)
        .finish();
    context_targz(&sb, "evil.tar.gz", &tar);
    sb.dockerfile("FROM scratch\nADD evil.tar.gz /x/\n");
    let (out, rootfs) = build(&sb, isolation);
    c.assert_unchanged(&out);
    if let Some(r) = rootfs {
        assert_eq!(std::fs::read(r.join("x/f")).expect("x/f"), b"replaced");
    }
}
under_userns_and_root!(add_archive_symlink_then_write => add_symlink_then_write);

fn add_dotdot_and_absolute(isolation: &str) {
    let c = HostCanary::new("add-dotdot");
    for (i, name) in [
        format!("{}{}/canary", "../".repeat(40), c.rel()),
        c.file(),
        format!("a/../../../../../../../../../../..{}", c.file()),
        // A GNU long name that climbs, before an innocent ustar name.
        format!("long:{}{}/canary", "../".repeat(40), c.rel()),
    ]
    .iter()
    .enumerate()
    {
        let sb = Sandbox::new();
        let tar = match name.strip_prefix("long:") {
            Some(long) => Tar::default()
                .entry(
                    "././@LongLink",
                    b'L',
                    "",
                    0,
                    &[long.as_bytes(), b"\0"].concat(),
                )
                .file("innocent", b"pwn", 0o4777)
                .finish(),
            None => Tar::default().file(name, b"pwn", 0o4777).finish(),
        };
        context_targz(&sb, "evil.tar.gz", &tar);
        sb.dockerfile("FROM scratch\nADD evil.tar.gz /x/\n");
        let (out, rootfs) = build(&sb, isolation);
        c.assert_unchanged(&out);
        if i == 1 {
            // An absolute name lands below the destination.
            let r = built(&out, rootfs);
            let inside = r.join("x").join(c.rel()).join("canary");
            assert_eq!(std::fs::read(inside).expect("inside"), b"pwn");
        }
        if let Some(r) = rootfs_if_built(&sb, &out) {
            assert!(!r.join("x/innocent").exists(), "the ustar name was used");
        }
    }
}

/// The unpacked output of a build that succeeded.
fn rootfs_if_built(sb: &Sandbox, out: &Output) -> Option<PathBuf> {
    out.status
        .success()
        .then(|| sb.path("bundle/rootfs"))
        .filter(|r| r.is_dir())
}
under_userns_and_root!(add_archive_dotdot_and_absolute_names => add_dotdot_and_absolute);

// ---------------------------------------------------------------------------
// Finding 2: WORKDIR through symlinks.

fn finding2_run_escape(isolation: &str) {
    let host = MustNotExist::new("f2-run");
    let name = host.name();
    let sb = Sandbox::new();
    sb.busybox();
    sb.dockerfile(&format!(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN ln -s / /escape\nUSER 4242:4242\nWORKDIR /escape/tmp/{name}/wd\n"
    ));
    let (out, rootfs) = build(&sb, isolation);
    host.assert_absent(&out);
    let r = built(&out, rootfs);
    assert!(
        r.join(format!("tmp/{name}/wd")).is_dir(),
        "the WORKDIR lands inside the image"
    );
}
under_userns_and_root!(
    finding2_workdir_through_image_symlink_run_escape => finding2_run_escape
);

fn finding2_base_absolute(isolation: &str) {
    let c = HostCanary::new("f2-app");
    let reg = Registry::start();
    let image = push_hostile(
        &reg,
        "f2-app",
        Tar::default().symlink("app", c.path()).finish(),
    );
    let sb = Sandbox::new();
    sb.dockerfile(&format!("FROM {image}\nWORKDIR /app/data\n"));
    let (out, rootfs) = build(&sb, isolation);
    c.assert_unchanged(&out);
    let r = built(&out, rootfs);
    assert!(
        r.join(c.rel()).join("data").is_dir(),
        "the WORKDIR lands inside the image"
    );
}
under_userns_and_root!(
    finding2_workdir_through_image_symlink_absolute => finding2_base_absolute
);

fn finding2_base_dotdot(isolation: &str) {
    let c = HostCanary::new("f2-rel");
    let reg = Registry::start();
    let climb = format!("{}{}", "../".repeat(40), c.rel());
    let image = push_hostile(
        &reg,
        "f2-rel",
        Tar::default().symlink("app", &climb).finish(),
    );
    let sb = Sandbox::new();
    sb.dockerfile(&format!(
        "FROM {image}\nWORKDIR /app/data\nRUN touch here\n"
    ));
    let (out, rootfs) = build(&sb, isolation);
    c.assert_unchanged(&out);
    let r = built(&out, rootfs);
    assert!(r.join(c.rel()).join("data/here").is_file());
}
under_userns_and_root!(
    finding2_workdir_through_image_symlink_dotdot => finding2_base_dotdot
);

/// `/var/run -> /run` is legitimate, and a WORKDIR below it must land in
/// the image's /run, not the host's.
fn finding2_var_run(isolation: &str) {
    let host = MustNotExist::in_dir("/run", "f2-varrun");
    let name = host.name();
    let reg = Registry::start();
    let image = push_hostile(
        &reg,
        "f2-varrun",
        Tar::default()
            .dir("run/", 0o755)
            .dir("var/", 0o755)
            .symlink("var/run", "/run")
            .finish(),
    );
    let sb = Sandbox::new();
    sb.dockerfile(&format!(
        "FROM {image}\nWORKDIR /var/run/{name}\nRUN touch here\n"
    ));
    let (out, rootfs) = build(&sb, isolation);
    host.assert_absent(&out);
    let r = built(&out, rootfs);
    assert!(r.join(format!("run/{name}/here")).is_file());
}
under_userns_and_root!(
    finding2_workdir_through_image_symlink_var_run => finding2_var_run
);

// ---------------------------------------------------------------------------
// COPY destinations through symlinks in the image.

fn copy_through_image_symlink(isolation: &str) {
    let c = HostCanary::new("copy-dest");
    let reg = Registry::start();
    let climb = format!("{}{}", "../".repeat(40), c.rel());
    let image = push_hostile(
        &reg,
        "copy-dest",
        Tar::default()
            .symlink("out", c.path())
            .symlink("rel", &climb)
            .symlink("f", &c.file())
            .finish(),
    );
    let sb = Sandbox::new();
    sb.write("f", "from the context\n");
    sb.write("dir/keep", "from the context\n");
    sb.dockerfile(&format!(
        "FROM {image}\nCOPY f /out/f\nCOPY f /rel/g\nCOPY dir/ /out/cdir/\nCOPY --chmod=6777 f /out/canary\nCOPY f /f\n"
    ));
    let (out, rootfs) = build(&sb, isolation);
    c.assert_unchanged(&out);
    let r = built(&out, rootfs);
    let inside = r.join(c.rel());
    assert_eq!(
        std::fs::read_to_string(inside.join("f")).expect("f"),
        "from the context\n"
    );
    assert!(inside.join("g").is_file());
    assert!(inside.join("cdir/keep").is_file());
}
under_userns_and_root!(copy_destination_through_image_symlink => copy_through_image_symlink);

// ---------------------------------------------------------------------------
// RUN --mount sources, targets and ids through symlinks.

fn mount_targets_through_symlinks(isolation: &str) {
    let c = HostCanary::new("mount-target");
    let reg = Registry::start();
    let image = push_hostile(
        &reg,
        "mount-target",
        Tar::default()
            .symlink("t", c.path())
            .symlink("tc", &c.cdir())
            .finish(),
    );
    let sb = Sandbox::new();
    sb.write("src/data", "bound\n");
    sb.dockerfile(&format!(
        "FROM {image}\n\
         RUN --mount=type=bind,source=src,target=/t/bound cat /t/bound/data\n\
         RUN --mount=type=cache,target=/t/cache touch /t/cache/x\n\
         RUN --mount=type=tmpfs,target=/tc/tmp true\n\
         RUN --mount=type=bind,source=src,target=/tc ls /tc\n"
    ));
    let (out, _) = build(&sb, isolation);
    c.assert_unchanged(&out);
}
under_userns_and_root!(mount_targets_through_image_symlinks => mount_targets_through_symlinks);

fn mount_sources_through_symlinks(isolation: &str) {
    let c = HostCanary::new("mount-source");
    // Each source in a build of its own: the first refusal would hide the
    // others.
    for (source, step) in [
        (
            "link",
            "(cat /m/canary || true) > /leak; touch /m/pwn || true",
        ),
        (
            "rel",
            "(cat /m/canary || true) > /leak; chmod 6777 /m/canary || true",
        ),
        (
            "link/cdir",
            "(cat /m/keep || true) > /leak; rm -f /m/keep || true",
        ),
    ] {
        let sb = Sandbox::new();
        sb.busybox();
        std::os::unix::fs::symlink(c.path(), sb.context().join("link")).expect("symlink");
        std::os::unix::fs::symlink(
            format!("{}{}", "../".repeat(40), c.rel()),
            sb.context().join("rel"),
        )
        .expect("symlink");
        sb.dockerfile(&format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             RUN --mount=type=bind,source={source},target=/m,rw {step}\n"
        ));
        let (out, rootfs) = build(&sb, isolation);
        c.assert_unchanged(&out);
        if let Some(r) = rootfs {
            let text = std::fs::read_to_string(r.join("leak")).unwrap_or_default();
            assert!(
                !text.contains("host canary") && !text.contains("keep me"),
                "{source}: a host file was mounted: {text:?}"
            );
        }
    }
}
under_userns_and_root!(mount_sources_through_context_symlinks => mount_sources_through_symlinks);

fn cache_ids_that_climb(isolation: &str) {
    let c = HostCanary::new("cache-id");
    let sb = Sandbox::new();
    sb.busybox();
    let climb = format!("{}{}", "../".repeat(40), c.rel());
    sb.dockerfile(&format!(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN --mount=type=cache,id={climb},target=/c touch /c/pwn && (chmod 777 /c || true)\n\
         RUN --mount=type=cache,id={}/cdir,target=/c touch /c/pwn2 && (rm -f /c/keep || true)\n\
         RUN --mount=type=cache,id=../../x,target=/c touch /c/pwn3\n",
        c.path()
    ));
    let (out, _) = build(&sb, isolation);
    c.assert_unchanged(&out);
    // Nothing escaped the cache dir into the sandbox either.
    assert!(!sb.path("x").exists(), "cache id ../../x left the cache");
}
under_userns_and_root!(cache_ids_that_climb_stay_in_the_cache => cache_ids_that_climb);

// ---------------------------------------------------------------------------
// Legitimate shapes keep building end to end.

fn legit_shapes(isolation: &str) {
    let reg = Registry::start();
    let image = push_hostile(
        &reg,
        "legit",
        Tar::default()
            .dir("usr/", 0o755)
            .dir("usr/lib/", 0o755)
            .symlink("lib", "usr/lib")
            .dir("run/", 0o755)
            .dir("var/", 0o755)
            .symlink("var/run", "/run")
            .dir("etc/", 0o755)
            .dir("etc/pki/", 0o755)
            .file("etc/pki/cacerts", b"certs", 0o644)
            .dir("etc/ssl/", 0o755)
            .dir("etc/ssl/certs/", 0o755)
            .dir("etc/ssl/certs/java/", 0o755)
            .symlink(
                "etc/ssl/certs/java/cacerts",
                "../../../../../../etc/pki/cacerts",
            )
            .finish(),
    );
    let sb = Sandbox::new();
    sb.write("f", "context file\n");
    sb.dockerfile(&format!(
        "FROM {image}\n\
         COPY f /lib/x\n\
         COPY f /var/run/app.conf\n\
         RUN cat /etc/ssl/certs/java/cacerts > /certs.txt && ln -sf true /bin/sh2\n\
         COPY f /etc/ssl/certs/java/copied\n"
    ));
    let (out, rootfs) = build(&sb, isolation);
    let r = built(&out, rootfs);
    assert!(r.join("usr/lib/x").is_file(), "merged usr");
    assert!(r.join("run/app.conf").is_file(), "/var/run -> /run");
    assert_eq!(
        std::fs::read_to_string(r.join("certs.txt")).expect("certs"),
        "certs"
    );
    assert_eq!(
        std::fs::read_link(r.join("etc/ssl/certs/java/cacerts")).expect("link"),
        Path::new("../../../../../../etc/pki/cacerts")
    );
}
under_userns_and_root!(legit_symlink_shapes_keep_building => legit_shapes);

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

fn have_podman(test: &str) -> bool {
    if which("podman").is_some() {
        return true;
    }
    eprintln!("{test}: skipped, podman is not installed (scripts/setup.sh installs it)");
    false
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
    if !have_podman("finding1_chmod_through_symlink_replacing_dir_in_place") {
        return;
    }
    let reg = Registry::start();
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
    if !have_podman("finding5_inplace_protected_path_through_parent_symlink_in_place") {
        return;
    }
    let reg = Registry::start();
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
    if !have_podman("in_place_probe_sees_no_change_from_a_benign_base") {
        return;
    }
    let reg = Registry::start();
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

// ---------------------------------------------------------------------------
// Sources read from another image through its symlinks.

/// Every file below `root` whose contents are the host canaries'.
fn leaked(root: &Path) -> Vec<String> {
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

fn sources_through_image_symlinks(isolation: &str) {
    let c = HostCanary::new("from-source");
    let reg = Registry::start();
    let climb = format!("{}{}", "../".repeat(40), c.rel());
    let image = push_hostile(
        &reg,
        "from-source",
        Tar::default()
            .symlink("app", c.path())
            .symlink("rel", &climb)
            .symlink("f", &c.file())
            .finish(),
    );
    for step in [
        format!("COPY --from={image} /app/ /x/"),
        format!("COPY --from={image} /rel/cdir/ /x/"),
        format!("COPY --from={image} /f /x"),
        format!("RUN --mount=type=bind,from={image},source=app,target=/m (cat /m/canary || true) > /leak"),
        format!("RUN --mount=type=bind,from={image},source=rel/cdir,target=/m (cat /m/keep || true) > /leak"),
    ] {
        let sb = Sandbox::new();
        sb.dockerfile(&format!("FROM {image}\n{step}\n"));
        let (out, rootfs) = build(&sb, isolation);
        c.assert_unchanged(&out);
        if let Some(r) = rootfs {
            let found = leaked(&r);
            assert!(found.is_empty(), "{step}: host files in the image: {found:?}");
            let leak = std::fs::read_to_string(r.join("leak")).unwrap_or_default();
            assert!(leak.is_empty(), "{step}: a host file was mounted: {leak:?}");
        }
    }
}
under_userns_and_root!(sources_through_another_image_s_symlinks => sources_through_image_symlinks);

// ---------------------------------------------------------------------------
// An ADDed gzip bomb: streamed, not held in memory.

/// 256 MiB of zeros in one file, tarred and gzipped (about 250 KiB).
const ADD_BOMB_MIB: usize = 256;

fn add_gzip_bomb(isolation: &str) {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.context()).expect("mkdir");
    let bomb = sb.context().join("bomb.tar.gz");
    // Through gzip's stdin, so the test never holds the bomb either.
    let script = format!(
        "import sys, tarfile, io\n\
         class Zeros(io.RawIOBase):\n\
         \x20   def __init__(self, n): self.n = n\n\
         \x20   def readable(self): return True\n\
         \x20   def readinto(self, b):\n\
         \x20       k = min(len(b), self.n); b[:k] = bytes(k); self.n -= k; return k\n\
         t = tarfile.open(fileobj=sys.stdout.buffer, mode='w|')\n\
         i = tarfile.TarInfo('bomb'); i.size = {size}\n\
         t.addfile(i, io.BufferedReader(Zeros({size})))\n\
         t.close()\n",
        size = ADD_BOMB_MIB << 20
    );
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("python3 -c \"$1\" | gzip -1 -n > \"$2\"")
        .args(["sh", &script, &bomb.to_string_lossy()])
        .status()
        .expect("python3 and gzip");
    assert!(status.success(), "making the bomb failed");
    assert!(std::fs::metadata(&bomb).expect("bomb").len() < 4 << 20);
    sb.dockerfile("FROM scratch\nADD bomb.tar.gz /x/\n");
    // kiln under python's wait, which reports the children's peak RSS.
    let layout = sb.path("out");
    let measure = "import resource, subprocess, sys\n\
                   r = subprocess.run(sys.argv[1:])\n\
                   print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
                   sys.exit(r.returncode)\n";
    let out = std::process::Command::new("python3")
        .args(["-c", measure, env!("CARGO_BIN_EXE_kiln")])
        .args([
            "build",
            "--isolation",
            isolation,
            "-t",
            "bomb:latest",
            "--output",
        ])
        .arg(format!("type=oci,dest={}", layout.display()))
        .arg(sb.context())
        .env("KILN_CACHE_DIR", sb.path("cache"))
        .output()
        .expect("python3");
    assert_success(&out);
    let kib: u64 = stdout(&out)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("peak RSS");
    eprintln!("ADD of a {ADD_BOMB_MIB} MiB gzip bomb: kiln's peak RSS {kib} KiB");
    assert!(
        kib < 160 * 1024,
        "kiln's peak RSS {kib} KiB for a {ADD_BOMB_MIB} MiB bomb"
    );
    let r = umoci_unpack(&layout, "latest", &sb.path("bundle"));
    assert_eq!(
        std::fs::metadata(r.join("x/bomb")).expect("bomb").len(),
        (ADD_BOMB_MIB as u64) << 20
    );
}
under_userns_and_root!(add_archive_gzip_bomb_in_bounded_memory => add_gzip_bomb);
