//! In-place mode on temp dirs: the stat walk's layer entries for every kind
//! of change, ignore paths, wiping a root, and running commands directly.
//! Nothing here touches the real `/`.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

mod common;

use common::describe;
use kiln_image::EntryKind;
use kiln_sandbox::{
    changes, run_direct, scan, wipe_root, Baseline, DirectSpec, IgnoreSet, SandboxError,
};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Our own `uid:gid`, which every file the tests make carries.
fn me() -> String {
    format!(
        "{}:{}",
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    )
}

fn mkdir(p: &Path, mode: u32) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn write(p: &Path, content: &str, mode: u32) {
    fs::write(p, content).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn ignore(root: &Path) -> IgnoreSet {
    IgnoreSet::new(root, Path::new("/kiln"), &[])
}

/// A small base image: etc, usr/bin, var/log with contents.
fn base() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::set_permissions(r, fs::Permissions::from_mode(0o755)).unwrap();
    mkdir(&r.join("etc"), 0o755);
    write(&r.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n", 0o644);
    write(&r.join("etc/x"), "x", 0o644);
    mkdir(&r.join("usr/bin"), 0o755);
    write(&r.join("usr/bin/tool"), "#!/bin/sh\n", 0o755);
    mkdir(&r.join("var/log/apt"), 0o755);
    write(&r.join("var/log/apt/history.log"), "h", 0o640);
    write(&r.join("var/log/dpkg.log"), "d", 0o640);
    t
}

/// `changes` against `before`, then checks that a second walk right after
/// finds nothing more (the returned baseline is the new state).
fn step(root: &Path, before: &Baseline, ign: &IgnoreSet) -> Vec<String> {
    let (entries, after) = changes(root, before, ign).unwrap();
    let (again, _) = changes(root, &after, ign).unwrap();
    assert_eq!(
        describe(&again),
        Vec::<String>::new(),
        "changes reported twice"
    );
    describe(&entries)
}

#[test]
fn unchanged_tree_has_no_changes() {
    let t = base();
    let ign = ignore(t.path());
    let b = scan(t.path(), &ign).unwrap();
    assert_eq!(b.len(), 11);
    let (entries, after) = changes(t.path(), &b, &ign).unwrap();
    assert!(entries.is_empty(), "{:?}", describe(&entries));
    assert_eq!(after.len(), 11);
    let rec = after.get(Path::new("usr/bin/tool")).unwrap();
    assert_eq!(rec.mode, 0o755);
    assert_eq!(rec.size, 10);
    assert_eq!(rec.kind, kiln_sandbox::FileKind::File);
}

#[test]
fn create_modify_delete() {
    let t = base();
    let r = t.path();
    let ign = ignore(r);
    let b = scan(r, &ign).unwrap();
    write(
        &r.join("etc/passwd"),
        "root:x:0:0::/root:/bin/bash\n",
        0o644,
    );
    write(&r.join("etc/new"), "new", 0o600);
    fs::remove_file(r.join("etc/x")).unwrap();
    fs::remove_dir_all(r.join("var/log")).unwrap();
    mkdir(&r.join("opt/app/lib"), 0o750);
    write(&r.join("opt/app/lib/a.so"), "elf", 0o755);
    let me = me();
    assert_eq!(
        step(r, &b, &ign),
        [
            format!("etc dir 755 {me}"),
            format!("etc/new file(3) 600 {me}"),
            format!("etc/passwd file(28) 644 {me}"),
            "etc/x whiteout 0 0:0".into(),
            format!("opt dir 755 {me}"),
            format!("opt/app dir 755 {me}"),
            format!("opt/app/lib dir 750 {me}"),
            format!("opt/app/lib/a.so file(3) 755 {me}"),
            format!("var dir 755 {me}"),
            // One whiteout for the whole deleted tree.
            "var/log whiteout 0 0:0".into(),
        ]
    );
}

#[test]
fn changed_file_streams_from_the_root_and_keeps_whole_second_mtime() {
    let t = base();
    let r = t.path();
    let ign = ignore(r);
    let b = scan(r, &ign).unwrap();
    write(&r.join("usr/bin/tool"), "#!/bin/sh\necho\n", 0o755);
    set_mtime(&r.join("usr/bin/tool"), 1_700_000_000, 999_999_999);
    let (entries, _) = changes(r, &b, &ign).unwrap();
    let tool = entries.iter().find(|e| e.path == "usr/bin/tool").unwrap();
    assert_eq!(tool.mtime, 1_700_000_000);
    match &tool.kind {
        EntryKind::File { source, size } => {
            assert_eq!(source, &r.join("usr/bin/tool"));
            assert_eq!(*size, 15);
            assert_eq!(fs::read(source).unwrap(), b"#!/bin/sh\necho\n");
        }
        other => panic!("not a file: {other:?}"),
    }
}

#[test]
fn dir_replaced_by_file_and_file_by_dir() {
    let t = base();
    let r = t.path();
    let ign = ignore(r);
    let b = scan(r, &ign).unwrap();
    fs::remove_dir_all(r.join("var/log")).unwrap();
    write(&r.join("var/log"), "now a file", 0o644);
    fs::remove_file(r.join("etc/x")).unwrap();
    mkdir(&r.join("etc/x"), 0o700);
    write(&r.join("etc/x/inside"), "i", 0o644);
    let me = me();
    assert_eq!(
        step(r, &b, &ign),
        [
            format!("etc dir 755 {me}"),
            format!("etc/x dir 700 {me}"),
            format!("etc/x opaque 700 {me}"),
            format!("etc/x/inside file(1) 644 {me}"),
            format!("var dir 755 {me}"),
            format!("var/log file(10) 644 {me}"),
        ]
    );
}

#[test]
fn dir_removed_and_made_again_is_opaque() {
    let t = base();
    let r = t.path();
    let ign = ignore(r);
    let b = scan(r, &ign).unwrap();
    // Keep the old directory's inode alive so its number cannot be reused
    // (inode reuse is caught by the birth time where the filesystem has
    // one; this test must not depend on that).
    let old = fs::File::open(r.join("var/log")).unwrap();
    fs::remove_dir_all(r.join("var/log")).unwrap();
    mkdir(&r.join("var/log"), 0o755);
    write(&r.join("var/log/dpkg.log"), "d", 0o640);
    let me = me();
    assert_eq!(
        step(r, &b, &ign),
        [
            format!("var dir 755 {me}"),
            format!("var/log dir 755 {me}"),
            format!("var/log opaque 755 {me}"),
            format!("var/log/dpkg.log file(1) 640 {me}"),
        ]
    );
    drop(old);
}

#[test]
fn chmod_only() {
    let t = base();
    let r = t.path();
    let ign = ignore(r);
    let b = scan(r, &ign).unwrap();
    fs::set_permissions(r.join("etc/passwd"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(r.join("usr/bin"), fs::Permissions::from_mode(0o700)).unwrap();
    let me = me();
    assert_eq!(
        step(r, &b, &ign),
        [
            format!("etc dir 755 {me}"),
            format!("etc/passwd file(26) 600 {me}"),
            format!("usr dir 755 {me}"),
            format!("usr/bin dir 700 {me}"),
        ]
    );
}

#[test]
fn chown_only() {
    if !is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let t = base();
    let r = t.path();
    let ign = ignore(r);
    let b = scan(r, &ign).unwrap();
    std::os::unix::fs::lchown(r.join("etc/passwd"), Some(1000), Some(1001)).unwrap();
    std::os::unix::fs::lchown(r.join("var/log/apt"), None, Some(4)).unwrap();
    assert_eq!(
        step(r, &b, &ign),
        [
            "etc dir 755 0:0",
            "etc/passwd file(26) 644 1000:1001",
            "var dir 755 0:0",
            "var/log dir 755 0:0",
            "var/log/apt dir 755 0:4",
        ]
    );
}

#[test]
fn symlink_retarget() {
    let t = base();
    let r = t.path();
    symlink("passwd", r.join("etc/link")).unwrap();
    symlink("/usr/bin/tool", r.join("etc/same")).unwrap();
    let ign = ignore(r);
    let b = scan(r, &ign).unwrap();
    assert_eq!(
        b.get(Path::new("etc/link")).unwrap().symlink_target,
        Some(PathBuf::from("passwd"))
    );
    fs::remove_file(r.join("etc/link")).unwrap();
    symlink("x", r.join("etc/link")).unwrap();
    let me = me();
    assert_eq!(
        step(r, &b, &ign),
        [
            format!("etc dir 755 {me}"),
            format!("etc/link symlink->x 777 {me}"),
        ]
    );
}

#[test]
fn hardlinks_between_new_files_stay_hardlinks() {
    let t = base();
    let r = t.path();
    let ign = ignore(r);
    let b = scan(r, &ign).unwrap();
    write(&r.join("etc/new1"), "shared", 0o644);
    fs::hard_link(r.join("etc/new1"), r.join("etc/new2")).unwrap();
    mkdir(&r.join("opt"), 0o755);
    fs::hard_link(r.join("etc/new1"), r.join("opt/new3")).unwrap();
    // A new name for an unchanged file: only the new name, as a plain file.
    fs::hard_link(r.join("usr/bin/tool"), r.join("usr/bin/tool2")).unwrap();
    let me = me();
    assert_eq!(
        step(r, &b, &ign),
        [
            format!("etc dir 755 {me}"),
            format!("etc/new1 file(6) 644 {me}"),
            format!("etc/new2 hardlink->etc/new1 644 {me}"),
            format!("opt dir 755 {me}"),
            format!("opt/new3 hardlink->etc/new1 644 {me}"),
            format!("usr dir 755 {me}"),
            format!("usr/bin dir 755 {me}"),
            format!("usr/bin/tool2 file(10) 755 {me}"),
        ]
    );
}

#[test]
fn setuid_fifo_and_xattrs() {
    let t = base();
    let r = t.path();
    let ign = ignore(r);
    let b = scan(r, &ign).unwrap();
    write(&r.join("usr/bin/su"), "su", 0o4755);
    fs::set_permissions(r.join("usr/bin/tool"), fs::Permissions::from_mode(0o2755)).unwrap();
    nix::unistd::mkfifo(
        &r.join("etc/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // An xattr change alone moves only the ctime: still a change.
    let xattr_ok = rustix::fs::lsetxattr(
        r.join("etc/passwd").as_path(),
        "user.kiln",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    let (entries, _) = changes(r, &b, &ign).unwrap();
    let me = me();
    let mut want = vec![
        format!("etc dir 755 {me}"),
        format!("etc/fifo fifo 600 {me}"),
    ];
    if xattr_ok {
        want.push(format!("etc/passwd file(26) 644 {me}"));
    }
    want.extend([
        format!("usr dir 755 {me}"),
        format!("usr/bin dir 755 {me}"),
        format!("usr/bin/su file(2) 4755 {me}"),
        format!("usr/bin/tool file(10) 2755 {me}"),
    ]);
    assert_eq!(describe(&entries), want);
    if xattr_ok {
        let passwd = entries.iter().find(|e| e.path == "etc/passwd").unwrap();
        assert_eq!(passwd.xattrs, [("user.kiln".to_string(), b"v".to_vec())]);
    }
}

#[test]
fn file_capabilities_and_devices_when_root() {
    if !is_root() {
        eprintln!("skipped: mknod and security.capability need root");
        return;
    }
    let t = base();
    let r = t.path();
    let ign = ignore(r);
    let b = scan(r, &ign).unwrap();
    // cap_net_bind_service+ep, VFS_CAP_REVISION_2.
    let cap: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    rustix::fs::lsetxattr(
        r.join("usr/bin/tool").as_path(),
        "security.capability",
        &cap,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &r.join("etc/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    fs::set_permissions(r.join("etc/null"), fs::Permissions::from_mode(0o666)).unwrap();
    let (entries, _) = changes(r, &b, &ign).unwrap();
    assert_eq!(
        describe(&entries),
        [
            "etc dir 755 0:0",
            "etc/null char(1,3) 666 0:0",
            "usr dir 755 0:0",
            "usr/bin dir 755 0:0",
            "usr/bin/tool file(10) 755 0:0",
        ]
    );
    let tool = entries.iter().find(|e| e.path == "usr/bin/tool").unwrap();
    assert_eq!(
        tool.xattrs,
        [("security.capability".to_string(), cap.to_vec())]
    );
}

#[test]
fn racy_rewrite_with_same_size_and_mtime_is_found() {
    let t = base();
    let r = t.path();
    // Let the base's own files age out of the racy window first.
    std::thread::sleep(std::time::Duration::from_nanos(
        2 * kiln_sandbox::RACY_WINDOW_NS as u64,
    ));
    let f = r.join("etc/racy");
    write(&f, "aaaa", 0o644);
    set_mtime(&f, 1_700_000_000, 0);
    let ign = ignore(r);
    // Written just now: the scan cannot trust stat for it and hashes it.
    let b = scan(r, &ign).unwrap();
    let racy = b.get(Path::new("etc/racy")).unwrap();
    // (Unless this machine stalled between the write and the scan.)
    let in_window = racy.ctime_ns >= b.started_ns() - kiln_sandbox::racy_window_ns();
    assert_eq!(racy.content_hash.is_some(), in_window);
    // Files written long before the scan are not read.
    assert_eq!(b.get(Path::new("etc/passwd")).unwrap().content_hash, None);
    write(&f, "bbbb", 0o644);
    set_mtime(&f, 1_700_000_000, 0);
    let me = me();
    assert_eq!(
        step(r, &b, &ign),
        [
            format!("etc dir 755 {me}"),
            format!("etc/racy file(4) 644 {me}")
        ]
    );
}

#[test]
fn ignored_paths_are_never_walked_or_reported() {
    let t = base();
    let r = t.path();
    mkdir(&r.join("proc/1"), 0o555);
    write(&r.join("proc/1/status"), "s", 0o444);
    mkdir(&r.join("kiln/bin"), 0o755);
    write(&r.join("kiln/bin/kiln"), "k", 0o755);
    write(&r.join("etc/hosts"), "127.0.0.1 localhost\n", 0o644);
    mkdir(&r.join("workspace"), 0o777);
    let mountinfo = format!(
        "22 1 0:21 / / rw - overlay overlay rw\n\
         30 22 253:1 /pods/x/etc-hosts {}/etc/hosts rw - ext4 /dev/vda1 rw\n",
        fs::canonicalize(r).unwrap().display()
    );
    let ign = IgnoreSet::with_mounts(
        r,
        Path::new("/kiln"),
        &[PathBuf::from("/workspace")],
        &mountinfo,
    );
    let b = scan(r, &ign).unwrap();
    for p in ["proc", "kiln", "kiln/bin/kiln", "etc/hosts", "workspace"] {
        assert!(b.get(Path::new(p)).is_none(), "{p} was walked");
    }
    write(&r.join("kiln/bin/kiln"), "kiln 2", 0o755);
    write(&r.join("kiln/state"), "s", 0o644);
    write(&r.join("etc/hosts"), "10.0.0.1 pod\n", 0o644);
    write(&r.join("workspace/out.txt"), "o", 0o644);
    fs::remove_file(r.join("proc/1/status")).unwrap();
    write(&r.join("etc/passwd"), "changed\n", 0o644);
    let me = me();
    assert_eq!(
        step(r, &b, &ign),
        [
            format!("etc dir 755 {me}"),
            format!("etc/passwd file(8) 644 {me}")
        ]
    );
}

#[test]
fn wipe_root_keeps_ignored_paths_and_their_parents() {
    let t = base();
    let r = t.path();
    mkdir(&r.join("kiln/bin"), 0o755);
    write(&r.join("kiln/bin/kiln"), "k", 0o755);
    write(&r.join("etc/hosts"), "h", 0o644);
    mkdir(&r.join("var/run/secrets/token"), 0o755);
    write(&r.join("var/run/secrets/token/t"), "t", 0o600);
    write(&r.join("var/run/other"), "o", 0o644);
    symlink("/", r.join("rootlink")).unwrap();
    symlink("../etc", r.join("usr/etc")).unwrap();
    let ign = IgnoreSet::new(
        r,
        Path::new("/kiln"),
        &[
            PathBuf::from("/etc/hosts"),
            PathBuf::from("/var/run/secrets"),
        ],
    );
    wipe_root(r, &ign, false).unwrap();
    let mut left: Vec<String> = walkdir(r);
    left.sort();
    assert_eq!(
        left,
        [
            "etc",
            "etc/hosts",
            "kiln",
            "kiln/bin",
            "kiln/bin/kiln",
            "var",
            "var/run",
            "var/run/secrets",
            "var/run/secrets/token",
            "var/run/secrets/token/t",
        ]
    );
    assert_eq!(fs::read(r.join("etc/hosts")).unwrap(), b"h");
}

fn walkdir(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn wipe_root_refuses_the_real_root() {
    let ign = IgnoreSet::new(Path::new("/"), Path::new("/kiln"), &[]);
    let err = wipe_root(Path::new("/"), &ign, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid run spec: refusing to wipe / (the real root) without allow_real_root"
    );
    // Nor through a symlink that resolves to it.
    let t = tempfile::tempdir().unwrap();
    symlink("/", t.path().join("r")).unwrap();
    let err = wipe_root(&t.path().join("r"), &ign, false).unwrap_err();
    assert!(matches!(err, SandboxError::InvalidSpec(_)), "{err}");
}

fn direct(argv: &[&str], cwd: &Path) -> DirectSpec {
    DirectSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
        cwd: cwd.display().to_string(),
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        supplementary_gids: nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect(),
    }
}

#[test]
fn run_direct_output_exit_code_env_and_cwd() {
    let t = tempfile::tempdir().unwrap();
    let cwd = fs::canonicalize(t.path()).unwrap();
    let mut out = Vec::new();
    let s = direct(&["sh", "-c", "echo out; echo err >&2; pwd; exit 3"], &cwd);
    let res = run_direct(&s, &mut out).unwrap();
    assert_eq!(res.exit_code, 3);
    let want = format!("out\nerr\n{}\n", cwd.display());
    assert_eq!(String::from_utf8(out).unwrap(), want);
    assert_eq!(res.tail, want.trim_end());

    let mut s = direct(&["env"], &cwd);
    s.env.push("A=b=c".into());
    let mut out = Vec::new();
    let res = run_direct(&s, &mut out).unwrap();
    assert_eq!(res.exit_code, 0);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "A=b=c\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
    );

    let mut out = Vec::new();
    let res = run_direct(&direct(&["sh", "-c", "kill -9 $$"], &cwd), &mut out).unwrap();
    assert_eq!(res.exit_code, 137);

    // Only the last TAIL_LINES lines are kept.
    let mut out = Vec::new();
    let res = run_direct(&direct(&["seq", "1", "100"], &cwd), &mut out).unwrap();
    let want: Vec<String> = (81..=100).map(|i| i.to_string()).collect();
    assert_eq!(res.tail, want.join("\n"));
}

#[test]
fn run_direct_errors() {
    let cwd = std::env::temp_dir();
    let mut out = Vec::new();
    let err = run_direct(&direct(&["/no/such/command"], &cwd), &mut out).unwrap_err();
    assert!(matches!(err, SandboxError::Setup(_)), "{err}");
    let mut s = direct(&["true"], &cwd);
    s.env.push("NOEQUALS".into());
    let err = run_direct(&s, &mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid run spec: environment entry \"NOEQUALS\" has no '='"
    );
    let err = run_direct(&direct(&[], &cwd), &mut out).unwrap_err();
    assert_eq!(err.to_string(), "invalid run spec: argv is empty");
}

#[test]
fn run_direct_drops_to_the_step_user() {
    if !is_root() {
        eprintln!("skipped: changing credentials needs root");
        return;
    }
    let mut s = direct(&["sh", "-c", "id -u; id -g; id -G"], Path::new("/"));
    s.uid = 1000;
    s.gid = 1001;
    s.supplementary_gids = vec![1001, 27];
    let mut out = Vec::new();
    let res = run_direct(&s, &mut out).unwrap();
    assert_eq!(res.exit_code, 0, "{}", String::from_utf8_lossy(&out));
    assert_eq!(String::from_utf8(out).unwrap(), "1000\n1001\n1001 27\n");
}

/// A RUN step done in place gives the same entries the namespace sandbox
/// gives for the same command over an overlay (see root_mode.rs).
#[test]
fn a_run_step_in_place_lists_what_it_changed() {
    let t = base();
    let r = t.path();
    let ign = ignore(r);
    let b = scan(r, &ign).unwrap();
    let script =
        "umask 022 && echo hi > a && rm etc/x && mkdir -p d && touch d/f && chmod 4755 d/f \
                  && ln a hl && ln -s /a sl && mkfifo p";
    let mut out = Vec::new();
    let res = run_direct(&direct(&["sh", "-c", script], r), &mut out).unwrap();
    assert_eq!(res.exit_code, 0, "{}", String::from_utf8_lossy(&out));
    let me = me();
    assert_eq!(
        step(r, &b, &ign),
        [
            format!("a file(3) 644 {me}"),
            format!("d dir 755 {me}"),
            format!("d/f file(0) 4755 {me}"),
            format!("etc dir 755 {me}"),
            "etc/x whiteout 0 0:0".into(),
            format!("hl hardlink->a 644 {me}"),
            format!("p fifo 644 {me}"),
            format!("sl symlink->/a 777 {me}"),
        ]
    );
}
