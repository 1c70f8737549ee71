//! Real runs in `root` isolation (the tests run as root).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{describe, sandbox, tree, Step};
use kiln_sandbox::{merge_upper, upper_changes, IdMap, MountKind, Network, SandboxError};

const CHANGES: &str = "echo hi > /a && rm /etc/x && mkdir -p /d && touch /d/f && chmod 4755 /d/f \
                       && ln /a /hl && ln -s /a /sl && mkfifo /p";

#[test]
fn upper_changes_lists_exactly_what_the_step_changed() {
    let s = Step::new();
    let lower_before = tree(&s.root());
    let mut out = Vec::new();
    let r = sandbox().run(&s.spec(CHANGES), &mut out).unwrap();
    assert_eq!(r.exit_code, 0, "output: {}", String::from_utf8_lossy(&out));
    let entries = upper_changes(&s.upper(), &r.id_map).unwrap();
    assert_eq!(
        describe(&entries),
        [
            "a file(3) 644 0:0",
            "d dir 755 0:0",
            "d/f file(0) 4755 0:0",
            "etc dir 755 0:0",
            "etc/x whiteout 0 0:0",
            "hl hardlink->a 644 0:0",
            "p fifo 644 0:0",
            "sl symlink->/a 777 0:0",
        ]
    );
    // The file entry streams from the upper dir.
    let a = entries.first().unwrap();
    match &a.kind {
        kiln_image::EntryKind::File { source, .. } => {
            assert_eq!(fs::read(source).unwrap(), b"hi\n")
        }
        other => panic!("unexpected {other:?}"),
    }
    // The lower dir is untouched and nothing of the sandbox's mounts leaked.
    assert_eq!(tree(&s.root()), lower_before);
    for stub in [
        "proc",
        "dev",
        "sys",
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
    ] {
        assert!(
            !s.upper().join(stub).exists(),
            "{stub} leaked into the upper dir"
        );
    }
}

#[test]
fn empty_step_leaves_an_empty_upper_dir() {
    let s = Step::new();
    let r = sandbox()
        .run(
            &s.spec("cat /etc/hosts /etc/resolv.conf > /dev/null"),
            &mut Vec::new(),
        )
        .unwrap();
    assert_eq!(r.exit_code, 0);
    assert_eq!(fs::read_dir(s.upper()).unwrap().count(), 0);
    assert!(upper_changes(&s.upper(), &r.id_map).unwrap().is_empty());
}

#[test]
fn rm_rf_then_mkdir_gives_an_opaque_dir() {
    let s = Step::new();
    let r = sandbox()
        .run(
            &s.spec("rm -rf /dir && mkdir /dir && echo n > /dir/new"),
            &mut Vec::new(),
        )
        .unwrap();
    assert_eq!(r.exit_code, 0);
    assert_eq!(
        describe(&upper_changes(&s.upper(), &IdMap::identity()).unwrap()),
        [
            "dir dir 755 0:0",
            "dir opaque 755 0:0",
            "dir/new file(2) 644 0:0"
        ]
    );
    merge_upper(&s.upper(), &s.root()).unwrap();
    let names: Vec<_> = fs::read_dir(s.root().join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["new"]);
    // No overlay xattr followed the dir into the rootfs.
    assert!(xattr_names(&s.root().join("dir")).is_empty());
}

fn xattr_names(p: &std::path::Path) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(p, &mut buf).unwrap();
    buf.truncate(n);
    buf.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[test]
fn exit_code_and_tail() {
    let s = Step::new();
    let script = "for i in $(seq 1 30); do echo line $i; done; echo oops >&2; exit 3";
    let mut spec = s.spec(script);
    spec.argv = vec![
        "/bin/busybox".into(),
        "sh".into(),
        "-c".into(),
        script.into(),
    ];
    let mut out = Vec::new();
    let r = sandbox().run(&spec, &mut out).unwrap();
    assert_eq!(r.exit_code, 3);
    let all: Vec<String> = (1..=30)
        .map(|i| format!("line {i}"))
        .chain(["oops".into()])
        .collect();
    assert_eq!(String::from_utf8(out).unwrap(), all.join("\n") + "\n");
    assert_eq!(r.tail, all[all.len() - 20..].join("\n"));
}

#[test]
fn killed_by_signal_is_128_plus_signal() {
    let s = Step::new();
    let r = sandbox()
        .run(&s.spec("kill -9 $$"), &mut Vec::new())
        .unwrap();
    assert_eq!(r.exit_code, 137);
}

