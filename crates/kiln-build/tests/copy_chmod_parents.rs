//! `COPY --chmod` and the directories a step creates to reach its
//! destination: as in Docker's builder, missing parents are 0755 (with the
//! `--chown` owner), and `--chmod` applies only to the copied entries and to
//! the destination directory that stands for a copied directory's root.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_build::copy::{copy, Changed, CopyRequest};

fn write(root: &Path, rel: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, rel).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(root: &Path, rel: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn req<'a>(
    src: &'a Path,
    dst: &'a Path,
    sources: &[&str],
    dest: &str,
    chmod: &str,
) -> CopyRequest<'a> {
    CopyRequest {
        src_root: src,
        src_filter: None,
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        workdir: "/".to_string(),
        dest_root: dst,
        chown: None,
        chmod: Some(chmod.to_string()),
        exclude: Vec::new(),
        parents: false,
        heredocs: Vec::new(),
        add: None,
        preserve_owner: false,
        link_unchanged: false,
    }
}

/// Permission bits and file type of `rel` in `root`.
fn mode(root: &Path, rel: &str) -> (u32, bool) {
    let md = fs::symlink_metadata(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    (md.mode() & 0o7777, md.is_dir())
}

fn owner(root: &Path, rel: &str) -> (u32, u32) {
    let md = fs::symlink_metadata(root.join(rel)).unwrap();
    (md.uid(), md.gid())
}

fn changed(paths: &[(&str, u32)]) -> Vec<Changed> {
    paths
        .iter()
        .map(|(p, id)| Changed {
            path: p.to_string(),
            uid: *id,
            gid: *id,
        })
        .collect()
}

#[test]
fn file_copy_creates_parents_0755_and_chmods_only_the_file() {
    let (ctx, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (c, r) = (ctx.path(), root.path());
    write(c, "f", 0o600);
    let out = copy(&req(c, r, &["f"], "/a/b/f", "0644")).unwrap();
    assert_eq!(mode(r, "a"), (0o755, true));
    assert_eq!(mode(r, "a/b"), (0o755, true));
    assert_eq!(mode(r, "a/b/f"), (0o644, false));
    assert_eq!(out, changed(&[("a", 0), ("a/b", 0), ("a/b/f", 0)]));

    // Destination given as a directory: that directory is created to hold the
    // file, not copied, so it is 0755 too.
    let out = copy(&req(c, r, &["f"], "/p/q/", "0640")).unwrap();
    assert_eq!(mode(r, "p"), (0o755, true));
    assert_eq!(mode(r, "p/q"), (0o755, true));
    assert_eq!(mode(r, "p/q/f"), (0o640, false));
    assert_eq!(out, changed(&[("p", 0), ("p/q", 0), ("p/q/f", 0)]));

    // Symbolic modes that would make a directory unsearchable do not reach
    // the parents either.
    copy(&req(c, r, &["f"], "/s/t/f", "u=rwx,go=")).unwrap();
    assert_eq!(mode(r, "s"), (0o755, true));
    assert_eq!(mode(r, "s/t"), (0o755, true));
    assert_eq!(mode(r, "s/t/f"), (0o700, false));
}

#[test]
fn parents_take_the_chown_owner_but_not_the_chmod_mode() {
    let (ctx, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (c, r) = (ctx.path(), root.path());
    write(c, "f", 0o644);
    let mut q = req(c, r, &["f"], "/home/app/f", "0600");
    q.chown = Some("1001:1001".into());
    let out = copy(&q).unwrap();
    for p in ["home", "home/app"] {
        assert_eq!(mode(r, p), (0o755, true), "{p}");
        assert_eq!(owner(r, p), (1001, 1001), "{p}");
    }
    assert_eq!(mode(r, "home/app/f"), (0o600, false));
    assert_eq!(owner(r, "home/app/f"), (1001, 1001));
    assert_eq!(
        out,
        changed(&[("home", 1001), ("home/app", 1001), ("home/app/f", 1001)])
    );
}

#[test]
fn existing_parents_keep_their_mode() {
    let (ctx, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (c, r) = (ctx.path(), root.path());
    write(c, "f", 0o644);
    mkdir(r, "etc", 0o700);
    let out = copy(&req(c, r, &["f"], "/etc/new/f", "0444")).unwrap();
    assert_eq!(mode(r, "etc"), (0o700, true));
    assert_eq!(mode(r, "etc/new"), (0o755, true));
    assert_eq!(mode(r, "etc/new/f"), (0o444, false));
    assert_eq!(out, changed(&[("etc/new", 0), ("etc/new/f", 0)]));
}

#[test]
fn directory_copy_chmods_its_tree_and_root_but_not_the_parents() {
    let (ctx, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (c, r) = (ctx.path(), root.path());
    mkdir(c, "dir", 0o700);
    write(c, "dir/file", 0o644);
    mkdir(c, "dir/sub", 0o711);
    write(c, "dir/sub/deep", 0o600);
    let out = copy(&req(c, r, &["dir/"], "/x/y/", "0750")).unwrap();
    assert_eq!(mode(r, "x"), (0o755, true), "created parent");
    assert_eq!(mode(r, "x/y"), (0o750, true), "the copied directory's root");
    assert_eq!(mode(r, "x/y/file"), (0o750, false));
    assert_eq!(mode(r, "x/y/sub"), (0o750, true));
    assert_eq!(mode(r, "x/y/sub/deep"), (0o750, false));
    assert_eq!(
        out,
        changed(&[
            ("x", 0),
            ("x/y", 0),
            ("x/y/file", 0),
            ("x/y/sub", 0),
            ("x/y/sub/deep", 0),
        ])
    );

    // Copying into an existing directory leaves that directory alone.
    mkdir(r, "opt", 0o711);
    copy(&req(c, r, &["dir"], "/opt", "0700")).unwrap();
    assert_eq!(mode(r, "opt"), (0o711, true));
    assert_eq!(mode(r, "opt/file"), (0o700, false));
    assert_eq!(mode(r, "opt/sub"), (0o700, true));
}
