//! COPY semantics against real directories: destination rules, globs,
//! metadata, ownership, --chmod, --exclude, --parents, heredocs, errors and
//! the layer entries of what was written. Runs as root (lchown works).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_build::copy::{copy, Changed, CopyError, CopyRequest};

fn write(root: &Path, rel: &str, body: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, body).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(root: &Path, rel: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(p: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    let f = fs::File::options()
        .write(true)
        .open(p)
        .unwrap_or_else(|_| fs::File::open(p).unwrap());
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

fn req<'a>(src: &'a Path, dst: &'a Path, sources: &[&str], dest: &str) -> CopyRequest<'a> {
    CopyRequest {
        src_root: src,
        src_filter: None,
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        workdir: "/".to_string(),
        dest_root: dst,
        chown: None,
        chmod: None,
        exclude: Vec::new(),
        parents: false,
        heredocs: Vec::new(),
        add: None,
        preserve_owner: false,
        link_unchanged: false,
    }
}

fn md(root: &Path, rel: &str) -> fs::Metadata {
    fs::symlink_metadata(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn perm(root: &Path, rel: &str) -> u32 {
    md(root, rel).mode() & 0o7777
}

fn owner(root: &Path, rel: &str) -> (u32, u32) {
    let m = md(root, rel);
    (m.uid(), m.gid())
}

fn paths(changed: &[Changed]) -> Vec<&str> {
    changed.iter().map(|c| c.path.as_str()).collect()
}

fn ch(path: &str, uid: u32, gid: u32) -> Changed {
    Changed {
        path: path.into(),
        uid,
        gid,
    }
}

struct Dirs {
    ctx: tempfile::TempDir,
    root: tempfile::TempDir,
}

fn dirs() -> Dirs {
    let d = Dirs {
        ctx: tempfile::tempdir().unwrap(),
        root: tempfile::tempdir().unwrap(),
    };
    mkdir(d.root.path(), "etc", 0o755);
    fs::write(
        d.root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndev:x:1001:1001::/home/dev:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        d.root.path().join("etc/group"),
        "root:x:0:\ndev:x:1001:\nstaff:x:50:\n",
    )
    .unwrap();
    d
}

#[test]
fn file_to_new_path_keeps_mode_and_mtime_and_resets_owner() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "foo", "foo\n", 0o4755);
    std::os::unix::fs::chown(c.join("foo"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(c.join("foo"), fs::Permissions::from_mode(0o4755)).unwrap();
    set_mtime(&c.join("foo"), 1_000_000);
    let changed = copy(&req(c, r, &["foo"], "/a/b/foo")).unwrap();
    assert_eq!(fs::read_to_string(r.join("a/b/foo")).unwrap(), "foo\n");
    assert_eq!(perm(r, "a/b/foo"), 0o4755, "setuid is kept");
    assert_eq!(md(r, "a/b/foo").mtime(), 1_000_000);
    assert_eq!(owner(r, "a/b/foo"), (0, 0));
    assert_eq!(perm(r, "a"), 0o755);
    assert_eq!(perm(r, "a/b"), 0o755);
    assert_eq!(
        changed,
        vec![ch("a", 0, 0), ch("a/b", 0, 0), ch("a/b/foo", 0, 0)]
    );
    // No temp files left behind.
    let names: Vec<_> = fs::read_dir(r.join("a/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["foo"]);
}

#[test]
fn destination_rules() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "foo", "foo", 0o644);
    mkdir(r, "existing", 0o700);
    // trailing slash: into a (created) directory
    copy(&req(c, r, &["foo"], "/newdir/")).unwrap();
    assert_eq!(fs::read_to_string(r.join("newdir/foo")).unwrap(), "foo");
    // existing directory without slash: into it, its metadata untouched
    copy(&req(c, r, &["foo"], "/existing")).unwrap();
    assert_eq!(fs::read_to_string(r.join("existing/foo")).unwrap(), "foo");
    assert_eq!(perm(r, "existing"), 0o700);
    // relative destination is relative to WORKDIR
    let mut q = req(c, r, &["foo"], "rel/bar");
    q.workdir = "/work/dir".into();
    copy(&q).unwrap();
    assert_eq!(
        fs::read_to_string(r.join("work/dir/rel/bar")).unwrap(),
        "foo"
    );
    // "." is the WORKDIR as a directory
    let mut q = req(c, r, &["foo"], ".");
    q.workdir = "/wd".into();
    copy(&q).unwrap();
    assert!(r.join("wd/foo").is_file());
    // an existing file is replaced
    write(r, "replace/me", "old", 0o600);
    copy(&req(c, r, &["foo"], "/replace/me")).unwrap();
    assert_eq!(fs::read_to_string(r.join("replace/me")).unwrap(), "foo");
    assert_eq!(perm(r, "replace/me"), 0o644);
}

#[test]
fn directory_source_copies_contents() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    mkdir(c, "dir", 0o700);
    mkdir(c, "dir/sub", 0o750);
    write(c, "dir/sub/f", "f", 0o600);
    write(c, "dir/top", "t", 0o644);
    symlink("sub/f", c.join("dir/link")).unwrap();
    symlink("/outside/anything", c.join("dir/abs")).unwrap();
    fs::hard_link(c.join("dir/top"), c.join("dir/sub/hard")).unwrap();
    set_mtime(&c.join("dir/sub"), 2_000_000);
    let changed = copy(&req(c, r, &["dir"], "/dst")).unwrap();
    // The source directory itself is not created under dst: its contents are.
    assert!(!r.join("dst/dir").exists());
    assert_eq!(
        perm(r, "dst"),
        0o755,
        "a created destination directory is 0755"
    );
    assert_eq!(perm(r, "dst/sub"), 0o750);
    assert_eq!(md(r, "dst/sub").mtime(), 2_000_000);
    assert_eq!(perm(r, "dst/sub/f"), 0o600);
    assert_eq!(
        fs::read_link(r.join("dst/link")).unwrap().to_str(),
        Some("sub/f")
    );
    assert_eq!(
        fs::read_link(r.join("dst/abs")).unwrap().to_str(),
        Some("/outside/anything")
    );
    assert_eq!(
        md(r, "dst/top").ino(),
        md(r, "dst/sub/hard").ino(),
        "hardlinks stay hardlinks"
    );
    assert_eq!(
        paths(&changed),
        vec![
            "dst",
            "dst/abs",
            "dst/link",
            "dst/sub",
            "dst/sub/f",
            "dst/sub/hard",
            "dst/top"
        ]
    );
    // Copying a directory onto a file fails.
    write(r, "file", "x", 0o644);
    let e = copy(&req(c, r, &["dir"], "/file")).unwrap_err();
    assert!(matches!(e, CopyError::DirOntoFile { .. }), "{e}");
}

#[test]
fn globs() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "bar/bat", "bat", 0o644);
    write(c, "bar/baz", "baz", 0o644);
    write(c, "bar/qux", "qux", 0o644);
    write(c, "arr[0].txt", "arr", 0o644);
    write(c, "foo", "foo", 0o755);
    mkdir(c, "bar/bam", 0o755);
    write(c, "bar/bam/bat", "deep", 0o644);
    copy(&req(c, r, &["bar/b*"], "/out/")).unwrap();
    assert_eq!(fs::read_to_string(r.join("out/bat")).unwrap(), "bat");
    assert_eq!(fs::read_to_string(r.join("out/baz")).unwrap(), "baz");
    // a matched directory copies its contents into dest
    assert_eq!(fs::read_to_string(r.join("out/bat")).unwrap(), "bat");
    assert!(!r.join("out/qux").exists());
    copy(&req(c, r, &["arr[[]0].txt"], "/mydir/")).unwrap();
    assert!(r.join("mydir/arr[0].txt").is_file());
    copy(&req(c, r, &["fo?"], "/foo2")).unwrap();
    assert_eq!(fs::read_to_string(r.join("foo2")).unwrap(), "foo");
    // a wildcard matching nothing is skipped when another source matches
    // (Docker's builder), so "hello" becomes the file foo
    let changed = copy(&req(c, r, &["bar/doesnotexist*", "foo"], "hello")).unwrap();
    assert_eq!(fs::read_to_string(r.join("hello")).unwrap(), "foo");
    assert_eq!(changed, vec![ch("hello", 0, 0)]);
    // ... and alone it copies nothing, as Docker's builder does
    let changed = copy(&req(c, r, &["nothing*"], "/none/")).unwrap();
    assert!(changed.is_empty());
    assert!(!r.join("none").exists());
    // per-component wildcards in the middle of a path
    copy(&req(c, r, &["*/bam/bat"], "/mid/")).unwrap();
    assert_eq!(fs::read_to_string(r.join("mid/bat")).unwrap(), "deep");
}

#[test]
fn missing_and_escaping_sources() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "foo", "foo", 0o644);
    let e = copy(&req(c, r, &["nope"], "/x")).unwrap_err();
    assert_eq!(e.to_string(), "\"nope\": not found");
    let e = copy(&req(c, r, &["foo", "nope/deeper"], "/x/")).unwrap_err();
    assert!(
        matches!(&e, CopyError::NotFound { src } if src == "nope/deeper"),
        "{e}"
    );
    let e = copy(&req(c, r, &["../etc/passwd"], "/x")).unwrap_err();
    assert!(
        matches!(&e, CopyError::OutsideContext { src } if src == "../etc/passwd"),
        "{e}"
    );
    symlink("../../../../../../etc/passwd", c.join("escape")).unwrap();
    let e = copy(&req(c, r, &["escape"], "/esc")).unwrap_err();
    assert!(matches!(&e, CopyError::OutsideContext { .. }), "{e}");
    assert!(!r.join("esc").exists());
    // a leading '/' is the context root
    copy(&req(c, r, &["/foo"], "/rooted")).unwrap();
    assert_eq!(fs::read_to_string(r.join("rooted")).unwrap(), "foo");
}