#[test]
fn identity_cwd_env_and_hostname_inside() {
    let s = Step::new();
    let mut spec = s.spec("");
    spec.argv = vec![
        "busybox".into(),
        "sh".into(),
        "-c".into(),
        "id -u; id -g; id -G; pwd; hostname; cat /etc/hostname; umask".into(),
    ];
    spec.uid = 1000;
    spec.gid = 1001;
    spec.supplementary_gids = vec![1001, 27];
    spec.cwd = "/work".into();
    spec.hostname = "steps-host".into();
    let mut out = Vec::new();
    let r = sandbox().run(&spec, &mut out).unwrap();
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&out));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "1000\n1001\n1001 27\n/work\nsteps-host\nsteps-host\n0022\n"
    );

    // Exactly the given environment reaches the process.
    let mut spec = s.spec("");
    spec.argv = vec!["/bin/env".into()];
    spec.env = vec!["PATH=/bin".into(), "FOO=bar baz".into(), "EMPTY=".into()];
    let mut out = Vec::new();
    sandbox().run(&spec, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "PATH=/bin\nFOO=bar baz\nEMPTY=\n"
    );
}

#[test]
fn missing_executable_and_cwd_are_setup_errors() {
    let s = Step::new();
    let mut spec = s.spec("");
    spec.argv = vec!["nonexistent-tool".into()];
    let e = sandbox().run(&spec, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, SandboxError::Setup(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("nonexistent-tool: executable file not found in $PATH"),
        "{e}"
    );

    let mut spec = s.spec("true");
    spec.cwd = "/no/such/dir".into();
    let e = sandbox().run(&spec, &mut Vec::new()).unwrap_err();
    assert!(
        e.to_string()
            .contains("chdir to working directory /no/such/dir"),
        "{e}"
    );
}

fn interfaces(s: &Step, network: Network) -> Vec<String> {
    let mut spec = s.spec("cat /proc/net/dev");
    spec.network = network;
    let mut out = Vec::new();
    let r = sandbox().run(&spec, &mut out).unwrap();
    assert_eq!(r.exit_code, 0);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
        .collect()
}

#[test]
fn network_none_has_only_loopback_up() {
    let s = Step::new();
    assert_eq!(interfaces(&s, Network::None), ["lo"]);
    let mut spec = s.spec("cat /sys/class/net/lo/operstate /sys/class/net/lo/flags");
    spec.network = Network::None;
    let mut out = Vec::new();
    sandbox().run(&spec, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let flags = text.lines().nth(1).unwrap();
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "IFF_UP not set on lo: {text}");
    // The default network is the host's.
    let host: Vec<String> = fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
        .collect();
    assert_eq!(interfaces(&s, Network::Default), host);
}

#[test]
fn pid_namespace_is_fresh_and_killed_at_the_end() {
    let s = Step::new();
    // A background process outlives the shell; the run must still end.
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    let r = sandbox()
        .run(
            &s.spec("sleep 1000 & echo $$; ls /proc | grep -c '^[0-9]'"),
            &mut out,
        )
        .unwrap();
    assert_eq!(r.exit_code, 0);
    assert!(start.elapsed().as_secs() < 60);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The shell is PID 2 (PID 1 is the init); init, sh, sleep, ls, grep.
    assert_eq!(lines.first(), Some(&"2"), "{text}");
}

#[test]
fn bind_and_tmpfs_mounts_leave_no_trace() {
    let s = Step::new();
    let src = s.tmp.path().join("ctx");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("in.txt"), "from the context\n").unwrap();
    let mut spec = s.spec(
        "cat /mnt/ctx/in.txt && ! touch /mnt/ctx/w 2>/dev/null && echo t > /cache/t && cat /cache/t \
         && grep ' /cache ' /proc/mounts | cut -d' ' -f3",
    );
    spec.mounts = vec![
        kiln_sandbox::Mount {
            target: "/mnt/ctx".into(),
            kind: MountKind::Bind {
                source: src.clone(),
                readonly: true,
            },
        },
        kiln_sandbox::Mount {
            target: "/cache".into(),
            kind: MountKind::Tmpfs {
                size: Some(1 << 20),
            },
        },
    ];
    let mut out = Vec::new();
    let r = sandbox().run(&spec, &mut out).unwrap();
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&out));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "from the context\nt\ntmpfs\n"
    );
    assert_eq!(
        fs::read_dir(s.upper()).unwrap().count(),
        0,
        "mount points leaked"
    );
    assert_eq!(fs::read_dir(&src).unwrap().count(), 1);
}

