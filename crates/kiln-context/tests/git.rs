//! Git contexts: a repository made in the test, served by `git daemon` on
//! loopback and read through `file://`, with a branch, a tag, a
//! subdirectory and a submodule.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use kiln_context::{open, ContextError};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// `base/repo.git` (a working repository):
/// - main: `Dockerfile`, `web/index.html` ("main")
/// - tag v1 on the first main commit; main then moves on ("main2")
/// - dev: `web/index.html` ("dev"), `web/dev-only.txt`
///
/// And `base/lib.git`, added to dev as the submodule `vendor/lib`.
/// Returns the first main commit.
fn make_repos(base: &Path) -> String {
    let lib = base.join("lib.git");
    std::fs::create_dir_all(&lib).unwrap();
    git(&lib, &["init", "-q"]);
    write(&lib, "lib.txt", "library");
    git(&lib, &["add", "."]);
    git(&lib, &["commit", "-q", "-m", "lib"]);

    let repo = base.join("repo.git");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(&repo, "Dockerfile", "FROM scratch\n");
    write(&repo, "web/index.html", "main");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["tag", "v1"]);
    git(&repo, &["checkout", "-q", "-b", "dev"]);
    write(&repo, "web/index.html", "dev");
    write(&repo, "web/dev-only.txt", "only on dev");
    git(&repo, &["add", "."]);
    git(
        &repo,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            "../lib.git",
            "vendor/lib",
        ],
    );
    git(&repo, &["commit", "-q", "-m", "dev"]);
    git(&repo, &["checkout", "-q", "main"]);
    write(&repo, "web/index.html", "main2");
    git(&repo, &["commit", "-q", "-am", "two"]);
    first
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn git_daemon_refs_and_subdirs() {
    let base = tempfile::tempdir().unwrap();
    let first = make_repos(base.path());
    let port = free_port();
    let _daemon = start_server(
        Command::new("git").args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", base.path().display()),
            &base.path().display().to_string(),
        ]),
        port,
        "git daemon",
    );
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            url.clone(),
            vec!["Dockerfile", "web/", "web/index.html"],
            "main2",
        ),
        (
            format!("{url}#dev"),
            vec![
                ".gitmodules",
                "Dockerfile",
                "vendor/",
                "vendor/lib/",
                "web/",
                "web/dev-only.txt",
                "web/index.html",
            ],
            "dev",
        ),
        (
            format!("{url}#refs/heads/dev"),
            vec![
                ".gitmodules",
                "Dockerfile",
                "vendor/",
                "vendor/lib/",
                "web/",
                "web/dev-only.txt",
                "web/index.html",
            ],
            "dev",
        ),
        (
            format!("{url}#v1"),
            vec!["Dockerfile", "web/", "web/index.html"],
            "main",
        ),
        (
            format!("{url}#{first}"),
            vec!["Dockerfile", "web/", "web/index.html"],
            "main",
        ),
        (
            format!("{url}#refs/heads/main#{first}"),
            vec!["Dockerfile", "web/", "web/index.html"],
            "main",
        ),
    ];
    for (spec, want_tree, want_index) in cases {
        let work = tempfile::tempdir().unwrap();
        let ctx =
            open(&spec, None, &options(work.path())).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(tree(ctx.root()), want_tree, "{spec}");
        assert_eq!(read(ctx.root(), "web/index.html"), want_index, "{spec}");
    }

    // `#branch:subdir` makes the subdirectory the context root.
    let work = tempfile::tempdir().unwrap();
    let ctx = open(&format!("{url}#dev:web"), None, &options(work.path())).unwrap();
    assert_eq!(tree(ctx.root()), ["dev-only.txt", "index.html"]);
    assert_eq!(read(ctx.root(), "index.html"), "dev");

    // Kaniko's --git branch= applies when the URL names no ref; sub-path
    // applies after.
    let work = tempfile::tempdir().unwrap();
    let mut o = options(work.path());
    o.git.branch = Some("dev".into());
    o.sub_path = Some("web".into());
    let ctx = open(&url, None, &o).unwrap();
    assert_eq!(read(ctx.root(), "index.html"), "dev");

    // A ref that does not exist.
    let work = tempfile::tempdir().unwrap();
    let e = open(&format!("{url}#nope"), None, &options(work.path())).unwrap_err();
    assert!(matches!(e, ContextError::Git { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("build context {url}#nope: git: ref nope not found")
    );

    // A subdirectory that does not exist.
    let work = tempfile::tempdir().unwrap();
    let e = open(&format!("{url}#dev:nope"), None, &options(work.path())).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "build context {url}#dev:nope: sub-path nope: No such file or directory (os error 2)"
        )
    );
}

#[test]
fn file_url_keep_git_dir_and_submodules() {
    let base = tempfile::tempdir().unwrap();
    make_repos(base.path());
    let url = format!("file://{}/repo.git", base.path().display());

    // Default: no .git, submodule left empty.
    let work = tempfile::tempdir().unwrap();
    let ctx = open(&format!("{url}#dev"), None, &options(work.path())).unwrap();
    assert!(!ctx.root().join(".git").exists());
    assert_eq!(tree(&ctx.root().join("vendor/lib")), Vec::<String>::new());

    // keep_git_dir keeps a repository whose HEAD is the fetched commit.
    let work = tempfile::tempdir().unwrap();
    let mut o = options(work.path());
    o.git.keep_git_dir = true;
    let ctx = open(&format!("{url}#v1"), None, &o).unwrap();
    let head = git(ctx.root(), &["rev-parse", "HEAD"]);
    assert_eq!(
        head,
        git(&base.path().join("repo.git"), &["rev-parse", "v1^{commit}"])
    );
}

#[test]
fn submodules_over_git_daemon() {
    let base = tempfile::tempdir().unwrap();
    make_repos(base.path());
    // The submodule URL is relative (../lib.git), so it resolves against
    // the daemon's URL.
    let port = free_port();
    let _daemon = start_server(
        Command::new("git").args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", base.path().display()),
            &base.path().display().to_string(),
        ]),
        port,
        "git daemon",
    );
    let work = tempfile::tempdir().unwrap();
    let mut o = options(work.path());
    o.git.recurse_submodules = true;
    let ctx = open(&format!("git://127.0.0.1:{port}/repo.git#dev"), None, &o).unwrap();
    assert_eq!(read(ctx.root(), "vendor/lib/lib.txt"), "library");
    assert!(!ctx.root().join("vendor/lib/.git").exists());
    assert!(!ctx.root().join(".git").exists());
}