#[test]
fn named_symlink_source_is_followed_inside_the_root() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "real/file", "real", 0o640);
    symlink("/real/file", c.join("abslink")).unwrap();
    symlink("real", c.join("dirlink")).unwrap();
    copy(&req(c, r, &["abslink"], "/dst/")).unwrap();
    let m = md(r, "dst/abslink");
    assert!(m.is_file(), "followed: a file named after the link");
    assert_eq!(fs::read_to_string(r.join("dst/abslink")).unwrap(), "real");
    assert_eq!(m.mode() & 0o7777, 0o640);
    copy(&req(c, r, &["dirlink"], "/d2")).unwrap();
    assert_eq!(fs::read_to_string(r.join("d2/file")).unwrap(), "real");
}

#[test]
fn dest_symlink_to_dir_is_followed_in_the_stage() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "foo", "foo", 0o755);
    mkdir(r, "etc/sv", 0o755);
    symlink("/etc/sv", r.join("etc/service")).unwrap();
    let changed = copy(&req(c, r, &["foo"], "/etc/service/foo")).unwrap();
    assert!(md(r, "etc/service").file_type().is_symlink());
    assert_eq!(fs::read_to_string(r.join("etc/sv/foo")).unwrap(), "foo");
    assert_eq!(changed, vec![ch("etc/sv/foo", 0, 0)]);
}