#[test]
fn merge_upper_makes_the_rootfs_the_merged_view() {
    let s = Step::new();
    // List the merged view from inside (mount points excluded).
    let list = "find / -xdev ! -path /proc ! -path /sys ! -path /dev ! -path '/etc/h*' \
                ! -path /etc/resolv.conf | sort | while read f; do stat -c '%n %f %u:%g %s' \"$f\"; \
                [ -f \"$f\" ] && [ ! -p \"$f\" ] && md5sum \"$f\" && stat -c 'links %h' \"$f\"; true; done";
    let script = format!("{CHANGES} && chown 5:6 /dir/a && mv /dir/b /moved && {list}");
    let mut during = Vec::new();
    let r = sandbox().run(&s.spec(&script), &mut during).unwrap();
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&during));
    merge_upper(&s.upper(), &s.root()).unwrap();

    let root = s.root();
    assert_eq!(fs::read(root.join("a")).unwrap(), b"hi\n");
    assert!(!root.join("etc/x").exists());
    assert_eq!(
        fs::metadata(root.join("hl")).unwrap().ino(),
        fs::metadata(root.join("a")).unwrap().ino()
    );
    assert_eq!(
        fs::metadata(root.join("d/f")).unwrap().permissions().mode() & 0o7777,
        0o4755
    );
    assert_eq!(fs::read_link(root.join("sl")).unwrap().to_str(), Some("/a"));
    assert!(fs::symlink_metadata(root.join("p"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    assert_eq!(fs::metadata(root.join("dir/a")).unwrap().uid(), 5);
    assert!(!root.join("dir/b").exists());
    assert_eq!(fs::read(root.join("moved")).unwrap(), b"b");
    for stub in ["proc", "dev", "sys", "etc/hosts"] {
        assert!(!root.join(stub).exists(), "{stub} reached the rootfs");
    }

    // The next step sees exactly what the previous one left.
    s.fresh_upper();
    let mut after = Vec::new();
    let r = sandbox().run(&s.spec(list), &mut after).unwrap();
    assert_eq!(r.exit_code, 0);
    let during = String::from_utf8(during).unwrap();
    let after = String::from_utf8(after).unwrap();
    assert!(after.lines().count() > 20, "{after}");
    assert_eq!(during, after);
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

// ---- root mode as a sandbox: capabilities, seccomp, masked paths, nodev ----

/// A block device node in `dir` (returned) that the host opens: the
/// device holding `/` (what an escape would read) when it opens, else the
/// first that does of those the kernel lists. A machine where none opens
/// cannot run these tests: that is a failure, not a skip.
fn openable_host_block_device(dir: &std::path::Path) -> (std::path::PathBuf, u64, u64) {
    let dev = fs::metadata("/").unwrap().dev();
    let root = (rustix::fs::major(dev) as u64, rustix::fs::minor(dev) as u64);
    let listed = fs::read_dir("/sys/dev/block")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| {
            let (a, b) = n.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        });
    let node = dir.join("hostdisk");
    for (major, minor) in std::iter::once(root).chain(listed) {
        let _ = fs::remove_file(&node);
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(major, minor),
        )
        .unwrap();
        if fs::File::open(&node).is_ok() {
            return (node, major, minor);
        }
    }
    panic!("no block device of this machine opens: nothing to test the sandbox against");
}

/// The `Cap*`, `Seccomp` and `NoNewPrivs` lines of /proc/self/status as
/// seen by a step, by name.
fn status_fields(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn run_ok(spec: &kiln_sandbox::RunSpec) -> String {
    let mut out = Vec::new();
    let r = sandbox().run(spec, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(r.exit_code, 0, "{text}");
    text
}

#[test]
fn run_has_dockers_default_capabilities_and_a_seccomp_filter() {
    let s = Step::new();
    let f = status_fields(&run_ok(&s.spec("cat /proc/self/status")));
    assert_eq!(f["CapEff"], "00000000a80425fb", "{f:?}");
    assert_eq!(f["CapPrm"], "00000000a80425fb");
    assert_eq!(f["CapBnd"], "00000000a80425fb");
    assert_eq!(f["CapInh"], "0000000000000000");
    assert_eq!(f["CapAmb"], "0000000000000000");
    assert_eq!(f["Seccomp"], "2", "no seccomp filter: {f:?}");
    assert_eq!(
        kiln_sandbox::DEFAULT_CAPS.bits(),
        0xa804_25fb,
        "Docker's default set"
    );

    // Another user keeps the bounding set and nothing effective.
    let mut spec = s.spec("cat /proc/self/status");
    spec.uid = 1000;
    spec.gid = 1000;
    let f = status_fields(&run_ok(&spec));
    assert_eq!(f["CapEff"], "0000000000000000", "{f:?}");
    assert_eq!(f["CapPrm"], "0000000000000000");
    assert_eq!(f["CapBnd"], "00000000a80425fb");
}

#[test]
fn run_cannot_mount_unshare_or_load_keys() {
    let s = Step::new();
    // Each refused call prints its name; "ok" only when all were refused.
    let script = "mkdir -p /mnt; \
        busybox mount -t tmpfs t /mnt 2>/dev/null && echo MOUNTED; \
        busybox unshare -m true 2>/dev/null && echo UNSHARED; \
        busybox unshare -U true 2>/dev/null && echo USERNS; \
        echo ok";
    assert_eq!(run_ok(&s.spec(script)), "ok\n");
}

#[test]
fn host_block_device_cannot_be_opened_from_a_step() {
    let s = Step::new();
    // The test can fail: on the host the node opens.
    let (node, major, minor) = openable_host_block_device(s.tmp.path());
    // A node shipped in the image (lower dir) and nodes the step makes in
    // the root and in /dev: made (CAP_MKNOD, as under Docker), never opened.
    fs::rename(&node, s.root().join("layerdisk")).unwrap();
    let script = format!(
        "busybox mknod /tmp-disk b {major} {minor} && busybox mknod /dev/disk b {major} {minor} \
         && for d in /layerdisk /tmp-disk /dev/disk; do \
              if busybox head -c 512 $d > /dev/null 2>&1; then echo \"$d READ\"; \
              else echo \"$d refused\"; fi; \
            done"
    );
    assert_eq!(
        run_ok(&s.spec(&script)),
        "/layerdisk refused\n/tmp-disk refused\n/dev/disk refused\n"
    );
    // kiln's own /dev nodes still work.
    assert_eq!(
        run_ok(&s.spec("busybox head -c 4 /dev/zero | busybox wc -c; echo x > /dev/null")),
        "4\n"
    );
}

#[test]
fn proc_and_sys_paths_are_masked_or_read_only() {
    let s = Step::new();
    let text = run_ok(&s.spec("cat /proc/self/mountinfo; echo ---; cat /proc/keys /proc/timer_list | busybox wc -c; busybox ls /sys/firmware | busybox wc -l"));
    let (mountinfo, rest) = text.split_once("---\n").unwrap();
    assert_eq!(rest, "0\n0\n", "masked files and dirs are empty");
    // mount point -> options of the topmost mount there.
    let mut at = std::collections::BTreeMap::new();
    for l in mountinfo.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        at.insert(f[4].to_string(), f[5].to_string());
    }
    for p in kiln_sandbox::MASKED_PATHS {
        if fs::symlink_metadata(p).is_ok() {
            assert!(at.contains_key(p), "{p} is not masked:\n{mountinfo}");
        }
    }
    for p in kiln_sandbox::READONLY_PATHS {
        if fs::symlink_metadata(p).is_ok() {
            let opts = at
                .get(p)
                .unwrap_or_else(|| panic!("{p}: no mount\n{mountinfo}"));
            assert!(opts.split(',').any(|o| o == "ro"), "{p} is {opts}");
        }
    }
    // The root is nodev, and so is /dev itself.
    for p in ["/", "/dev", "/etc/hosts"] {
        let opts = &at[p];
        assert!(opts.split(',').any(|o| o == "nodev"), "{p} is {opts}");
    }
}

#[test]
fn insecure_runs_with_every_capability_and_no_filter() {
    let s = Step::new();
    let mut spec = s.spec(
        "cat /proc/self/status; mkdir -p /mnt; busybox mount -t tmpfs t /mnt && echo MOUNTED",
    );
    spec.security = kiln_sandbox::Security::Insecure;
    let text = run_ok(&spec);
    let f = status_fields(&text);
    let host = status_fields(&fs::read_to_string("/proc/self/status").unwrap());
    assert_eq!(f["CapEff"], host["CapBnd"], "{f:?}");
    assert_eq!(f["Seccomp"], "0");
    assert!(text.ends_with("MOUNTED\n"), "{text}");
}

#[test]
fn auto_picks_root_when_running_as_root() {
    let (isolation, why) = sandbox().probe().unwrap();
    assert_eq!(isolation, kiln_sandbox::Isolation::Root);
    assert!(why.contains("Docker's default capabilities"), "{why}");
}
