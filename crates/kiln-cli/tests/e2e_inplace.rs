//! In-place isolation (Kaniko mode) end to end: kiln's own image, built by
//! `scripts/image.sh` with the kiln under test, runs under podman as an
//! ordinary unprivileged container (default capabilities, no `--privileged`)
//! whose seccomp profile is podman's default plus a ban on creating user
//! namespaces, as on locked-down clusters. There kiln must build in place
//! and produce the same image as a `--isolation userns` build on the host.
//! Also: in-place mode refuses to run where nothing says it is inside a
//! container, and the executor entrypoint builds a context fetched from S3
//! (moto) and pushes with built-in ECR auth (moto's token, checked by a
//! registry's htpasswd) in the same unprivileged container.
//!
//! Real components only: podman, the CNCF distribution registry, moto,
//! umoci and skopeo. A missing podman fails the tests (scripts/setup.sh
//! installs it).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kiln_testkit::registry::Mode;

/// A fixed SOURCE_DATE_EPOCH (2023-11-14T22:13:20Z) for reproducible builds.
const EPOCH: &str = "1700000000";
/// moto's default account and the region the ECR test registry claims.
const ECR_ACCOUNT: &str = "123456789012";
const ECR_REGION: &str = "us-east-1";
/// Credentials handed to moto (it accepts any).
const AWS_KEY_ID: &str = "AKIAKILNINPLACE00001";
const AWS_SECRET: &str = "kiln-in-place-secret-key";
/// `CLONE_NEWUSER` from <linux/sched.h>.
const CLONE_NEWUSER: u64 = 0x1000_0000;
/// `CAP_SYS_ADMIN`'s bit in /proc/PID/status capability masks.
const CAP_SYS_ADMIN_BIT: u32 = 21;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The kiln under test, copied once so every image of a test packages the
/// same bytes even if cargo relinks the original meanwhile.
fn kiln_copy(sb: &Sandbox) -> PathBuf {
    let copy = sb.path("kiln-under-test/kiln");
    if !copy.exists() {
        std::fs::create_dir_all(sb.path("kiln-under-test")).expect("mkdir");
        std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &copy).expect("copy kiln");
    }
    copy
}

/// Builds kiln's image (`--debug` for the busybox variant) with
/// scripts/image.sh and the kiln under test.
fn image_sh(sb: &Sandbox, args: &[&str]) {
    let out = Command::new(repo_root().join("scripts/image.sh"))
        .arg("--binary")
        .arg(kiln_copy(sb))
        .args(args)
        .env("KILN_CACHE_DIR", sb.path("image-cache"))
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("TMPDIR", sb.dir.path())
        .output()
        .expect("run scripts/image.sh");
    assert_success(&out);
}

/// A podman image, removed on drop.
struct Loaded(String);

impl Loaded {
    /// Builds kiln's image into podman's storage under a per-process tag.
    fn kiln_image(sb: &Sandbox, debug: bool) -> Loaded {
        let variant = if debug { "debug" } else { "kiln" };
        let tag = format!(
            "localhost/kiln-e2e-inplace-{variant}:{}",
            std::process::id()
        );
        let archive = sb.path(&format!("kiln-{variant}.tar"));
        let dest = format!("docker-archive:{}", archive.display());
        let mut args = vec!["--tag", tag.as_str(), "--output", dest.as_str()];
        if debug {
            args.insert(0, "--debug");
        }
        image_sh(sb, &args);
        let out = podman(&["load", "-i", &archive.to_string_lossy()]);
        assert_success(&out);
        Loaded(tag)
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "-f", &self.0]);
    }
}

/// Writes podman's default seccomp profile with user namespace creation
/// denied: `unshare` fails with EPERM, `clone` with `CLONE_NEWUSER` in its
/// flags fails with EPERM (other clones are allowed), and `clone3`, whose
/// flags seccomp cannot inspect, fails with ENOSYS so that libc falls back
/// to `clone`. Everything else is the installed default's.
fn no_userns_profile(sb: &Sandbox) -> PathBuf {
    let default = "/usr/share/containers/seccomp.json";
    let text = std::fs::read_to_string(default).unwrap_or_else(|e| {
        panic!(
            "{default}: {e} (podman's default seccomp profile; scripts/setup.sh installs podman)"
        )
    });
    let mut profile: serde_json::Value = serde_json::from_str(&text).expect("seccomp JSON");
    let denied = ["unshare", "clone", "clone3"];
    let rules = profile["syscalls"]
        .as_array_mut()
        .expect("the profile has a syscalls list");
    for rule in rules.iter_mut() {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| !denied.iter().any(|d| n == d));
        }
    }
    rules.retain(|r| r["names"].as_array().is_some_and(|n| !n.is_empty()));
    rules.extend([
        serde_json::json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}),
        serde_json::json!({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
            "args": [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}]}),
        serde_json::json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}),
        serde_json::json!({"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}),
    ]);
    let path = sb.path("seccomp-no-userns.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&profile).expect("json")).expect("write");
    path
}

