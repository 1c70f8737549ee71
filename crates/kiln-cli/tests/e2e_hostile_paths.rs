//! Hostile paths end to end through the kiln binary: RUN escapes and base
//! images with absolute, `..` and /var/run links (finding 2 of the security
//! review), COPY destinations, mount targets, mount sources and cache ids
//! that lead through symlinks in the image, sources read from another
//! image through its symlinks, and the legitimate shapes that must keep
//! working.
//!
//! Every case keeps a host canary in /tmp with known content, mode, owner
//! and mtime and asserts it is unchanged; the build either fails with an
//! error or holds the shape inside the image. Each case runs under
//! `--isolation userns` and `--isolation root` (`isolation_matrix!`). The
//! raw tars, layouts, canaries and builds are in `common/hostile.rs`.
//!
//! Real components only: the kiln binary, the CNCF distribution registry,
//! skopeo, umoci, busybox, gzip and python3.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::hostile::*;
use common::*;

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
isolation_matrix!(
    finding2_workdir_through_image_symlink_run_escape => finding2_run_escape
);

fn finding2_base_absolute(isolation: &str) {
    let c = HostCanary::new("f2-app");
    let reg = Registry::plain();
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
isolation_matrix!(
    finding2_workdir_through_image_symlink_absolute => finding2_base_absolute
);

fn finding2_base_dotdot(isolation: &str) {
    let c = HostCanary::new("f2-rel");
    let reg = Registry::plain();
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
isolation_matrix!(
    finding2_workdir_through_image_symlink_dotdot => finding2_base_dotdot
);

/// `/var/run -> /run` is legitimate, and a WORKDIR below it must land in
/// the image's /run, not the host's.
fn finding2_var_run(isolation: &str) {
    let host = MustNotExist::in_dir("/run", "f2-varrun");
    let name = host.name();
    let reg = Registry::plain();
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
isolation_matrix!(
    finding2_workdir_through_image_symlink_var_run => finding2_var_run
);

// ---------------------------------------------------------------------------
// COPY destinations through symlinks in the image.

fn copy_through_image_symlink(isolation: &str) {
    let c = HostCanary::new("copy-dest");
    let reg = Registry::plain();
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
isolation_matrix!(copy_destination_through_image_symlink => copy_through_image_symlink);

// ---------------------------------------------------------------------------
// RUN --mount sources, targets and ids through symlinks.

fn mount_targets_through_symlinks(isolation: &str) {
    let c = HostCanary::new("mount-target");
    let reg = Registry::plain();
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
isolation_matrix!(mount_targets_through_image_symlinks => mount_targets_through_symlinks);

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
isolation_matrix!(mount_sources_through_context_symlinks => mount_sources_through_symlinks);

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
isolation_matrix!(cache_ids_that_climb_stay_in_the_cache => cache_ids_that_climb);

// ---------------------------------------------------------------------------
// Legitimate shapes keep building end to end.

fn legit_shapes(isolation: &str) {
    let reg = Registry::plain();
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
isolation_matrix!(legit_symlink_shapes_keep_building => legit_shapes);

// ---------------------------------------------------------------------------
// Sources read from another image through its symlinks.

fn sources_through_image_symlinks(isolation: &str) {
    let c = HostCanary::new("from-source");
    let reg = Registry::plain();
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
isolation_matrix!(sources_through_another_image_s_symlinks => sources_through_image_symlinks);