#[test]
fn chown_names_numbers_and_intermediate_dirs() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "foo", "foo", 0o755);
    write(c, "qux/qup", "qup", 0o644);
    write(c, "qux/quw/que", "que", 0o644);
    let mut q = req(c, r, &["foo"], "/path/to/foo");
    q.chown = Some("dev:dev".into());
    let changed = copy(&q).unwrap();
    assert_eq!(
        changed,
        vec![
            ch("path", 1001, 1001),
            ch("path/to", 1001, 1001),
            ch("path/to/foo", 1001, 1001)
        ]
    );
    for p in ["path", "path/to", "path/to/foo"] {
        assert_eq!(owner(r, p), (1001, 1001), "{p}");
    }
    let mut q = req(c, r, &["qux"], "/path2/to/qux");
    q.chown = Some("1001:staff".into());
    copy(&q).unwrap();
    for p in [
        "path2",
        "path2/to",
        "path2/to/qux",
        "path2/to/qux/quw",
        "path2/to/qux/quw/que",
    ] {
        assert_eq!(owner(r, p), (1001, 50), "{p}");
    }
    assert_eq!(perm(r, "path2/to/qux"), 0o755);
    // user alone: its primary group; number alone: same number
    let mut q = req(c, r, &["foo"], "/u1");
    q.chown = Some("dev".into());
    copy(&q).unwrap();
    assert_eq!(owner(r, "u1"), (1001, 1001));
    let mut q = req(c, r, &["foo"], "/u2");
    q.chown = Some("77".into());
    copy(&q).unwrap();
    assert_eq!(owner(r, "u2"), (77, 77));
    // unknown name: an error, nothing written
    let mut q = req(c, r, &["foo"], "/u3");
    q.chown = Some("ghost".into());
    let e = copy(&q).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--chown: unable to find user ghost: no matching entries in passwd file"
    );
    assert!(!r.join("u3").exists());
    fs::remove_file(r.join("etc/passwd")).unwrap();
    let mut q = req(c, r, &["foo"], "/u4");
    q.chown = Some("dev".into());
    assert!(matches!(
        copy(&q),
        Err(CopyError::User(
            kiln_build::users::UserError::NoPasswd { .. }
        ))
    ));
}

