//! The RUN sandbox end to end (`kiln build`, run as root as on CI hosts):
//! in `root` isolation (and `auto`, which picks it for root) a step has
//! Docker's default capabilities and a seccomp filter, cannot mount, and
//! cannot open a block device of the host, whether it makes the node in
//! the root or in `/dev`; `RUN --security=insecure` is refused without the
//! `security.insecure` entitlement and unconfined with it.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{assert_success, stderr, Sandbox};

const DOCKER_CAPS: &str = "00000000a80425fb";

/// glibc's `major()`/`minor()`.
fn major_minor(dev: u64) -> (u64, u64) {
    (
        ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff),
        (dev & 0xff) | ((dev >> 12) & !0xff),
    )
}

/// `major:minor` of a block device the host opens: the one holding `/`
/// when it opens, else the first of those the kernel lists that does.
/// None opening is a failure of the test, not a skip.
fn openable_host_block_device(dir: &Path) -> (u64, u64) {
    let root = major_minor(std::fs::metadata("/").expect("stat /").dev());
    let listed: Vec<(u64, u64)> = std::fs::read_dir("/sys/dev/block")
        .expect("/sys/dev/block")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| {
            let (a, b) = n.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    let node = dir.join("probe-disk");
    for (major, minor) in std::iter::once(root).chain(listed) {
        let _ = std::fs::remove_file(&node);
        let made = Command::new("mknod")
            .arg(&node)
            .args(["b", &major.to_string(), &minor.to_string()])
            .status()
            .expect("run mknod");
        assert!(made.success(), "mknod {major}:{minor} on the host");
        if std::fs::File::open(&node).is_ok() {
            let _ = std::fs::remove_file(&node);
            return (major, minor);
        }
    }
    panic!("no block device of this machine opens: nothing to test the sandbox against");
}

/// A busybox image whose last RUN is `run` (a shell line).
fn context(sb: &Sandbox, run: &str) {
    sb.busybox();
    sb.dockerfile(&format!(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n{run}\n"
    ));
}

fn build(sb: &Sandbox, extra: &[&str]) -> Output {
    let dest = format!("type=oci,dest={}", sb.path("out").display());
    let ctx = sb.context().to_string_lossy().to_string();
    let mut args = vec!["build", "--progress", "plain", "-o", &dest];
    args.extend_from_slice(extra);
    args.push(&ctx);
    sb.kiln(&args)
}

/// The value after `name` on the step's output lines (`#4 CapEff:\t…`;
/// the tab tells them from the echoed command).
fn field(log: &str, name: &str) -> String {
    let key = format!("{name}\t");
    log.lines()
        .find_map(|l| l.split_once(&key).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {name} in the build log:\n{log}"))
}

fn host_status(name: &str) -> String {
    field(
        &std::fs::read_to_string("/proc/self/status").expect("status"),
        name,
    )
}

#[test]
fn root_isolation_gives_dockers_capabilities_and_no_host_disk_or_mount() {
    let sb = Sandbox::new();
    let (major, minor) = openable_host_block_device(sb.dir.path());
    context(
        &sb,
        &format!(
            "RUN grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status \
             && mkdir -p /tmp && mknod /tmp/d b {major} {minor} && mknod /dev/d b {major} {minor} \
             && for d in /tmp/d /dev/d; do \
                  if head -c 512 $d > /dev/null 2>&1; then echo \"READ $d\"; else echo \"refused $d\"; fi; \
                done \
             && mkdir -p /mnt && if mount -t tmpfs t /mnt 2>/dev/null; then echo MOUNTED; else echo mount-refused; fi"
        ),
    );
    let out = build(&sb, &["--isolation", "root"]);
    assert_success(&out);
    let log = stderr(&out);
    assert_eq!(field(&log, "CapEff:"), DOCKER_CAPS, "{log}");
    assert_eq!(field(&log, "CapBnd:"), DOCKER_CAPS);
    assert_eq!(field(&log, "Seccomp:"), "2");
    assert!(log.contains("refused /tmp/d"), "{log}");
    assert!(log.contains("refused /dev/d"), "{log}");
    assert!(
        !log.contains("READ /"),
        "the host disk was readable:\n{log}"
    );
    assert!(log.contains("mount-refused"), "{log}");
}

#[test]
fn auto_as_root_picks_the_confined_root_sandbox() {
    let sb = Sandbox::new();
    context(&sb, "RUN grep -E '^(CapEff|Seccomp):' /proc/self/status");
    let out = build(&sb, &["--isolation", "auto"]);
    assert_success(&out);
    let log = stderr(&out);
    assert!(log.contains("RUN isolation: root ("), "{log}");
    assert_eq!(field(&log, "CapEff:"), DOCKER_CAPS, "{log}");
    assert_eq!(field(&log, "Seccomp:"), "2");
}

#[test]
fn userns_isolation_keeps_the_same_bounding_set() {
    let sb = Sandbox::new();
    context(&sb, "RUN grep -E '^(CapBnd|Seccomp):' /proc/self/status");
    let out = build(&sb, &["--isolation", "userns"]);
    assert_success(&out);
    let log = stderr(&out);
    assert_eq!(field(&log, "CapBnd:"), DOCKER_CAPS, "{log}");
    assert_eq!(field(&log, "Seccomp:"), "2");
}

#[test]
fn security_insecure_needs_the_entitlement() {
    let sb = Sandbox::new();
    context(
        &sb,
        "RUN --security=insecure grep -E '^(CapEff|Seccomp):' /proc/self/status",
    );
    let out = build(&sb, &["--isolation", "root"]);
    assert!(!out.status.success(), "built without the entitlement");
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:4:") && err.contains("--allow security.insecure"),
        "{err}"
    );
    assert!(!sb.path("out").exists(), "a refused build wrote its output");

    // With it: every capability kiln has, no filter.
    let out = build(
        &sb,
        &["--isolation", "root", "--allow", "security.insecure"],
    );
    assert_success(&out);
    let log = stderr(&out);
    assert_eq!(field(&log, "CapEff:"), host_status("CapBnd:"), "{log}");
    assert_eq!(field(&log, "Seccomp:"), "0");
}

#[test]
fn security_sandbox_is_accepted_and_unknown_entitlements_are_not() {
    let sb = Sandbox::new();
    context(&sb, "RUN --security=sandbox grep CapEff: /proc/self/status");
    let out = build(&sb, &["--isolation", "root"]);
    assert_success(&out);
    assert_eq!(field(&stderr(&out), "CapEff:"), DOCKER_CAPS);

    let out = build(&sb, &["--allow", "device"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--allow device"), "{}", stderr(&out));
    // buildx's network.host is accepted.
    let out = build(&sb, &["--isolation", "root", "--allow", "network.host"]);
    assert_success(&out);
}

#[test]
fn a_step_killed_by_sigsys_is_explained() {
    // A step that dies of SIGSYS (what the filter's architecture check does
    // to a 32-bit x86 program) gets a message that says why and what to do.
    let sb = Sandbox::new();
    context(&sb, "RUN kill -SYS $$");
    let out = build(&sb, &["--isolation", "root"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("exit code 159")
            && err.contains("SIGSYS")
            && err.contains("--allow security.insecure"),
        "{err}"
    );
}
