//! Tar contexts: files (plain, gzip, zstd), standard input, sub-paths, and
//! archives that try to escape the context directory.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use kiln_context::{open, ContextError};

fn open_tar_file(
    bytes: &[u8],
    name: &str,
) -> (
    tempfile::TempDir,
    Result<kiln_context::Context, ContextError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, bytes).unwrap();
    let work = dir.path().join("work");
    let spec = format!("tar://{}", file.display());
    let r = open(&spec, None, &options(&work));
    (dir, r)
}

#[test]
fn tar_file_plain_gzip_zstd() {
    let tar = sample_tar();
    for (name, bytes) in [
        ("c.tar", tar.clone()),
        ("c.tar.gz", gzip(&tar)),
        ("c.tar.zst", zstd(&tar)),
    ] {
        let (dir, ctx) = open_tar_file(&bytes, name);
        let ctx = ctx.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            ctx.root(),
            dir.path().join("work/context").canonicalize().unwrap()
        );
        assert_sample(&ctx);
    }
}

#[test]
fn a_plain_path_to_a_file_is_a_tar_context() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ctx.tgz");
    std::fs::write(&file, gzip(&sample_tar())).unwrap();
    let ctx = open(
        file.to_str().unwrap(),
        None,
        &options(&dir.path().join("w")),
    )
    .unwrap();
    assert_sample(&ctx);
}

#[test]
fn local_dir_and_dir_scheme() {
    let (dir, ctx) = open_tar_file(&sample_tar(), "c.tar");
    let root = ctx.unwrap().root().to_path_buf();
    for spec in [
        root.display().to_string(),
        format!("dir://{}", root.display()),
    ] {
        let ctx = open(&spec, None, &options(&dir.path().join("unused"))).unwrap();
        assert_eq!(ctx.root(), root);
        assert_sample(&ctx);
    }
    assert!(!dir.path().join("unused/context").exists());
}

#[test]
fn sub_path_selects_a_directory_and_stays_inside() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.tar");
    std::fs::write(&file, sample_tar()).unwrap();
    let spec = format!("tar://{}", file.display());
    let mut o = options(&dir.path().join("w1"));
    o.sub_path = Some("app".into());
    let ctx = open(&spec, None, &o).unwrap();
    assert_eq!(tree(ctx.root()), ["data/", "data/x.txt", "main.sh"]);
    assert!(ctx.ignore_file().is_none());

    for (sub, reason) in [
        ("../..", "must be a relative path inside the context"),
        ("/etc", "must be a relative path inside the context"),
        ("missing", "No such file or directory (os error 2)"),
        ("Dockerfile", "is not a directory"),
    ] {
        let mut o = options(&dir.path().join(format!("w-{}", sub.replace('/', "_"))));
        o.sub_path = Some(sub.into());
        let e = open(&spec, None, &o).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("build context {}: sub-path {sub}: {reason}", file.display())
        );
    }
}

#[test]
fn work_dir_must_be_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.tar");
    std::fs::write(&file, sample_tar()).unwrap();
    let spec = format!("tar://{}", file.display());
    let work = dir.path().join("w");
    open(&spec, None, &options(&work)).unwrap();
    let e = open(&spec, None, &options(&work)).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("the context work directory already exists"),
        "{e}"
    );
}

/// Run by `tar_from_stdin` as a child process whose standard input is a
/// context tar: opens `tar://stdin` and prints the tree.
#[test]
#[ignore = "run by tar_from_stdin in a child process"]
fn stdin_child() {
    let work = std::env::var("KILN_CONTEXT_TEST_WORK").expect("set by tar_from_stdin");
    let ctx = open("tar://stdin", None, &options(std::path::Path::new(&work))).unwrap();
    assert_sample(&ctx);
    println!("TREE {}", tree(ctx.root()).join(","));
}

#[test]
fn tar_from_stdin() {
    let tar = sample_tar();
    for (i, bytes) in [tar.clone(), gzip(&tar), zstd(&tar)]
        .into_iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "stdin_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KILN_CONTEXT_TEST_WORK", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // Write in small pieces so the reader sees a real pipe, not one
        // buffer.
        let writer = std::thread::spawn(move || {
            for chunk in bytes.chunks(3) {
                stdin.write_all(chunk).unwrap();
            }
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "case {i}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(
                "TREE .dockerignore,Dockerfile,app/,app/data/,app/data/x.txt,app/main.sh,link,secret.key"
            ),
            "case {i}: {stdout}"
        );
        assert!(stdout.contains("1 passed"), "case {i}: {stdout}");
    }
}

fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

/// A raw header whose name is written as is (the builder refuses `..`).
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[test]
fn escapes_are_rejected_and_nothing_lands_outside() {
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "dotdot",
            tar_with(|b| raw_entry(b, "../outside.txt", tar::EntryType::Regular, None, b"x")),
            "entry ../outside.txt escapes the context (\"..\")".into(),
        ),
        (
            "nested-dotdot",
            tar_with(|b| {
                raw_entry(
                    b,
                    "a/../../outside.txt",
                    tar::EntryType::Regular,
                    None,
                    b"x",
                )
            }),
            "entry a/../../outside.txt escapes the context (\"..\")".into(),
        ),
        (
            "absolute",
            tar_with(|b| raw_entry(b, "/tmp/outside.txt", tar::EntryType::Regular, None, b"x")),
            "entry /tmp/outside.txt is an absolute path".into(),
        ),
        (
            "hardlink",
            tar_with(|b| raw_entry(b, "h", tar::EntryType::Link, Some("../../outside.txt"), b"")),
            "hard link h -> ../../outside.txt escapes the context (\"..\")".into(),
        ),
    ];
    for (name, bytes, reason) in cases {
        let (dir, r) = open_tar_file(&bytes, "c.tar");
        let e = r.unwrap_err();
        let spec = dir.path().join("c.tar");
        assert_eq!(
            e.to_string(),
            format!("build context {}: {reason}", spec.display()),
            "{name}"
        );
        assert!(!dir.path().join("outside.txt").exists(), "{name}");
    }
}

