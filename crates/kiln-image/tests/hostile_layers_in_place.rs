//! Hostile layer tars against `apply_layer` in place: protected paths
//! (kiln's own files) reached through a parent symlink, by a write, a
//! whiteout, an opaque marker, a link made in an earlier layer, or a chmod,
//! are refused (finding 5 of the security review).
//!
//! Each test keeps a host canary beside the destination root, with known
//! content, mode, owner, mtime and inode, and asserts it is unchanged; the
//! layer either fails with an error or lands inside the root. The raw tar
//! writer and the canary scene are in `common/hostile.rs`.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;

use common::hostile::*;
use kiln_image::ApplyOptions;

// ---------------------------------------------------------------------------
// Finding 5: in-place protected paths reached through a parent symlink.

/// A root laid out like an in-place container: kiln's own files in /kiln
/// and the registry credentials in /kaniko/.docker, protected.
fn inplace_scene() -> (Scene, ApplyOptions, String) {
    let s = Scene::new();
    fs::create_dir_all(s.root.join("kiln")).expect("mkdir");
    fs::write(s.root.join("kiln/kiln"), b"kiln binary").expect("write");
    fs::create_dir_all(s.root.join("kaniko/.docker")).expect("mkdir");
    fs::write(s.root.join("kaniko/.docker/config.json"), b"{\"auths\":{}}").expect("write");
    fs::create_dir_all(s.root.join("etc")).expect("mkdir");
    fs::write(s.root.join("etc/hosts"), b"container hosts").expect("write");
    let opts = ApplyOptions {
        same_owner: is_root(),
        protected: vec!["kiln".into(), "kaniko/.docker".into(), "etc/hosts".into()],
    };
    let before = protected_snapshot(&s.root);
    (s, opts, before)
}

fn protected_snapshot(root: &Path) -> String {
    snapshot(&root.join("kiln"))
        + &snapshot(&root.join("kaniko/.docker"))
        + &snapshot(&root.join("etc/hosts"))
}

fn assert_protected(s: &Scene, before: &str) {
    assert_eq!(
        before,
        protected_snapshot(&s.root),
        "a layer wrote into a protected path"
    );
    s.assert_canaries();
}

#[test]
fn finding5_inplace_protected_path_through_parent_symlink_write() {
    let (s, opts, before) = inplace_scene();
    let tar = RawTar::new()
        .symlink("kl", "/kiln")
        .file("kl/x", b"planted", 0o755)
        .file("kl/kiln", b"replaced", 0o755)
        .symlink("kd", "kaniko/.docker")
        .file("kd/config.json", b"{\"credsStore\":\"evil\"}", 0o644)
        .symlink("ke", "../../etc")
        .file("ke/hosts", b"evil hosts", 0o644)
        .finish();
    let _ = s.apply(&tar, &opts);
    assert_protected(&s, &before);
}

/// Holds on fb3692c (removal checks the resolved path); kept as a guard.
#[test]
fn finding5_inplace_protected_path_through_parent_symlink_whiteout() {
    let (s, opts, before) = inplace_scene();
    let tar = RawTar::new()
        .symlink("kl", "/kiln")
        .file("kl/.wh.kiln", b"", 0)
        .symlink("kd", "/kaniko")
        .file("kd/.wh..docker", b"", 0)
        .finish();
    let _ = s.apply(&tar, &opts);
    assert_protected(&s, &before);
}

/// Holds on fb3692c (removal checks the resolved path); kept as a guard.
#[test]
fn finding5_inplace_protected_path_through_parent_symlink_opaque() {
    let (s, opts, before) = inplace_scene();
    let tar = RawTar::new()
        .symlink("kl", "/kiln")
        .file("kl/.wh..wh..opq", b"", 0)
        .symlink("kd", "kaniko/.docker")
        .file("kd/.wh..wh..opq", b"", 0)
        .finish();
    let _ = s.apply(&tar, &opts);
    assert_protected(&s, &before);
}

/// A symlink planted in a first layer, used by a second.
#[test]
fn finding5_inplace_protected_path_through_parent_symlink_across_layers() {
    let (s, opts, before) = inplace_scene();
    let first = RawTar::new()
        .symlink("kl", "/kiln")
        .symlink("kd", "/kaniko/.docker")
        .finish();
    s.apply(&first, &opts)
        .expect("symlinks outside protected paths");
    let second = RawTar::new()
        .file("kl/planted", b"planted", 0o755)
        .file("kd/planted.json", b"{}", 0o644)
        .file("kl/kiln", b"replaced", 0o755)
        .file("kd/config.json", b"{}", 0o644)
        .hardlink("kd/h", "etc/hosts")
        .dir("kl/", 0o777)
        .finish();
    let _ = s.apply(&second, &opts);
    assert_protected(&s, &before);
}

/// Finding 1's shape against a protected file: `d/` 6777 then
/// `d -> /kiln/kiln` must not chmod kiln's binary.
#[test]
fn finding5_inplace_protected_path_through_parent_symlink_chmod() {
    let (s, opts, before) = inplace_scene();
    let kiln_abs = s.root.join("kiln/kiln");
    let tar = RawTar::new()
        .dir("d/", 0o6777)
        .symlink("d", kiln_abs.to_str().expect("utf-8"))
        .dir("e/", 0o6777)
        .symlink("e", "kiln/kiln")
        .finish();
    let _ = s.apply(&tar, &opts);
    assert_protected(&s, &before);
}