/// `podman run` as an ordinary unprivileged Job: default capabilities, the
/// no-userns seccomp profile, the host's loopback network (the registry and
/// moto listen there).
fn podman_locked_down(profile: &Path, args: &[&str]) -> Output {
    let seccomp = format!("seccomp={}", profile.display());
    let mut full = vec!["--network", "host", "--security-opt", &seccomp];
    full.extend_from_slice(args);
    podman_run(&full)
}

/// In the locked-down container: no CAP_SYS_ADMIN, and no user namespace
/// for anyone (busybox `unshare -U`, and kiln's own userns mode).
fn assert_locked_down(profile: &Path, debug: &Loaded, kiln: &Loaded, ctx: &Path) {
    let probe = podman_locked_down(
        profile,
        &[
            "--entrypoint",
            "/busybox/sh",
            &debug.0,
            "-c",
            "grep CapEff /proc/self/status; if unshare -U true; then echo userns allowed; else echo userns denied; fi",
        ],
    );
    assert_success(&probe);
    let text = stdout(&probe);
    let cap_eff = text
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex mask"))
        .unwrap_or_else(|| panic!("no CapEff line: {text}"));
    assert_eq!(
        cap_eff & (1 << CAP_SYS_ADMIN_BIT),
        0,
        "CAP_SYS_ADMIN: {text}"
    );
    assert!(text.ends_with("userns denied\n"), "{text}");
    assert!(
        stderr(&probe).contains("Operation not permitted"),
        "{}",
        stderr(&probe)
    );
    // kiln's userns mode fails for exactly that reason (a scratch /tmp so
    // that only the user namespace can be what is missing).
    let ctx_mount = format!("{}:/workspace:ro", ctx.display());
    let refused = podman_locked_down(
        profile,
        &[
            "--tmpfs",
            "/tmp",
            "-v",
            &ctx_mount,
            &kiln.0,
            "--context",
            "dir:///workspace",
            "--dockerfile",
            "Dockerfile",
            "--no-push",
            "--isolation",
            "userns",
        ],
    );
    assert!(!refused.status.success(), "userns build succeeded");
    assert!(
        stderr(&refused).contains("unshare(CLONE_NEWUSER): EPERM"),
        "{}",
        stderr(&refused)
    );
}

/// Writes the busybox base image's context: busybox, /etc files, and a
/// directory the derived image replaces.
fn base_context(sb: &Sandbox) {
    sb.busybox();
    sb.write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
    sb.write("etc/group", "root:x:0:\n");
    sb.write("etc/motd", "welcome to the base\n");
    sb.write("etc/base.conf", "setting=1\n");
    sb.write("opt/replace/old.txt", "old\n");
    sb.write("opt/replace/sub/deep.txt", "deep\n");
    sb.dockerfile(
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         COPY etc/ /etc/\n\
         COPY opt/ /opt/\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    );
}

/// Builds the base on the host and pushes it to `image`.
fn push_base(sb: &Sandbox, image: &str, extra: &[&str], env: &[(&str, &str)]) {
    base_context(sb);
    let ctx = sb.context().to_string_lossy().to_string();
    let mut args = vec!["build", "--progress", "plain", "-t", image, "--push"];
    args.extend_from_slice(extra);
    args.push(&ctx);
    let out = sb.kiln_env(&args, env);
    assert_success(&out);
}

/// Asserts two unpacked images hold the same entries, listing every difference.
fn assert_same_tree(in_place: &Path, userns: &Path) {
    let a = entries(in_place);
    let b = entries(userns);
    let mut diffs = Vec::new();
    for (path, ea) in &a {
        match b.get(path) {
            None => diffs.push(format!("only in the in-place image: {path} {ea:?}")),
            Some(eb) if eb != ea => {
                diffs.push(format!("{path}:\n  in-place {ea:?}\n  userns   {eb:?}"))
            }
            Some(_) => {}
        }
    }
    for (path, eb) in &b {
        if !a.contains_key(path) {
            diffs.push(format!("only in the userns image: {path} {eb:?}"));
        }
    }
    assert!(diffs.is_empty(), "the trees differ:\n{}", diffs.join("\n"));
}

