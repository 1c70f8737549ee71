//! End-to-end builds through the real `kiln` binary, checked with real
//! clients: skopeo reads the layouts and archives, umoci unpacks them,
//! podman loads and runs the docker archive.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;

#[test]
fn scratch_image_into_oci_layout_has_files_modes_owners_and_config() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.write_mode("app/run.sh", "#!/bin/sh\necho run\n", 0o755);
    sb.write_mode("app/data.txt", "data\n", 0o600);
    sb.write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n",
    );
    sb.write("etc/group", "root:x:0:\nappgrp:x:1001:\nstaff:x:50:\n");
    sb.dockerfile(
        r#"# syntax=docker/dockerfile:1
FROM scratch
COPY etc/passwd etc/group /etc/
COPY busybox /bin/busybox
COPY --chown=app:staff app/ /srv/app/
COPY --chown=1234:5678 --chmod=0640 app/data.txt /srv/numeric
COPY --chmod=u+x,g-r app/data.txt /srv/symbolic
ARG VERSION=1.2
ENV APP_HOME=/srv/app \
    APP_VERSION=${VERSION}
LABEL org.example.version="$APP_VERSION" org.example.team=builds
EXPOSE 8080 9000-9001/udp
VOLUME ["/data", "/cache"]
USER app
WORKDIR $APP_HOME/work
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD ["/bin/busybox", "true"]
SHELL ["/bin/busybox", "sh", "-c"]
ENTRYPOINT ["/bin/busybox"]
CMD ["sh", "-c", "echo hi"]
ONBUILD COPY . /onbuild
MAINTAINER builds@example.com
"#,
    );
    let digest = sb.build_oci("out", &[]);
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );

    let image = format!("oci:{}:latest", sb.path("out").display());
    let manifest = skopeo_manifest(&image);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let cfg = skopeo_config(&image);
    let c = &cfg["config"];
    assert_eq!(cfg["os"], "linux");
    assert_eq!(cfg["author"], "builds@example.com");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    assert!(env.contains(&"APP_HOME=/srv/app"));
    assert!(env.contains(&"APP_VERSION=1.2"));
    assert!(
        !env.iter().any(|e| e.starts_with("VERSION=")),
        "ARG leaked into Env"
    );
    assert_eq!(c["Labels"]["org.example.version"], "1.2");
    assert_eq!(c["Labels"]["org.example.team"], "builds");
    let ports: Vec<&String> = c["ExposedPorts"]
        .as_object()
        .expect("ports")
        .keys()
        .collect();
    assert_eq!(ports, ["8080/tcp", "9000/udp", "9001/udp"]);
    let vols: Vec<&String> = c["Volumes"].as_object().expect("volumes").keys().collect();
    assert_eq!(vols, ["/cache", "/data"]);
    assert_eq!(c["User"], "app");
    assert_eq!(c["WorkingDir"], "/srv/app/work");
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/bin/busybox", "true"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000i64);
    assert_eq!(c["Healthcheck"]["Timeout"], 5_000_000_000i64);
    assert_eq!(c["Healthcheck"]["Retries"], 3);
    assert_eq!(c["Shell"], serde_json::json!(["/bin/busybox", "sh", "-c"]));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/busybox"]));
    assert_eq!(c["Cmd"], serde_json::json!(["sh", "-c", "echo hi"]));
    assert_eq!(c["OnBuild"], serde_json::json!(["COPY . /onbuild"]));
    let history = cfg["history"].as_array().expect("history");
    // One entry per instruction after FROM, ARG excepted (as BuildKit).
    assert_eq!(history.len(), 18, "{history:?}");
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(diff_ids.len(), layers.len());
    assert_eq!(
        history.iter().filter(|h| h["empty_layer"] != true).count(),
        layers.len()
    );

    let rootfs = umoci_unpack(&sb.path("out"), "latest", &sb.path("bundle"));
    assert_eq!(mode_of(&rootfs.join("bin/busybox")), 0o755);
    assert_eq!(owner_of(&rootfs.join("bin/busybox")), (0, 0));
    assert_eq!(
        std::fs::read(rootfs.join("bin/busybox")).expect("busybox"),
        std::fs::read(sb.context().join("busybox")).expect("busybox")
    );
    assert_eq!(owner_of(&rootfs.join("srv/app/run.sh")), (1000, 50));
    assert_eq!(mode_of(&rootfs.join("srv/app/run.sh")), 0o755);
    assert_eq!(mode_of(&rootfs.join("srv/app/data.txt")), 0o600);
    assert_eq!(owner_of(&rootfs.join("srv/numeric")), (1234, 5678));
    assert_eq!(mode_of(&rootfs.join("srv/numeric")), 0o640);
    // 0600 with u+x,g-r → 0700
    assert_eq!(mode_of(&rootfs.join("srv/symbolic")), 0o700);
    // WORKDIR creates the directory as the USER.
    assert_eq!(owner_of(&rootfs.join("srv/app/work")), (1000, 1001));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/group")).expect("group"),
        "root:x:0:\nappgrp:x:1001:\nstaff:x:50:\n"
    );
}

