//! Real runs in `userns` isolation started by unprivileged users: `nobody`
//! (single-id map) and a user with /etc/subuid ranges (newuidmap).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{describe, tree, Step};
use kiln_sandbox::{upper_changes, IdMap, IdRange, Isolation};

const HELPER: &str = env!("CARGO_BIN_EXE_kiln-sandbox-helper");

/// Runs `spec` through the helper as `uid:gid`; returns (output, result json).
fn run_as(
    uid: u32,
    gid: u32,
    s: &Step,
    spec: &kiln_sandbox::RunSpec,
) -> (String, serde_json::Value) {
    let spec_file = s.tmp.path().join("spec.json");
    let result_file = s.tmp.path().join("result.json");
    fs::write(&spec_file, serde_json::to_vec(spec).unwrap()).unwrap();
    chown_tree(s.tmp.path(), uid, gid);
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .args([HELPER, "run"])
        .arg(&spec_file)
        .arg(&result_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helper failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = serde_json::from_slice(&fs::read(&result_file).unwrap()).unwrap();
    (stdout, result)
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

/// `Some(reason)` when the kernel does not let `uid` use user namespaces.
fn userns_unavailable(uid: u32, gid: u32) -> Option<String> {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .args([HELPER, "probe"])
        .current_dir("/")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    (!text.starts_with("userns:"))
        .then(|| format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
}

fn id_map(v: &serde_json::Value) -> IdMap {
    serde_json::from_value(v["id_map"].clone()).unwrap()
}

#[test]
fn nobody_runs_a_step_with_a_single_id_map() {
    if let Some(why) = userns_unavailable(65534, 65534) {
        eprintln!("SKIPPED: user namespaces unavailable for nobody: {why}");
        return;
    }
    let s = Step::new();
    chown_tree(s.tmp.path(), 65534, 65534);
    let lower_before = tree(&s.root());
    let mut spec = s.spec(
        "id -u; hostname; echo hi > /a && rm /etc/x && mkdir -p /d && touch /d/f && chmod 4755 /d/f \
         && ln /a /hl && ln -s /a /sl && mkfifo /p && rm -rf /dir && mkdir /dir && cat /proc/net/dev | wc -l",
    );
    spec.isolation = Isolation::Userns;
    spec.network = kiln_sandbox::Network::None;
    let (out, result) = run_as(65534, 65534, &s, &spec);
    assert_eq!(result["exit_code"], 0, "{out}");
    assert_eq!(result["isolation"], "userns");
    // Header lines plus lo only.
    assert_eq!(out, "0\nkilnbox\n3\n");
    let map = id_map(&result);
    assert_eq!(
        map.uids,
        [IdRange {
            inside: 0,
            outside: 65534,
            count: 1
        }]
    );
    let entries = upper_changes(&s.upper(), &map).unwrap();
    assert_eq!(
        describe(&entries),
        [
            "a file(3) 644 0:0",
            "d dir 755 0:0",
            "d/f file(0) 4755 0:0",
            "dir dir 755 0:0",
            "dir opaque 755 0:0",
            "etc dir 755 0:0",
            "etc/x whiteout 0 0:0",
            "hl hardlink->a 644 0:0",
            "p fifo 644 0:0",
            "sl symlink->/a 777 0:0",
        ]
    );
    // On disk the new files belong to the caller.
    assert_eq!(fs::metadata(s.upper().join("a")).unwrap().uid(), 65534);
    assert_eq!(tree(&s.root()), lower_before);
}

#[test]
fn nobody_cannot_switch_to_an_unmapped_uid() {
    if let Some(why) = userns_unavailable(65534, 65534) {
        eprintln!("SKIPPED: user namespaces unavailable for nobody: {why}");
        return;
    }
    let s = Step::new();
    let mut spec = s.spec("true");
    spec.isolation = Isolation::Userns;
    spec.uid = 1000;
    let spec_file = s.tmp.path().join("spec.json");
    fs::write(&spec_file, serde_json::to_vec(&spec).unwrap()).unwrap();
    chown_tree(s.tmp.path(), 65534, 65534);
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            HELPER,
            "run",
        ])
        .arg(&spec_file)
        .arg(s.tmp.path().join("r.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("uid 1000 is not mapped in the user namespace"),
        "{err}"
    );
}

/// A user with subordinate ids (created once; useradd assigns the ranges).
fn subid_user() -> Option<(u32, u32, u32)> {
    let name = "kiln-sbx-test";
    let have = |f: &str| {
        fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{name}:")))
    };
    if Command::new("id")
        .arg(name)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        let _ = Command::new("useradd")
            .args(["--no-create-home", name])
            .status();
    }
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    let (uid, gid) = (id("-u")?, id("-g")?);
    for f in ["/etc/subuid", "/etc/subgid"] {
        if !have(f) {
            let mut text = fs::read_to_string(f).unwrap_or_default();
            text.push_str(&format!("{name}:300000:65536\n"));
            fs::write(f, text).ok()?;
        }
    }
    let start = fs::read_to_string("/etc/subuid")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .and_then(|r| r.split(':').next()?.parse().ok())
        })?;
    Some((uid, gid, start))
}

#[test]
fn subordinate_ids_let_the_step_chown() {
    let Some((uid, gid, start)) = subid_user() else {
        eprintln!("SKIPPED: could not create a user with subordinate ids");
        return;
    };
    if let Some(why) = userns_unavailable(uid, gid) {
        eprintln!("SKIPPED: user namespaces unavailable for {uid}: {why}");
        return;
    }
    let s = Step::new();
    let mut spec = s.spec("echo x > /owned && chown 1000:33 /owned && id -G");
    spec.isolation = Isolation::Userns;
    spec.supplementary_gids = vec![0, 33];
    let (out, result) = run_as(uid, gid, &s, &spec);
    assert_eq!(result["exit_code"], 0, "{out}");
    assert_eq!(out, "0 33\n");
    let md = fs::metadata(s.upper().join("owned")).unwrap();
    assert_eq!((md.uid(), md.gid()), (start + 999, start + 32));
    let entries = upper_changes(&s.upper(), &id_map(&result)).unwrap();
    assert_eq!(describe(&entries), ["owned file(2) 644 1000:33"]);
}

/// The user namespace's root gets Docker's default set too (capabilities
/// there only reach the namespace's objects, but Docker drops them as well),
/// and the seccomp filter.
#[test]
fn userns_step_has_dockers_default_capabilities_and_a_seccomp_filter() {
    if let Some(why) = userns_unavailable(65534, 65534) {
        panic!("user namespaces unavailable for nobody: {why}");
    }
    let s = Step::new();
    let mut spec = s.spec(
        "cat /proc/self/status; mkdir -p /mnt; busybox mount -t tmpfs t /mnt 2>/dev/null && echo MOUNTED; true",
    );
    spec.isolation = Isolation::Userns;
    let (out, _) = run_as(65534, 65534, &s, &spec);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(field("CapEff:"), "00000000a80425fb", "{out}");
    assert_eq!(field("CapBnd:"), "00000000a80425fb");
    assert_eq!(field("Seccomp:"), "2");
    assert!(!out.contains("MOUNTED"), "{out}");
}