#[test]
fn copy_from_stage_preserves_owners_and_special_files() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    mkdir(c, "app", 0o755);
    write(c, "app/bin", "x", 0o750);
    std::os::unix::fs::lchown(c.join("app/bin"), Some(33), Some(44)).unwrap();
    std::os::unix::fs::lchown(c.join("app"), Some(5), Some(6)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        c.join("app/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        c.join("app/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let mut q = req(c, r, &["/app"], "/copied");
    q.preserve_owner = true;
    let changed = copy(&q).unwrap();
    assert_eq!(owner(r, "copied/bin"), (33, 44));
    assert!(changed.contains(&ch("copied/bin", 33, 44)));
    assert!(md(r, "copied/fifo").file_type().is_fifo_like());
    assert_eq!(perm(r, "copied/fifo"), 0o640);
    let null = md(r, "copied/null");
    assert_eq!(
        (
            rustix::fs::major(null.rdev()),
            rustix::fs::minor(null.rdev())
        ),
        (1, 3)
    );
    // from the context: owners reset
    let r2 = tempfile::tempdir().unwrap();
    copy(&req(c, r2.path(), &["/app"], "/copied")).unwrap();
    assert_eq!(owner(r2.path(), "copied/bin"), (0, 0));
}

/// From a source that stays as it is (another stage), a file whose copy
/// would be the same inode metadata is a hard link to it; one that takes
/// another owner or mode is a copy; the layer entries are the same either way.
#[test]
fn copy_from_a_stage_links_unchanged_files_and_copies_changed_ones() {
    use kiln_build::copy::copy_counting;
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "app/lib/a.py", "a", 0o644);
    write(c, "app/bin/tool", "#!", 0o4755);
    // (chown clears setuid: mode after owner)
    std::os::unix::fs::lchown(c.join("app/bin/tool"), Some(33), Some(44)).unwrap();
    fs::set_permissions(c.join("app/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    set_mtime(&c.join("app/bin/tool"), 1_600_000_000);
    fs::hard_link(c.join("app/lib/a.py"), c.join("app/lib/b.py")).unwrap();
    symlink("a.py", c.join("app/lib/link")).unwrap();

    let mut q = req(c, r, &["/app"], "/venv");
    q.preserve_owner = true;
    q.link_unchanged = true;
    let (changed, linked) = copy_counting(&q).unwrap();
    assert_eq!(
        linked, 2,
        "a.py and tool linked; b.py links to the copy of a.py"
    );
    let ino = |root: &Path, rel: &str| md(root, rel).ino();
    assert_eq!(ino(r, "venv/bin/tool"), ino(c, "app/bin/tool"));
    assert_eq!(ino(r, "venv/lib/a.py"), ino(c, "app/lib/a.py"));
    assert_eq!(ino(r, "venv/lib/b.py"), ino(r, "venv/lib/a.py"));
    assert_eq!(owner(r, "venv/bin/tool"), (33, 44));
    assert_eq!(perm(r, "venv/bin/tool"), 0o4755);
    assert_eq!(md(r, "venv/bin/tool").mtime(), 1_600_000_000);
    assert!(md(r, "venv/lib/link").file_type().is_symlink());
    let linked_entries = kiln_build::snapshot::layer_entries(r, &changed).unwrap();

    // The same copy without links makes the same layer entries.
    let r2 = tempfile::tempdir().unwrap();
    let mut q2 = req(c, r2.path(), &["/app"], "/venv");
    q2.preserve_owner = true;
    let (changed2, linked2) = copy_counting(&q2).unwrap();
    assert_eq!(linked2, 0);
    assert_ne!(ino(r2.path(), "venv/lib/a.py"), ino(c, "app/lib/a.py"));
    let copied_entries = kiln_build::snapshot::layer_entries(r2.path(), &changed2).unwrap();
    let strip = |v: Vec<kiln_image::LayerEntry>| -> Vec<String> {
        v.into_iter()
            .map(|e| {
                let kind = match e.kind {
                    kiln_image::EntryKind::File { size, .. } => format!("file {size}"),
                    other => format!("{other:?}"),
                };
                format!(
                    "{} {kind} {:o} {}:{} {} {:?}",
                    e.path, e.mode, e.uid, e.gid, e.mtime, e.xattrs
                )
            })
            .collect()
    };
    assert_eq!(strip(linked_entries), strip(copied_entries));

    // Another owner or mode: copied, never linked (the source keeps its own).
    let r3 = tempfile::tempdir().unwrap();
    let mut q3 = req(c, r3.path(), &["/app"], "/venv");
    q3.preserve_owner = true;
    q3.link_unchanged = true;
    q3.chmod = Some("0700".into());
    let (_, linked3) = copy_counting(&q3).unwrap();
    assert_eq!(linked3, 0);
    assert_eq!(perm(r3.path(), "venv/lib/a.py"), 0o700);
    assert_eq!(perm(c, "app/lib/a.py"), 0o644);
    let r4 = tempfile::tempdir().unwrap();
    let mut q4 = req(c, r4.path(), &["/app"], "/venv");
    q4.link_unchanged = true;
    q4.chown = Some("1:1".into());
    let (_, linked4) = copy_counting(&q4).unwrap();
    assert_eq!(linked4, 0);
    assert_eq!(owner(r4.path(), "venv/bin/tool"), (1, 1));
    assert_eq!(owner(c, "app/bin/tool"), (33, 44));
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn chmod_applies_to_files_dirs_and_created_parents() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "foo", "foo", 0o644);
    write(c, "qux/qup", "qup", 0o644);
    mkdir(c, "qux/quw", 0o700);
    write(c, "qux/quw/que", "que", 0o600);
    let mut q = req(c, r, &["qux"], "/dir777");
    q.chmod = Some("777".into());
    copy(&q).unwrap();
    for p in ["dir777", "dir777/qup", "dir777/quw", "dir777/quw/que"] {
        assert_eq!(perm(r, p), 0o777, "{p}");
    }
    let mut q = req(c, r, &["foo"], "/new/parent/file");
    q.chmod = Some("0640".into());
    copy(&q).unwrap();
    assert_eq!(perm(r, "new/parent/file"), 0o640);
    assert_eq!(
        perm(r, "new/parent"),
        0o755,
        "created parents are 0755, not the --chmod mode (as Docker's builder)"
    );
    let mut q = req(c, r, &["qux"], "/sym");
    q.chmod = Some("a=rX,u+w".into());
    copy(&q).unwrap();
    assert_eq!(perm(r, "sym/qup"), 0o644);
    assert_eq!(perm(r, "sym/quw"), 0o755);
    assert_eq!(perm(r, "sym/quw/que"), 0o644);
    let mut q = req(c, r, &["foo"], "/bad");
    q.chmod = Some("99999".into());
    assert!(matches!(copy(&q), Err(CopyError::Chmod(_))));
}

#[test]
fn exclude_and_context_filter() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "src/a.txt", "a", 0o644);
    write(c, "src/b.md", "b", 0o644);
    write(c, "src/README.md", "r", 0o644);
    write(c, "src/deep/x.md", "x", 0o644);
    write(c, "src/secret", "s", 0o644);
    let mut q = req(c, r, &["src"], "/out/");
    q.exclude = vec!["*.md".into(), "!README.md".into()];
    let filter = kiln_dockerfile::pattern::PatternSet::new(&["src/secret"]).unwrap();
    q.src_filter = Some(&filter);
    copy(&q).unwrap();
    assert!(r.join("out/a.txt").exists());
    assert!(!r.join("out/b.md").exists());
    assert!(r.join("out/README.md").exists());
    assert!(
        r.join("out/deep/x.md").exists(),
        "*.md matches only at the top"
    );
    assert!(!r.join("out/secret").exists());
    // an excluded named source is not found
    let e = copy(&req(c, r, &["src/secret"], "/s")).map(|_| ());
    assert!(e.is_ok());
    let mut q = req(c, r, &["src/secret"], "/s2");
    q.src_filter = Some(&filter);
    assert!(matches!(copy(&q), Err(CopyError::NotFound { .. })));
    // wildcard matches are excluded by name too
    let mut q = req(c, r, &["src/*"], "/w/");
    q.exclude = vec!["*.txt".into()];
    copy(&q).unwrap();
    assert!(!r.join("w/a.txt").exists());
    assert!(r.join("w/b.md").exists());
}

