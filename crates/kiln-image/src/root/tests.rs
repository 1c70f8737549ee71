//! Resolution and every `Dir` operation against real directories holding hostile
//! symlinks.

#[test]
fn resolve_keeps_missing_components_and_follows_links_inside() {
    let (_t, root, outside) = setup();
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    symlink("usr/lib", root.join("lib")).unwrap();
    symlink(&outside, root.join("abs")).unwrap();
    let r = Root::open(&root).unwrap();
    let s = |v: Vec<OsString>| join(&v);
    assert_eq!(
        s(r.resolve("/lib/x/../y", true, false).unwrap()),
        "usr/lib/y"
    );
    assert_eq!(
        s(r.resolve("/abs/f", true, false).unwrap()),
        format!("{}/f", &outside.display().to_string()[1..])
    );
    assert_eq!(s(r.resolve("/lib", false, false).unwrap()), "lib");
    assert_eq!(
        s(r.resolve("/../../lib/z", true, false).unwrap()),
        "usr/lib/z"
    );
    assert!(matches!(
        r.resolve("/../x", true, true),
        Err(RootError::Escapes { .. })
    ));
}

use super::*;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("canary"), b"keep").unwrap();
    std::fs::set_permissions(
        outside.join("canary"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    (t, root, outside)
}

#[test]
fn absolute_and_dotdot_symlinks_stay_inside() {
    let (_t, root, outside) = setup();
    symlink(&outside, root.join("abs")).unwrap();
    symlink("../../../../outside", root.join("up")).unwrap();
    let r = Root::open(&root).unwrap();
    for p in ["abs/x/y", "up/x/y", "/abs/../../x/y"] {
        let got = r.dir(p, Some(NewDir::default())).unwrap().unwrap();
        assert!(!outside.join("x").exists(), "{p} escaped");
        let (parent, name) = r.parent(&format!("{p}/f"), None).unwrap().unwrap();
        parent.dir.create_file(&name, 0o644).unwrap();
        assert!(root.join(got.dir.rel()).join("f").is_file(), "{p}");
    }
    assert_eq!(std::fs::read(outside.join("canary")).unwrap(), b"keep");
}

#[test]
fn the_last_component_is_never_followed() {
    let (_t, root, outside) = setup();
    symlink(outside.join("canary"), root.join("l")).unwrap();
    let r = Root::open(&root).unwrap();
    let (p, name) = r.parent("/l", None).unwrap().unwrap();
    p.dir.chmod(&name, 0o6777).unwrap();
    p.dir.chown(&name, 4242, 4242).unwrap();
    p.dir.set_times(&name, (1, 0), (1, 0)).unwrap();
    assert!(p.dir.create_file(&name, 0o644).is_err());
    let md = std::fs::metadata(outside.join("canary")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_ne!(md.uid(), 4242);
    assert_ne!(md.mtime(), 1);
    p.dir.remove_all(&name).unwrap();
    assert!(outside.join("canary").exists());
}

#[test]
fn chmod_acts_on_the_entry_itself() {
    let (_t, root, _o) = setup();
    std::fs::create_dir(root.join("d")).unwrap();
    let r = Root::open(&root).unwrap();
    let (p, name) = r.parent("d", None).unwrap().unwrap();
    p.dir.chmod(&name, 0o1777).unwrap();
    assert_eq!(
        std::fs::metadata(root.join("d")).unwrap().mode() & 0o7777,
        0o1777
    );
}

#[test]
fn created_dirs_are_reported_and_owned() {
    let (_t, root, _o) = setup();
    std::fs::create_dir(root.join("a")).unwrap();
    let r = Root::open(&root).unwrap();
    let got = r
        .dir(
            "/a/b/c",
            Some(NewDir {
                mode: 0o750,
                owner: None,
            }),
        )
        .unwrap()
        .unwrap();
    assert_eq!(got.created, vec!["a/b".to_string(), "a/b/c".to_string()]);
    assert_eq!(got.dir.rel(), "a/b/c");
    assert_eq!(
        std::fs::metadata(root.join("a/b/c")).unwrap().mode() & 0o7777,
        0o750
    );
    assert!(r.dir("/a/x", None).unwrap().is_none());
}

#[test]
fn a_file_on_the_way_is_not_a_directory() {
    let (_t, root, _o) = setup();
    std::fs::write(root.join("f"), b"").unwrap();
    let r = Root::open(&root).unwrap();
    assert!(matches!(
        r.dir("f/x", Some(NewDir::default())),
        Err(RootError::NotADirectory { .. })
    ));
}

#[test]
fn symlink_loops_are_an_error() {
    let (_t, root, _o) = setup();
    symlink("b", root.join("a")).unwrap();
    symlink("a", root.join("b")).unwrap();
    let r = Root::open(&root).unwrap();
    assert!(matches!(
        r.dir("a/x", None),
        Err(RootError::TooManyLinks { .. })
    ));
}

#[test]
fn remove_all_does_not_follow_links_inside() {
    let (_t, root, outside) = setup();
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    symlink(&outside, root.join("d/e/out")).unwrap();
    let r = Root::open(&root).unwrap();
    r.top().unwrap().remove_all(OsStr::new("d")).unwrap();
    assert!(!root.join("d").exists());
    assert!(outside.join("canary").exists());
}

#[test]
fn dotdot_as_last_component_names_the_parent() {
    let (_t, root, _o) = setup();
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    let r = Root::open(&root).unwrap();
    let (p, name) = r.parent("a/b/..", None).unwrap().unwrap();
    assert_eq!(p.dir.rel(), "");
    assert_eq!(name, "a");
    assert!(matches!(
        r.parent("/..", None),
        Err(RootError::IsRoot { .. })
    ));
}