#[test]
fn writes_through_a_symlink_are_rejected() {
    let outside = tempfile::tempdir().unwrap();
    // A symlink to a directory outside, then a file written below it.
    let bytes = tar_with(|b| {
        raw_entry(
            b,
            "evil",
            tar::EntryType::Symlink,
            Some(outside.path().to_str().unwrap()),
            b"",
        );
        raw_entry(b, "evil/pwned", tar::EntryType::Regular, None, b"x");
    });
    let (_dir, r) = open_tar_file(&bytes, "c.tar");
    let e = r.unwrap_err().to_string();
    assert!(e.contains("entry evil/pwned:"), "{e}");
    assert!(e.contains("evil is a symbolic link"), "{e}");
    assert!(!outside.path().join("pwned").exists());

    // A symlink to a file outside, then a regular file of the same name:
    // the link is replaced, the outside file untouched.
    let target = outside.path().join("victim");
    std::fs::write(&target, b"original").unwrap();
    let bytes = tar_with(|b| {
        raw_entry(
            b,
            "f",
            tar::EntryType::Symlink,
            Some(target.to_str().unwrap()),
            b"",
        );
        raw_entry(b, "f", tar::EntryType::Regular, None, b"new");
    });
    let (_dir, r) = open_tar_file(&bytes, "c.tar");
    let ctx = r.unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"original");
    assert_eq!(std::fs::read(ctx.root().join("f")).unwrap(), b"new");
    assert!(!std::fs::symlink_metadata(ctx.root().join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn truncated_and_empty_archives() {
    let gz = gzip(&sample_tar());
    let (dir, r) = open_tar_file(&gz[..gz.len() / 2], "c.tar.gz");
    let e = r.unwrap_err().to_string();
    let prefix = format!("build context {}: ", dir.path().join("c.tar.gz").display());
    assert!(e.starts_with(&prefix), "{e}");
    assert!(
        e.contains("truncated archive") || e.contains("unexpected end of file"),
        "{e}"
    );

    let (dir, r) = open_tar_file(b"", "empty.tar");
    assert_eq!(
        r.unwrap_err().to_string(),
        format!(
            "build context {}: empty archive",
            dir.path().join("empty.tar").display()
        )
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.tar");
    let e = open(
        &format!("tar://{}", missing.display()),
        None,
        &options(dir.path()),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "build context {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn dockerfile_inside_a_materialized_context() {
    let tar = tar_with(|b| {
        raw_entry(
            b,
            "docker/app.Dockerfile",
            tar::EntryType::Regular,
            None,
            b"FROM scratch\n",
        );
        raw_entry(
            b,
            "docker/app.Dockerfile.dockerignore",
            tar::EntryType::Regular,
            None,
            b"*.log\n",
        );
        raw_entry(b, "x.log", tar::EntryType::Regular, None, b"log");
    });
    let (_dir, r) = open_tar_file(&tar, "c.tar");
    let root = r.unwrap().root().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.tar");
    std::fs::write(&file, &tar).unwrap();
    let df = std::path::Path::new("docker/app.Dockerfile");
    let ctx = open(
        &format!("tar://{}", file.display()),
        Some(df),
        &options(&dir.path().join("w")),
    )
    .unwrap();
    assert!(ctx.is_materialized());
    assert_eq!(
        ctx.dockerfile_path(Some(df)),
        ctx.root().join("docker/app.Dockerfile")
    );
    assert_eq!(ctx.dockerfile_path(None), ctx.root().join("Dockerfile"));
    assert_eq!(
        ctx.ignore_file(),
        Some(
            ctx.root()
                .join("docker/app.Dockerfile.dockerignore")
                .as_path()
        )
    );
    assert!(ctx.is_excluded("x.log"));

    // A local directory: a relative Dockerfile path stays as given.
    let local = open(
        root.to_str().unwrap(),
        None,
        &options(&dir.path().join("w2")),
    )
    .unwrap();
    assert!(!local.is_materialized());
    assert_eq!(local.dockerfile_path(Some(df)), df);
}

/// A raw header with a mode.
fn raw_mode_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    mode: u32,
) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
}

/// The shapes that aim the extractor's metadata writes at the host: a
/// directory with mode 6777 later replaced by a symlink to a host file
/// (its deferred mode must not follow the link), a hard link to a symlink
/// that points out (the link itself is linked), a symlink to a directory
/// inside the context with an entry below it (refused: a context archive
/// never writes through its own symlinks), and a device node (refused).
#[test]
fn metadata_and_links_never_reach_the_host() {
    let outside = tempfile::tempdir().unwrap();
    let canary = outside.path().join("canary");
    std::fs::write(&canary, b"host").unwrap();
    std::fs::set_permissions(&canary, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o7777
    };
    let c = canary.to_str().unwrap();
    let bytes = tar_with(|b| {
        raw_mode_entry(b, "d/", tar::EntryType::Directory, None, 0o6777);
        raw_mode_entry(b, "d", tar::EntryType::Symlink, Some(c), 0o777);
        raw_mode_entry(b, "l", tar::EntryType::Symlink, Some(c), 0o777);
        raw_mode_entry(b, "h", tar::EntryType::Link, Some("l"), 0o4777);
        raw_mode_entry(b, "keep/", tar::EntryType::Directory, None, 0o750);
    });
    let (_dir, r) = open_tar_file(&bytes, "c.tar");
    let ctx = r.unwrap();
    assert_eq!(std::fs::read(&canary).unwrap(), b"host");
    assert_eq!(mode(&canary), 0o640, "the host file's mode is unchanged");
    let root = ctx.root();
    assert!(std::fs::symlink_metadata(root.join("d"))
        .unwrap()
        .is_symlink());
    assert!(std::fs::symlink_metadata(root.join("h"))
        .unwrap()
        .is_symlink());
    assert_eq!(mode(&root.join("keep")), 0o750);

    let bytes = tar_with(|b| {
        raw_mode_entry(b, "real/", tar::EntryType::Directory, None, 0o755);
        raw_mode_entry(b, "alias", tar::EntryType::Symlink, Some("real"), 0o777);
        raw_entry(b, "alias/x", tar::EntryType::Regular, None, b"x");
    });
    let (_dir, r) = open_tar_file(&bytes, "c.tar");
    let e = r.unwrap_err().to_string();
    assert!(e.contains("entry alias/x: alias is a symbolic link"), "{e}");

    let bytes = tar_with(|b| raw_mode_entry(b, "sda", tar::EntryType::Block, None, 0o666));
    let (_dir, r) = open_tar_file(&bytes, "c.tar");
    let e = r.unwrap_err().to_string();
    assert!(e.contains("entry sda: unsupported entry type"), "{e}");
}