#[test]
fn parents_keep_source_paths() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    mkdir(c, "x", 0o750);
    mkdir(c, "x/y", 0o700);
    write(c, "x/y/z.txt", "z", 0o644);
    write(c, "x/y/w.txt", "w", 0o644);
    write(c, "x/other", "o", 0o644);
    let mut q = req(c, r, &["x/y/z.txt", "x/other"], "/dest/");
    q.parents = true;
    copy(&q).unwrap();
    assert_eq!(fs::read_to_string(r.join("dest/x/y/z.txt")).unwrap(), "z");
    assert_eq!(fs::read_to_string(r.join("dest/x/other")).unwrap(), "o");
    assert!(!r.join("dest/x/y/w.txt").exists());
    assert_eq!(perm(r, "dest/x"), 0o750, "parents keep their source mode");
    assert_eq!(perm(r, "dest/x/y"), 0o700);
    let mut q = req(c, r, &["x/./y/*.txt"], "/pivot/");
    q.parents = true;
    copy(&q).unwrap();
    assert!(r.join("pivot/y/z.txt").is_file());
    assert!(r.join("pivot/y/w.txt").is_file());
    assert!(!r.join("pivot/x").exists());
    let mut q = req(c, r, &["x/missing"], "/m/");
    q.parents = true;
    assert!(matches!(copy(&q), Err(CopyError::NotFound { .. })));
}

