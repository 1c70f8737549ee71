//! Git contexts: a repository made in the test, served by `git daemon` on
//! loopback and read through `file://`, with a branch, a tag, a
//! subdirectory and a submodule.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// Serves the repositories under `root` over smart HTTP on 127.0.0.1:
/// each request runs `git http-backend` as a CGI program. Returns the port.
fn serve_smart_http(root: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let root = root.clone();
            std::thread::spawn(move || cgi(stream, &root));
        }
    });
    port
}

fn cgi(mut stream: std::net::TcpStream, root: &Path) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    reader.read_line(&mut request).unwrap();
    let mut parts = request.split_whitespace();
    let method = parts.next().unwrap_or("GET").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut content_type = String::new();
    let mut length = 0usize;
    let mut encoding = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let (k, v) = line.split_once(':').unwrap_or((&line, ""));
        match k.to_ascii_lowercase().as_str() {
            "content-type" => content_type = v.trim().to_string(),
            "content-length" => length = v.trim().parse().unwrap_or(0),
            "content-encoding" => encoding = v.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", &content_type)
        .env("CONTENT_LENGTH", length.to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if !encoding.is_empty() {
        cmd.env("HTTP_CONTENT_ENCODING", &encoding);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    // CGI output: headers (with an optional Status:), blank line, body.
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout[..split.0]).to_string();
    let body = &out.stdout[split.0 + split.1..];
    let mut status = "200 OK".to_string();
    let mut headers = String::new();
    for line in head.lines() {
        match line.strip_prefix("Status:") {
            Some(s) => status = s.trim().to_string(),
            None => headers.push_str(&format!("{line}\r\n")),
        }
    }
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(body);
}

#[test]
fn smart_http_with_branch_and_subdir() {
    let base = tempfile::tempdir().unwrap();
    let first = make_repos(base.path());
    let port = serve_smart_http(base.path().to_path_buf());
    let url = format!("http://127.0.0.1:{port}/repo.git");

    let work = tempfile::tempdir().unwrap();
    let ctx = open(&format!("{url}#dev:web"), None, &options(work.path())).unwrap();
    assert_eq!(tree(ctx.root()), ["dev-only.txt", "index.html"]);
    assert_eq!(read(ctx.root(), "index.html"), "dev");

    let work = tempfile::tempdir().unwrap();
    let ctx = open(&format!("{url}#{first}"), None, &options(work.path())).unwrap();
    assert_eq!(read(ctx.root(), "web/index.html"), "main");

    // Credentials in the URL never reach the message.
    let work = tempfile::tempdir().unwrap();
    let spec = format!("http://user:s3cret@127.0.0.1:{port}/missing.git");
    let e = open(&spec, None, &options(work.path()))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "build context http://user:***@127.0.0.1:{port}/missing.git: git: "
        )),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
}
