//! https tarball contexts, served over plain http on loopback by a small
//! HTTP/1.1 server thread.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kiln_context::open;
use kiln_testkit::http::{Response, TinyServer};

/// Serves `files` (path → body) on 127.0.0.1 with kiln-testkit's tiny
/// server; anything else is a 404. A path starting with `/cut` announces
/// twice its length, then hangs up.
fn serve(files: Vec<(&'static str, Vec<u8>)>) -> (u16, TinyServer) {
    let server = TinyServer::start(move |r| match files.iter().find(|(p, _)| *p == r.path()) {
        Some((p, body)) => {
            let mut resp = Response::ok(body.clone());
            if p.starts_with("/cut") {
                resp.announce_length = Some(body.len() * 2);
            }
            resp
        }
        None => Response::not_found(),
    });
    (server.port(), server)
}

#[test]
fn http_tarball_gzip_and_zstd() {
    let tar = sample_tar();
    let (port, _) = serve(vec![
        ("/ctx.tar.gz", gzip(&tar)),
        ("/ctx.tar.zst", zstd(&tar)),
        ("/ctx.tar", tar),
    ]);
    for name in ["ctx.tar.gz", "ctx.tar.zst", "ctx.tar"] {
        let work = tempfile::tempdir().unwrap();
        let ctx = open(
            &format!("http://127.0.0.1:{port}/{name}"),
            None,
            &options(work.path()),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_sample(&ctx);
    }
}

#[test]
fn large_tarball_streams_through() {
    // 48 MiB of file data in 3 files: far more than the channel holds.
    let mut b = tar::Builder::new(Vec::new());
    let body: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    for name in ["a.bin", "b.bin", "c.bin"] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, body.as_slice()).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let (port, _) = serve(vec![("/big.tar", tar)]);
    let work = tempfile::tempdir().unwrap();
    let ctx = open(
        &format!("http://127.0.0.1:{port}/big.tar"),
        None,
        &options(work.path()),
    )
    .unwrap();
    for name in ["a.bin", "b.bin", "c.bin"] {
        assert!(
            std::fs::read(ctx.root().join(name)).unwrap() == body,
            "{name}"
        );
    }
}

#[test]
fn http_errors_name_the_url_not_the_credentials() {
    let (port, seen) = serve(vec![]);
    let work = tempfile::tempdir().unwrap();
    let e = open(
        &format!("http://user:hunter2@127.0.0.1:{port}/missing.tar.gz"),
        None,
        &options(work.path()),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "build context http://user:***@127.0.0.1:{port}/missing.tar.gz: HTTP 404 Not Found"
        )
    );
    // The credentials were sent to the server, only hidden from output.
    assert!(seen.requests().iter().any(|r| r
        .header("authorization")
        .is_some_and(|v| v.starts_with("Basic"))));

    let closed = free_port();
    let e = open(
        &format!("http://127.0.0.1:{closed}/x.tar"),
        None,
        &options(work.path()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with(&format!("build context http://127.0.0.1:{closed}/x.tar: ")),
        "{e}"
    );
    assert!(e.contains("Connection refused"), "{e}");
}

#[test]
fn connection_lost_mid_download() {
    let mut b = tar::Builder::new(Vec::new());
    let body = vec![7u8; 1024 * 1024];
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "big.bin", body.as_slice()).unwrap();
    let tar = b.into_inner().unwrap();
    let (port, _) = serve(vec![("/cut.tar", tar[..tar.len() / 2].to_vec())]);
    let work = tempfile::tempdir().unwrap();
    let spec = format!("http://127.0.0.1:{port}/cut.tar");
    let e = open(&spec, None, &options(work.path()))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("build context {spec}: entry big.bin: ")),
        "{e}"
    );
    assert!(e.contains("error decoding response body"), "{e}");
}