#[test]
fn heredocs() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    let mut q = req(c, r, &[], "/etc/conf");
    q.heredocs = vec![("EOF".into(), "line1\nline2\n".into())];
    let changed = copy(&q).unwrap();
    assert_eq!(
        fs::read_to_string(r.join("etc/conf")).unwrap(),
        "line1\nline2\n"
    );
    assert_eq!(perm(r, "etc/conf"), 0o644);
    assert_eq!(changed, vec![ch("etc/conf", 0, 0)]);
    let mut q = req(c, r, &[], "/scripts/");
    q.heredocs = vec![("run.sh".into(), "#!/bin/sh\n".into())];
    q.chmod = Some("755".into());
    q.chown = Some("dev".into());
    copy(&q).unwrap();
    assert_eq!(perm(r, "scripts/run.sh"), 0o755);
    assert_eq!(owner(r, "scripts/run.sh"), (1001, 1001));
}

#[test]
fn file_onto_directory_inside_tree_is_an_error() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "tree/name", "file", 0o644);
    mkdir(r, "out/name", 0o755);
    write(r, "out/name/keep", "k", 0o644);
    let e = copy(&req(c, r, &["tree"], "/out")).unwrap_err();
    assert!(
        matches!(&e, CopyError::CannotReplaceDir { path } if path == "out/name"),
        "{e}"
    );
    assert!(r.join("out/name/keep").exists());
}

