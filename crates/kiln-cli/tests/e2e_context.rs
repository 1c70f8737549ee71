//! Contexts from elsewhere than a directory, through the real binary: a tar
//! stream on stdin and a git repository (`file://` URL with `#ref:subdir`).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn context_from_a_tar_on_stdin() {
    let sb = Sandbox::new();
    sb.write("Dockerfile", "FROM scratch\nCOPY msg.txt /msg.txt\n");
    sb.write("msg.txt", "from stdin\n");
    let tar = run_tool_bytes(
        "tar",
        &["-C", &sb.context().to_string_lossy(), "-czf", "-", "."],
    );
    let dest = format!("type=oci,dest={}", sb.path("out").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "-t", "s:1", "--output", &dest, "-"])
        .env("KILN_CACHE_DIR", sb.path("cache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&tar)
        .expect("write tar");
    let out = child.wait_with_output().expect("wait");
    assert_success(&out);
    let rootfs = umoci_unpack(&sb.path("out"), "1", &sb.path("bundle"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("msg.txt")).expect("msg"),
        "from stdin\n"
    );
}

#[test]
fn context_from_git_with_ref_and_subdir() {
    let sb = Sandbox::new();
    let repo = sb.path("repo");
    std::fs::create_dir_all(repo.join("web")).expect("mkdir");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=kiln", "-c", "user.email=kiln@example.com"])
            .args(args)
            .current_dir(&repo)
            .output()
            .expect("git");
        assert_success(&out);
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("web/Dockerfile"),
        "FROM scratch\nCOPY page.html /srv/\n",
    )
    .expect("w");
    std::fs::write(repo.join("web/page.html"), "v1\n").expect("w");
    git(&["add", "."]);
    git(&["commit", "-qm", "v1"]);
    git(&["checkout", "-qb", "release"]);
    std::fs::write(repo.join("web/page.html"), "release\n").expect("w");
    git(&["commit", "-qam", "release"]);
    git(&["checkout", "-q", "main"]);

    let url = format!("file://{}#release:web", repo.display());
    let dest = format!("type=oci,dest={}", sb.path("out").display());
    let out = sb.kiln(&["build", "-t", "g:1", "--output", &dest, &url]);
    assert_success(&out);
    let rootfs = umoci_unpack(&sb.path("out"), "1", &sb.path("bundle"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/page.html")).expect("page"),
        "release\n"
    );
    assert!(!rootfs.join("srv/.git").exists());
}