/// Converts the executor's output (Docker media types) to an OCI layout
/// umoci reads, and unpacks it.
fn unpack_docker_archive(sb: &Sandbox, archive: &Path, name: &str) -> PathBuf {
    let layout = sb.path(&format!("{name}-oci"));
    run_tool(
        "skopeo",
        &[
            "copy",
            "--format",
            "oci",
            &format!("docker-archive:{}", archive.display()),
            &format!("oci:{}:img", layout.display()),
        ],
    );
    umoci_unpack(&layout, "img", &sb.path(&format!("{name}-bundle")))
}

/// The parts of an image config both builds must agree on.
fn config_summary(cfg: &serde_json::Value) -> serde_json::Value {
    let c = &cfg["config"];
    serde_json::json!({
        "Env": c["Env"],
        "Cmd": c["Cmd"],
        "Entrypoint": c["Entrypoint"],
        "User": c["User"],
        "WorkingDir": c["WorkingDir"],
        "Labels": c["Labels"],
    })
}

const APP_DOCKERFILE: &str = r#"FROM {BASE}
ENV APP=/opt/app GREETING="hello in place"
RUN mkdir -p $APP/data \
 && echo "$GREETING" > $APP/greeting.txt \
 && rm /etc/motd \
 && rm -rf /opt/replace && mkdir /opt/replace && echo fresh > /opt/replace/new.txt \
 && chmod 0700 $APP/data && chmod 0600 /etc/base.conf \
 && ln -s greeting.txt $APP/greeting.link \
 && ln $APP/greeting.txt $APP/greeting.hard \
 && cp /bin/busybox $APP/suid-tool && chmod 4755 $APP/suid-tool
RUN echo 'app:x:1000:1000:app:/home/app:/bin/sh' >> /etc/passwd \
 && echo 'app:x:1000:' >> /etc/group \
 && mkdir -p /home/app/work && chown -R 1000:1000 /home/app
COPY --chown=app:app files/ /srv/files/
USER app
WORKDIR /home/app/work
RUN echo "$(id -un):$(id -gn) in $(pwd) says $GREETING" > whoami.txt \
 && ls -n /srv/files | sed 1d | awk '{print $1, $3, $4, $9}' > listing.txt
RUN --mount=type=cache,target=/home/app/.cache,uid=1000,gid=1000 \
    echo cached > /home/app/.cache/c && cat /home/app/.cache/c > cached.txt
LABEL org.example.built-by=kiln org.example.mode=compare
CMD ["cat", "/home/app/work/whoami.txt"]
"#;