#[test]
fn xattrs_are_copied_when_the_filesystem_has_them() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "cap", "x", 0o755);
    let set = rustix::fs::lsetxattr(
        c.join("cap"),
        "user.kiln",
        b"v1",
        rustix::fs::XattrFlags::empty(),
    );
    if set.is_err() {
        eprintln!("filesystem without user xattrs; skipping the xattr assertion");
        return;
    }
    copy(&req(c, r, &["cap"], "/cap")).unwrap();
    let mut buf = [0u8; 16];
    let n = rustix::fs::lgetxattr(r.join("cap"), "user.kiln", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"v1");
}

#[test]
fn snapshot_entries_include_parents_owners_and_hardlinks() {
    use kiln_image::EntryKind;
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    write(c, "t/a", "aaaa", 0o644);
    fs::hard_link(c.join("t/a"), c.join("t/b")).unwrap();
    symlink("a", c.join("t/l")).unwrap();
    mkdir(r, "opt", 0o711);
    let mut q = req(c, r, &["t"], "/opt/app/");
    q.chown = Some("7:8".into());
    let changed = copy(&q).unwrap();
    let entries = kiln_build::snapshot::layer_entries(r, &changed).unwrap();
    let summary: Vec<(String, u32, u64, u64)> = entries
        .iter()
        .map(|e| (e.path.clone(), e.mode, e.uid, e.gid))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("opt".into(), 0o711, 0, 0),
            ("opt/app".into(), 0o755, 7, 8),
            ("opt/app/a".into(), 0o644, 7, 8),
            ("opt/app/b".into(), 0o644, 7, 8),
            ("opt/app/l".into(), 0o777, 7, 8),
        ]
    );
    assert!(matches!(&entries[2].kind, EntryKind::File { size: 4, .. }));
    assert_eq!(
        entries[3].kind,
        EntryKind::Hardlink {
            target: "opt/app/a".into()
        }
    );
    assert_eq!(entries[4].kind, EntryKind::Symlink { target: "a".into() });
}