#[test]
fn docker_archive_loads_and_runs_in_podman() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.dockerfile(
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY <<EOF /etc/motd\nhello from a heredoc\nEOF\nCMD [\"/bin/busybox\", \"cat\", \"/etc/motd\"]\n",
    );
    let tag = format!("localhost/kiln-e2e-podman:{}", std::process::id());
    let dest = format!("type=docker,dest={}", sb.path("image.tar").display());
    let ctx = sb.context().to_string_lossy().to_string();
    let out = sb.kiln(&["build", "-t", &tag, "--output", &dest, &ctx]);
    assert_success(&out);

    let load = podman(&["load", "-i", &sb.path("image.tar").to_string_lossy()]);
    assert_success(&load);
    let run = podman_run(&["--network", "none", &tag]);
    let _ = podman(&["rmi", "-f", &tag]);
    assert_success(&run);
    assert_eq!(stdout(&run), "hello from a heredoc\n");
}

#[test]
fn oci_archive_local_and_tar_outputs() {
    let sb = Sandbox::new();
    sb.write_mode("bin/tool", "#!/bin/sh\n", 0o755);
    sb.write("share/doc.txt", "doc\n");
    sb.dockerfile("FROM scratch\nCOPY bin /usr/bin\nCOPY share/doc.txt /usr/share/doc.txt\n");
    let ctx = sb.context().to_string_lossy().to_string();
    let archive = sb.path("img.tar");
    let local = sb.path("rootfs");
    let fstar = sb.path("fs.tar");
    let out = sb.kiln(&[
        "build",
        "-t",
        "x:v1",
        "--output",
        &format!("type=oci,dest={}", archive.display()),
        "--output",
        &format!("type=local,dest={}", local.display()),
        "--output",
        &format!("type=tar,dest={}", fstar.display()),
        &ctx,
    ]);
    assert_success(&out);
    let cfg = skopeo_config(&format!("oci-archive:{}", archive.display()));
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        std::fs::read_to_string(local.join("usr/share/doc.txt")).expect("doc"),
        "doc\n"
    );
    assert_eq!(mode_of(&local.join("usr/bin/tool")), 0o755);
    let listing = run_tool("tar", &["-tvf", &fstar.to_string_lossy()]);
    assert!(listing.contains("usr/bin/tool"), "{listing}");
    assert!(listing.contains("usr/share/doc.txt"), "{listing}");
    assert!(listing.contains("-rwxr-xr-x"), "{listing}");
}

#[test]
fn reproducible_builds_give_identical_digests() {
    let a = Sandbox::new();
    let b = Sandbox::new();
    for sb in [&a, &b] {
        sb.write("a.txt", "same content\n");
        sb.write_mode("dir/run.sh", "#!/bin/sh\n", 0o755);
        sb.dockerfile("FROM scratch\nCOPY . /app\nWORKDIR /app/work\nENV X=1\n");
        // Different mtimes on the two sides: SOURCE_DATE_EPOCH clamps them.
        let t = if std::ptr::eq(sb, &a) {
            1_600_000_000
        } else {
            1_650_000_000
        };
        for f in ["a.txt", "dir/run.sh", "Dockerfile", "dir"] {
            let p = sb.context().join(f);
            let status = std::process::Command::new("touch")
                .args(["-h", "-d", &format!("@{t}"), &p.to_string_lossy()])
                .status()
                .expect("touch");
            assert!(status.success());
        }
    }
    let digest = |sb: &Sandbox| {
        let ctx = sb.context().to_string_lossy().to_string();
        let dest = format!("type=oci,dest={}", sb.path("out").display());
        let out = sb.kiln_env(
            &["build", "-t", "r:1", "--output", &dest, &ctx],
            &[("SOURCE_DATE_EPOCH", "1500000000")],
        );
        assert_success(&out);
        stdout(&out).trim().to_string()
    };
    let da = digest(&a);
    let db = digest(&b);
    assert_eq!(da, db, "same inputs, same digest");
    // And a rebuild in the same sandbox gives it again.
    assert_eq!(digest(&a), da);
    let cfg = skopeo_config(&format!("oci:{}:1", a.path("out").display()));
    assert_eq!(cfg["created"], "2017-07-14T02:40:00Z");
}