#[test]
fn in_place_build_in_an_unprivileged_container_matches_the_userns_build() {
    require("podman");
    let reg = Registry::plain();
    let base = format!("{}/kiln-e2e/busybox:1", reg.host);
    let base_sb = Sandbox::new();
    push_base(&base_sb, &base, &[], &[]);

    let sb = Sandbox::new();
    sb.dockerfile(&APP_DOCKERFILE.replace("{BASE}", &base));
    sb.write("files/a.txt", "copied with --chown\n");
    sb.write_mode("files/run.sh", "#!/bin/sh\necho run\n", 0o750);

    let profile = no_userns_profile(&sb);
    let kiln = Loaded::kiln_image(&sb, false);
    let debug = Loaded::kiln_image(&sb, true);
    assert_locked_down(&profile, &debug, &kiln, &sb.context());

    // The Kaniko-style Job: context at /workspace, results in /out.
    let out_dir = sb.path("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let ctx_mount = format!("{}:/workspace:ro", sb.context().display());
    let out_mount = format!("{}:/out", out_dir.display());
    let epoch = format!("SOURCE_DATE_EPOCH={EPOCH}");
    let run = podman_locked_down(
        &profile,
        &[
            "-e",
            &epoch,
            "-v",
            &ctx_mount,
            "-v",
            &out_mount,
            &kiln.0,
            "--context",
            "dir:///workspace",
            "--dockerfile",
            "Dockerfile",
            "--no-push",
            "--reproducible",
            "--tar-path",
            "/out/image.tar",
            "--digest-file",
            "/out/digest",
        ],
    );
    assert_success(&run);
    let log = stderr(&run);
    assert!(log.contains("RUN isolation: in-place ("), "{log}");
    assert!(log.contains("there is no CAP_SYS_ADMIN"), "{log}");
    // Chosen for the right reason: the user namespace itself was refused
    // (not, say, a missing /tmp on the way to trying it).
    assert!(log.contains("CLONE_NEWUSER"), "{log}");
    assert!(
        log.contains("kiln's in-place marker /kiln/.in-place-container exists"),
        "{log}"
    );
    let digest = std::fs::read_to_string(out_dir.join("digest")).expect("digest file");
    assert!(digest.starts_with("sha256:"), "{digest}");

    // The same Dockerfile on the host, in a user namespace.
    let host_out = sb.path("host-layout");
    let dest = format!("type=oci,dest={}", host_out.display());
    let ctx = sb.context().to_string_lossy().to_string();
    let host = sb.kiln_env(
        &[
            "build",
            "--progress",
            "plain",
            "--isolation",
            "userns",
            "--reproducible",
            "-t",
            "compare:latest",
            "--output",
            &dest,
            &ctx,
        ],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    assert_success(&host);

    let in_place_root = unpack_docker_archive(&sb, &out_dir.join("image.tar"), "in-place");
    let userns_root = umoci_unpack(&host_out, "latest", &sb.path("userns-bundle"));
    assert_same_tree(&in_place_root, &userns_root);

    // What the steps did, as seen in the in-place image.
    let tree = entries(&in_place_root);
    let get = |p: &str| {
        tree.get(p)
            .unwrap_or_else(|| panic!("{p} missing from the image"))
    };
    assert!(
        !tree.contains_key("etc/motd"),
        "deleted base file came back"
    );
    let replaced: Vec<&String> = tree
        .keys()
        .filter(|k| k.starts_with("opt/replace/"))
        .collect();
    assert_eq!(replaced, ["opt/replace/new.txt"], "replaced directory");
    assert_eq!(get("opt/app/data").mode, 0o700);
    assert_eq!(get("etc/base.conf").mode, 0o600);
    assert_eq!(
        get("opt/app/greeting.link").link_target.as_deref(),
        Some(Path::new("greeting.txt"))
    );
    assert_eq!(
        get("opt/app/greeting.hard").hardlink_group.as_deref(),
        Some("opt/app/greeting.hard")
    );
    assert_eq!(
        get("opt/app/greeting.txt").hardlink_group.as_deref(),
        Some("opt/app/greeting.hard")
    );
    assert_eq!(
        std::fs::read_to_string(in_place_root.join("opt/app/greeting.txt")).expect("read"),
        "hello in place\n"
    );
    let suid = get("opt/app/suid-tool");
    assert_eq!((suid.mode, suid.uid, suid.gid), (0o4755, 0, 0));
    let home = get("home/app/work");
    assert_eq!((home.uid, home.gid), (1000, 1000));
    for f in ["srv/files/a.txt", "srv/files/run.sh"] {
        assert_eq!((get(f).uid, get(f).gid), (1000, 1000), "{f}");
    }
    assert_eq!(get("srv/files/run.sh").mode, 0o750);
    let whoami = get("home/app/work/whoami.txt");
    assert_eq!((whoami.uid, whoami.gid), (1000, 1000));
    assert_eq!(
        std::fs::read_to_string(in_place_root.join("home/app/work/whoami.txt")).expect("read"),
        "app:app in /home/app/work says hello in place\n"
    );
    assert_eq!(
        std::fs::read_to_string(in_place_root.join("home/app/work/listing.txt")).expect("read"),
        "-rw-r--r-- 1000 1000 a.txt\n-rwxr-x--- 1000 1000 run.sh\n"
    );
    assert!(std::fs::read_to_string(in_place_root.join("etc/passwd"))
        .expect("read")
        .ends_with("app:x:1000:1000:app:/home/app:/bin/sh\n"));

    // The configs agree, and say what the Dockerfile says.
    let in_place_cfg = skopeo_config(&format!(
        "docker-archive:{}",
        out_dir.join("image.tar").display()
    ));
    let userns_cfg = skopeo_config(&format!("oci:{}:latest", host_out.display()));
    assert_eq!(config_summary(&in_place_cfg), config_summary(&userns_cfg));
    let c = &in_place_cfg["config"];
    assert_eq!(c["User"], "app");
    assert_eq!(c["WorkingDir"], "/home/app/work");
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["cat", "/home/app/work/whoami.txt"])
    );
    assert_eq!(c["Labels"]["org.example.built-by"], "kiln");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"APP=/opt/app"), "{env:?}");
    assert!(env.contains(&"GREETING=hello in place"), "{env:?}");
}