/// A stage whose entries are symlinks to the host (absolute and climbing
/// with `..`) where COPY writes: files, directories, hardlinks, `--parents`
/// and heredocs land inside the stage root or fail, and the host canary
/// keeps its content, mode and owner. Every write acts on a directory
/// descriptor and never follows the name it writes.
#[test]
fn writes_into_a_hostile_stage_never_reach_the_host() {
    let d = dirs();
    let (c, r) = (d.ctx.path(), d.root.path());
    let host = tempfile::tempdir().unwrap();
    let canary = host.path().join("canary");
    fs::write(&canary, "host").unwrap();
    fs::set_permissions(&canary, fs::Permissions::from_mode(0o640)).unwrap();
    let canary_dir = host.path().join("dir");
    mkdir(host.path(), "dir", 0o750);
    let climb = format!("../../../../../../../..{}", canary.display());
    // The stage has the host path's parent, so the links resolve to a
    // place in the stage (a dangling destination is an error).
    mkdir(
        r,
        canary
            .parent()
            .unwrap()
            .strip_prefix("/")
            .unwrap()
            .to_str()
            .unwrap(),
        0o755,
    );
    symlink(&canary, r.join("abs")).unwrap();
    symlink(&climb, r.join("up")).unwrap();
    symlink(&canary_dir, r.join("absdir")).unwrap();
    // Sources: a file, a hardlinked pair, a directory tree, a symlink.
    write(c, "f", "new", 0o4777);
    write(c, "t/a", "a", 0o644);
    fs::hard_link(c.join("t/a"), c.join("t/b")).unwrap();
    symlink("/", c.join("t/l")).unwrap();
    // A file onto each symlink: followed inside the stage only.
    copy(&req(c, r, &["f"], "/abs")).unwrap();
    copy(&req(c, r, &["f"], "/up")).unwrap();
    let inside = r.join(canary.strip_prefix("/").unwrap());
    assert_eq!(fs::read_to_string(&inside).unwrap(), "new");
    // A tree into a symlinked directory: created inside the stage.
    copy(&req(c, r, &["t"], "/absdir/")).unwrap();
    let inside_dir = r.join(canary_dir.strip_prefix("/").unwrap());
    assert_eq!(fs::read_to_string(inside_dir.join("b")).unwrap(), "a");
    assert_eq!(
        md(
            r,
            &format!("{}/a", canary_dir.strip_prefix("/").unwrap().display())
        )
        .ino(),
        md(
            r,
            &format!("{}/b", canary_dir.strip_prefix("/").unwrap().display())
        )
        .ino(),
        "the hardlink pair stays one inode"
    );
    assert!(md(
        r,
        &format!("{}/l", canary_dir.strip_prefix("/").unwrap().display())
    )
    .file_type()
    .is_symlink());
    // --parents through a stage symlink below the destination: refused.
    mkdir(r, "p", 0o755);
    symlink(&canary_dir, r.join("p/t")).unwrap();
    let mut q = req(c, r, &["t/a"], "/p/");
    q.parents = true;
    assert!(matches!(copy(&q), Err(CopyError::NotADirectory { .. })));
    // A directory copied onto an entry that is a symlink to a host dir.
    mkdir(r, "q", 0o755);
    symlink(&canary_dir, r.join("q/t")).unwrap();
    let mut q = req(c, r, &["/"], "/q/");
    q.exclude = vec!["f".into()];
    assert!(matches!(copy(&q), Err(CopyError::DirOntoFile { .. })));
    // A heredoc onto the climbing symlink.
    let mut q = req(c, r, &[], "/up");
    q.heredocs = vec![("EOF".into(), "doc".into())];
    copy(&q).unwrap();
    assert_eq!(fs::read_to_string(&inside).unwrap(), "doc");
    // The host is as it was.
    assert_eq!(fs::read_to_string(&canary).unwrap(), "host");
    assert_eq!(fs::metadata(&canary).unwrap().mode() & 0o7777, 0o640);
    assert_eq!(fs::metadata(&canary_dir).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(fs::read_dir(&canary_dir).unwrap().count(), 0);
}