#[test]
fn multi_stage_target_skips_unneeded_stages_and_copies_from_stages() {
    let sb = Sandbox::new();
    sb.write("a.txt", "A\n");
    sb.write("b.txt", "B\n");
    sb.dockerfile(
        "FROM scratch AS base\nCOPY a.txt /a.txt\n\nFROM scratch AS broken\nCOPY does-not-exist /x\n\nFROM base AS mid\nCOPY b.txt /b.txt\n\nFROM scratch AS final\nCOPY --from=mid /b.txt /from-mid.txt\nCOPY --from=0 /a.txt /from-zero.txt\n",
    );
    // The default target (final) does not need `broken`, so it is not built.
    sb.build_oci("out", &[]);
    let rootfs = umoci_unpack(&sb.path("out"), "latest", &sb.path("bundle"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("from-mid.txt")).expect("mid"),
        "B\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("from-zero.txt")).expect("zero"),
        "A\n"
    );
    assert!(!rootfs.join("a.txt").exists());

    // --target mid builds base and mid only.
    sb.build_oci("out-mid", &["--target", "mid"]);
    let rootfs = umoci_unpack(&sb.path("out-mid"), "latest", &sb.path("bundle-mid"));
    assert!(rootfs.join("a.txt").is_file() && rootfs.join("b.txt").is_file());

    // --target broken fails, naming the missing source and its line.
    let ctx = sb.context().to_string_lossy().to_string();
    let out = sb.kiln(&[
        "build",
        "--target",
        "broken",
        "--output",
        "type=oci,dest=never",
        &ctx,
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:5:"), "{err}");
    assert!(err.contains("does-not-exist"), "{err}");
    assert!(!sb.path("never").exists(), "no output after a failed build");
}

#[test]
fn from_oci_layout_base_and_onbuild_triggers() {
    let sb = Sandbox::new();
    sb.write("base.txt", "base\n");
    sb.write("child.txt", "child\n");
    sb.write(
        "base.Dockerfile",
        "FROM scratch\nCOPY base.txt /base.txt\nENV FROM_BASE=yes\nCMD [\"base\"]\nONBUILD COPY child.txt /triggered.txt\n",
    );
    let ctx = sb.context().to_string_lossy().to_string();
    let base_layout = sb.path("base-layout");
    let out = sb.kiln(&[
        "build",
        "-f",
        &sb.context().join("base.Dockerfile").to_string_lossy(),
        "-t",
        "base:v1",
        "--output",
        &format!("type=oci,dest={}", base_layout.display()),
        &ctx,
    ]);
    assert_success(&out);
    sb.dockerfile(&format!(
        "FROM oci-layout://{}:v1\nENTRYPOINT [\"/bin/app\"]\n",
        base_layout.display()
    ));
    sb.build_oci("out", &[]);
    let image = format!("oci:{}:latest", sb.path("out").display());
    let cfg = skopeo_config(&image);
    // The trigger ran, the triggers are not inherited, ENTRYPOINT reset the base CMD.
    assert!(cfg["config"]["OnBuild"].is_null(), "{cfg}");
    assert!(cfg["config"]["Cmd"].is_null(), "{cfg}");
    assert!(cfg["config"]["Env"]
        .as_array()
        .is_some_and(|e| e.iter().any(|v| v == "FROM_BASE=yes")));
    let rootfs = umoci_unpack(&sb.path("out"), "latest", &sb.path("bundle"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("base.txt")).expect("base"),
        "base\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("triggered.txt")).expect("trigger"),
        "child\n"
    );
}

#[test]
fn dockerignore_excludes_with_exceptions() {
    let sb = Sandbox::new();
    sb.write("keep.txt", "k\n");
    sb.write("secret.env", "TOKEN=x\n");
    sb.write("logs/a.log", "a\n");
    sb.write("logs/important.log", "i\n");
    sb.write("src/deep/x.tmp", "t\n");
    sb.write("src/deep/y.rs", "y\n");
    sb.write(
        ".dockerignore",
        "*.env\nlogs\n!logs/important.log\n**/*.tmp\n",
    );
    sb.dockerfile("FROM scratch\nCOPY . /ctx\n");
    sb.build_oci("out", &[]);
    let rootfs = umoci_unpack(&sb.path("out"), "latest", &sb.path("bundle"));
    assert!(rootfs.join("ctx/keep.txt").is_file());
    assert!(!rootfs.join("ctx/secret.env").exists());
    assert!(!rootfs.join("ctx/logs/a.log").exists());
    assert!(rootfs.join("ctx/logs/important.log").is_file());
    assert!(!rootfs.join("ctx/src/deep/x.tmp").exists());
    assert!(rootfs.join("ctx/src/deep/y.rs").is_file());
}

#[test]
fn add_extracts_local_archives_in_every_compression() {
    let sb = Sandbox::new();
    let payload = sb.path("payload");
    std::fs::create_dir_all(payload.join("pkg")).expect("mkdir");
    std::fs::write(payload.join("pkg/file.txt"), "inside\n").expect("write");
    std::fs::create_dir_all(sb.context()).expect("ctx");
    let tar = sb.context().join("p.tar");
    run_tool(
        "tar",
        &[
            "-C",
            &payload.to_string_lossy(),
            "-cf",
            &tar.to_string_lossy(),
            "pkg",
        ],
    );
    let mut lines = String::from("FROM scratch\n");
    for (tool, ext) in [
        ("gzip", "gz"),
        ("bzip2", "bz2"),
        ("xz", "xz"),
        ("zstd", "zst"),
    ] {
        let out = std::process::Command::new(tool)
            .args(["-c", &tar.to_string_lossy()])
            .output()
            .expect("compressor");
        assert_success(&out);
        // A name that hides the format: detection is by content.
        std::fs::write(sb.context().join(format!("p-{ext}.bin")), &out.stdout).expect("write");
        lines.push_str(&format!("ADD p-{ext}.bin /x/{ext}/\n"));
    }
    lines.push_str("ADD p.tar /x/plain/\nADD --unpack=false p.tar /x/kept/\n");
    sb.dockerfile(&lines);
    sb.build_oci("out", &[]);
    let rootfs = umoci_unpack(&sb.path("out"), "latest", &sb.path("bundle"));
    for ext in ["gz", "bz2", "xz", "zst", "plain"] {
        assert_eq!(
            std::fs::read_to_string(rootfs.join(format!("x/{ext}/pkg/file.txt"))).expect(ext),
            "inside\n"
        );
    }
    assert!(rootfs.join("x/kept/p.tar").is_file());
    assert_eq!(
        rootfs.join("x/kept/p.tar").metadata().expect("kept").size(),
        tar.metadata().expect("tar").size()
    );
}

#[test]
fn bad_input_fails_with_location_and_writes_nothing() {
    let cases: &[(&str, &str)] = &[
        ("FROM scratch\nFROB x\n", "Dockerfile:2:1"),
        ("FROM scratch\nCOPY <<EOF /x\nno end\n", "Dockerfile:2:"),
        ("FROM scratch\nCOPY --bogus=1 a /b\n", "Dockerfile:2:"),
        ("FROM scratch\nCOPY missing.txt /x\n", "Dockerfile:2:1"),
        ("FROM scratch\nCOPY ../outside /x\n", "Dockerfile:2:1"),
        ("FROM scratch\nCOPY link-out /x\n", "Dockerfile:2:1"),
        ("COPY a /b\n", "Dockerfile:1:1"),
        ("FROM scratch\nEXPOSE 80/xyz\n", "Dockerfile:2:1"),
    ];
    for (text, location) in cases {
        let sb = Sandbox::new();
        sb.write("a", "a\n");
        std::os::unix::fs::symlink("/etc/passwd", sb.context().join("link-out")).expect("symlink");
        sb.dockerfile(text);
        let ctx = sb.context().to_string_lossy().to_string();
        let out = sb.kiln(&["build", "--output", "type=oci,dest=out", &ctx]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(
            err.contains(location),
            "{text}: expected {location} in:\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            !sb.path("out").exists(),
            "{text}: output written after a failure"
        );
    }
}