/// A throwaway root with no container evidence: kiln's image's files minus
/// its in-place marker, plus sentinels and a context. On a machine that is
/// itself a container (CI runners in Docker carry /.dockerenv) the real
/// host root cannot be "outside a container", and pointing in-place mode
/// at it would risk the machine if kiln got this wrong; a chroot into a
/// root of our own is both a faithful host (no marker files, no container
/// cgroups, no overlay root) and harmless.
fn evidence_free_root(sb: &Sandbox) -> PathBuf {
    let archive = sb.path("kiln-oci.tar");
    image_sh(
        sb,
        &[
            "--tag",
            "kiln-e2e:refuse",
            "--output",
            &format!("oci-archive:{}", archive.display()),
        ],
    );
    let layout = sb.path("kiln-layout");
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
    let root = umoci_unpack(&layout, "refuse", &sb.path("host-bundle"));
    std::fs::remove_file(root.join("kiln/.in-place-container")).expect("remove marker");
    for d in ["proc", "dev", "tmp", "ctx", "cache"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::set_permissions(
        root.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("chmod");
    std::fs::copy(which("busybox").expect("busybox"), root.join("ctx/busybox")).expect("copy");
    std::fs::write(
        root.join("ctx/Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"touch\", \"/created-by-run\"]\n",
    )
    .expect("write");
    std::fs::write(root.join("sentinel"), "host file\n").expect("write");
    std::fs::write(root.join("etc/sentinel"), "host config\n").expect("write");
    root
}

#[test]
fn in_place_refuses_outside_a_container() {
    let sb = Sandbox::new();
    let root = evidence_free_root(&sb);
    let before = entries(&root);
    // A private mount and PID namespace for a fresh /proc and a /dev of
    // its own (a tmpfs with /dev/null bound in: nothing of the machine's
    // /dev is exposed to a kiln that might wrongly wipe its root), then
    // chroot.
    let script = format!(
        "mount -t proc proc {root}/proc && mount -t tmpfs tmpfs {root}/dev && \
         touch {root}/dev/null && mount --bind /dev/null {root}/dev/null && \
         exec chroot {root} /kiln/kiln build --progress plain --isolation in-place \
         --cache-dir /cache --output type=oci,dest=/tmp/out /ctx",
        root = root.display()
    );
    let mut cmd = Command::new("unshare");
    if !running_as_root() {
        cmd.arg("--map-root-user");
    }
    let out = cmd
        .args(["--mount", "--pid", "--fork", "sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("TMPDIR", "/tmp")
        .output()
        .expect("unshare (util-linux)");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", stdout(&out));
    assert!(err.contains("error: in-place isolation "), "{err}");
    assert!(
        err.contains("nothing shows kiln runs inside a container"),
        "{err}"
    );
    assert!(!root.join("created-by-run").exists(), "the RUN step ran");
    assert_eq!(
        std::fs::read_to_string(root.join("sentinel")).expect("sentinel survives"),
        "host file\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/sentinel")).expect("sentinel survives"),
        "host config\n"
    );
    // Nothing outside kiln's scratch and cache directories changed.
    let after = entries(&root);
    let outside = |m: &BTreeMap<String, Entry>| -> Vec<String> {
        m.iter()
            .filter(|(p, _)| !["tmp/", "cache/"].iter().any(|d| p.starts_with(d)))
            .map(|(p, e)| format!("{p} {e:?}"))
            .collect()
    };
    assert_eq!(outside(&after), outside(&before));
}

/// Whether this process runs as root (chroot and mounts then need no user
/// namespace); read from /proc so the test needs no extra crates.
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

/// A running `moto_server` (S3, ECR, STS) on a free loopback port.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (PyPI moto[server]; scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Runs a boto3 script against moto with the test's credentials.
    fn python(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
            .env("AWS_DEFAULT_REGION", ECR_REGION)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .output()
            .expect("python3 (scripts/setup.sh installs it with boto3 for moto)");
        assert_success(&out);
        stdout(&out)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a bucket in moto and uploads a file to it (argv: bucket, key, file).
const S3_UPLOAD: &str = "import boto3, sys\n\
s3 = boto3.client('s3')\n\
s3.create_bucket(Bucket=sys.argv[1])\n\
s3.upload_file(sys.argv[3], sys.argv[1], sys.argv[2])\n";

/// ECR's GetAuthorizationToken from moto, decoded to the registry password.
const ECR_PASSWORD: &str = "import base64, boto3\n\
t = boto3.client('ecr').get_authorization_token()['authorizationData'][0]['authorizationToken']\n\
user, password = base64.b64decode(t).decode().split(':', 1)\n\
assert user == 'AWS', user\n\
print(password)\n";

#[test]
fn executor_image_builds_from_s3_and_pushes_with_ecr_style_auth_in_place() {
    require("podman");
    let moto = Moto::start();
    let password = moto.python(ECR_PASSWORD, &[]).trim().to_string();
    assert!(!password.is_empty());
    let reg = Registry::start(Mode::BasicAs {
        user: "AWS".into(),
        password: password.clone(),
    });
    let ecr = format!("{}=ecr:{ECR_ACCOUNT}:{ECR_REGION}", reg.host);
    let aws_env = [
        ("AWS_ACCESS_KEY_ID", AWS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        ("AWS_REGION", ECR_REGION),
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];

    // The base, pushed from the host with the same built-in ECR auth.
    let base = format!("{}/team/busybox:1", reg.host);
    let base_sb = Sandbox::new();
    push_base(&base_sb, &base, &["--cloud-registry", &ecr], &aws_env);

    // The context, as a tarball in S3.
    let sb = Sandbox::new();
    sb.write("message.txt", "hello from s3\n");
    sb.dockerfile(&format!(
        "FROM {base}\nCOPY message.txt /message.txt\n\
         RUN echo \"built in place\" >> /message.txt && chmod 0444 /message.txt\n\
         CMD [\"cat\", \"/message.txt\"]\n"
    ));
    let tarball = sb.path("ctx.tar.gz");
    run_tool(
        "tar",
        &[
            "-czf",
            &tarball.to_string_lossy(),
            "-C",
            &sb.context().to_string_lossy(),
            ".",
        ],
    );
    moto.python(
        S3_UPLOAD,
        &["kiln-ctx", "jobs/ctx.tar.gz", &tarball.to_string_lossy()],
    );

    let profile = no_userns_profile(&sb);
    let kiln = Loaded::kiln_image(&sb, false);
    let out_dir = sb.path("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let out_mount = format!("{}:/out", out_dir.display());
    let dest = format!("{}/team/app:v1", reg.host);
    let mut args: Vec<String> = Vec::new();
    for (k, v) in aws_env {
        args.extend(["-e".to_string(), format!("{k}={v}")]);
    }
    for e in [
        format!("S3_ENDPOINT={}", moto.endpoint),
        "S3_FORCE_PATH_STYLE=true".to_string(),
    ] {
        args.extend(["-e".to_string(), e]);
    }
    args.extend(
        [
            "-v",
            &out_mount,
            &kiln.0,
            "--context",
            "s3://kiln-ctx/jobs/ctx.tar.gz",
            "--destination",
            &dest,
            "--cloud-registry",
            &ecr,
            "--digest-file",
            "/out/digest",
        ]
        .map(str::to_string),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = podman_locked_down(&profile, &args);
    assert_success(&run);
    let log = stderr(&run);
    assert!(log.contains("RUN isolation: in-place ("), "{log}");
    assert!(
        !log.contains(&password),
        "the ECR token leaked into the log"
    );
    let digest = std::fs::read_to_string(out_dir.join("digest")).expect("digest file");

    // The registry holds what the executor reported.
    let creds = format!("AWS:{password}");
    let inspect = run_tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            &creds,
            &format!("docker://{dest}"),
        ],
    );
    let inspected: serde_json::Value = serde_json::from_str(&inspect).expect("json");
    assert_eq!(inspected["Digest"], digest.trim());

    // And podman runs it.
    let pull = podman(&["pull", "--tls-verify=false", "--creds", &creds, &dest]);
    assert_success(&pull);
    let _pulled = Loaded(dest.clone());
    let ran = podman_run(&["--network", "none", &dest]);
    assert_success(&ran);
    assert_eq!(stdout(&ran), "hello from s3\nbuilt in place\n");
}
