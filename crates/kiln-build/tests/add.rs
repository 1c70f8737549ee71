//! ADD: local archives (every compression, by content), --unpack=false,
//! archive breakouts, and URLs served by a real HTTP server on loopback
//! (file names, 0600, Last-Modified, --checksum, 404, refused connections).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_build::copy::{copy, AddOptions, CopyError, CopyRequest};
use kiln_build::fetch::HttpFetcher;
use kiln_testkit::http::{Response, TinyServer};
use kiln_testkit::net::free_port;
use sha2::Digest;

fn tar_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(10);
    h.set_gid(20);
    h.set_mtime(1_500_000_000);
    h.set_size(0);
    b.append_data(&mut h, "pkg/", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o4755);
    h.set_uid(10);
    h.set_gid(20);
    h.set_mtime(1_600_000_000);
    h.set_size(5);
    b.append_data(&mut h, "pkg/tool", &b"tool\n"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, "pkg/link", "tool").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_mode(0o644);
    h.set_size(0);
    b.append_link(&mut h, "pkg/hard", "pkg/tool").unwrap();
    b.into_inner().unwrap()
}

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "tar" => data.to_vec(),
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::stream::encode_all(data, 3).unwrap(),
        _ => unreachable!(),
    }
}

struct Env {
    ctx: tempfile::TempDir,
    root: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
    http: HttpFetcher,
}

fn env() -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let http = HttpFetcher::new(rt.handle().clone()).unwrap();
    Env {
        ctx: tempfile::tempdir().unwrap(),
        root: tempfile::tempdir().unwrap(),
        _rt: rt,
        http,
    }
}

fn add_req<'a>(e: &'a Env, sources: &[&str], dest: &str) -> CopyRequest<'a> {
    CopyRequest {
        src_root: e.ctx.path(),
        src_filter: None,
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.into(),
        workdir: "/".into(),
        dest_root: e.root.path(),
        chown: None,
        chmod: None,
        exclude: Vec::new(),
        parents: false,
        heredocs: Vec::new(),
        add: Some(AddOptions {
            unpack: None,
            checksum: None,
            http: &e.http,
        }),
        preserve_owner: false,
        link_unchanged: false,
    }
}

fn meta(root: &Path, rel: &str) -> fs::Metadata {
    fs::symlink_metadata(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn local_archives_are_extracted_by_content() {
    for kind in ["tar", "gz", "bz2", "xz", "zst"] {
        let e = env();
        // The name says nothing: detection is by magic bytes.
        fs::write(
            e.ctx.path().join("archive.bin"),
            compress(kind, &tar_bytes()),
        )
        .unwrap();
        let changed = copy(&add_req(&e, &["archive.bin"], "/opt")).unwrap();
        let r = e.root.path();
        assert_eq!(
            fs::read_to_string(r.join("opt/pkg/tool")).unwrap(),
            "tool\n",
            "{kind}"
        );
        let tool = meta(r, "opt/pkg/tool");
        assert_eq!(tool.mode() & 0o7777, 0o4755, "{kind}");
        assert_eq!(
            (tool.uid(), tool.gid()),
            (10, 20),
            "tar owners are kept ({kind})"
        );
        assert_eq!(tool.mtime(), 1_600_000_000);
        let dir = meta(r, "opt/pkg");
        assert_eq!(dir.mode() & 0o7777, 0o750);
        assert_eq!(
            dir.mtime(),
            1_500_000_000,
            "dir mtime set after its contents"
        );
        assert_eq!(
            fs::read_link(r.join("opt/pkg/link")).unwrap().to_str(),
            Some("tool")
        );
        assert_eq!(meta(r, "opt/pkg/hard").ino(), tool.ino());
        let paths: Vec<&str> = changed.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "opt",
                "opt/pkg",
                "opt/pkg/hard",
                "opt/pkg/link",
                "opt/pkg/tool"
            ]
        );
    }
}

#[test]
fn chown_overrides_archive_owners_and_unpack_false_copies() {
    let e = env();
    fs::write(e.ctx.path().join("a.tar.gz"), compress("gz", &tar_bytes())).unwrap();
    let mut q = add_req(&e, &["a.tar.gz"], "/x/");
    q.chown = Some("3:4".into());
    let changed = copy(&q).unwrap();
    let r = e.root.path();
    let tool = meta(r, "x/pkg/tool");
    assert_eq!((tool.uid(), tool.gid()), (3, 4));
    assert!(changed.iter().all(|c| (c.uid, c.gid) == (3, 4)));
    let mut q = add_req(&e, &["a.tar.gz"], "/y/");
    if let Some(a) = q.add.as_mut() {
        a.unpack = Some(false);
    }
    copy(&q).unwrap();
    assert!(meta(r, "y/a.tar.gz").is_file());
    // COPY never extracts
    let mut q = add_req(&e, &["a.tar.gz"], "/z/");
    q.add = None;
    copy(&q).unwrap();
    assert!(meta(r, "z/a.tar.gz").is_file());
    // a non-archive with an archive name is copied as is
    fs::write(e.ctx.path().join("fake.tar.gz"), "not an archive").unwrap();
    copy(&add_req(&e, &["fake.tar.gz"], "/f/")).unwrap();
    assert_eq!(
        fs::read_to_string(r.join("f/fake.tar.gz")).unwrap(),
        "not an archive"
    );
}

#[test]
fn archive_breakout_is_rejected() {
    let e = env();
    let mut data = Vec::new();
    {
        let mut b = tar::Builder::new(&mut data);
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(4);
        // tar::Builder refuses "..": write the name into the header by hand.
        let name = b"../evil";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"evil"[..]).unwrap();
        b.finish().unwrap();
    }
    fs::write(e.ctx.path().join("evil.tar"), &data).unwrap();
    let err = copy(&add_req(&e, &["evil.tar"], "/in/")).unwrap_err();
    assert!(
        err.to_string()
            .contains("\"../evil\" leads outside the destination"),
        "{err}"
    );
    assert!(!e.root.path().parent().unwrap().join("evil").exists());
}

/// Status, extra headers and body of one canned response.
type Route = (u16, Vec<(String, String)>, Vec<u8>);

/// kiln-testkit's tiny HTTP/1.1 server on 127.0.0.1 serving fixed
/// responses (404 for any other path); returns its `http://` URL.
fn serve(routes: HashMap<String, Route>) -> String {
    TinyServer::start(move |r| {
        let (status, headers, body) =
            routes
                .get(&r.target)
                .cloned()
                .unwrap_or((404, vec![], b"not found".to_vec()));
        let mut resp = Response::new(status, body);
        resp.headers = headers;
        resp
    })
    .url()
}

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn urls_download_with_name_mode_mtime_and_checksum() {
    let tgz = compress("gz", &tar_bytes());
    let mut routes = HashMap::new();
    routes.insert(
        "/releases/tool.tar.gz".to_string(),
        (
            200,
            vec![(
                "Last-Modified".into(),
                "Wed, 21 Oct 2015 07:28:00 GMT".into(),
            )],
            tgz.clone(),
        ),
    );
    routes.insert("/plain".to_string(), (200, vec![], b"plain body".to_vec()));
    let base = serve(routes);
    let e = env();
    let r = e.root.path();
    let url = format!("{base}/releases/tool.tar.gz");
    let changed = copy(&add_req(&e, &[&url], "/downloads/")).unwrap();
    // Never extracted, named after the URL, 0600, mtime from Last-Modified.
    let m = meta(r, "downloads/tool.tar.gz");
    assert_eq!(fs::read(r.join("downloads/tool.tar.gz")).unwrap(), tgz);
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!(m.mtime(), 1_445_412_480);
    assert_eq!((m.uid(), m.gid()), (0, 0));
    let paths: Vec<&str> = changed.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, vec!["downloads", "downloads/tool.tar.gz"]);
    // Destination without a slash is the file itself; --chmod applies.
    let mut q = add_req(&e, &[&format!("{base}/plain")], "/etc/thing");
    q.chmod = Some("644".into());
    copy(&q).unwrap();
    assert_eq!(
        fs::read_to_string(r.join("etc/thing")).unwrap(),
        "plain body"
    );
    assert_eq!(meta(r, "etc/thing").mode() & 0o7777, 0o644);
    // Matching checksum.
    let mut q = add_req(&e, &[&url], "/ok");
    if let Some(a) = q.add.as_mut() {
        a.checksum = Some(format!("sha256:{}", sha(&tgz)));
    }
    copy(&q).unwrap();
    assert!(r.join("ok").is_file());
    // Mismatch: names the URL and both digests, writes nothing.
    let wrong = "0".repeat(64);
    let mut q = add_req(&e, &[&url], "/bad/dir/");
    if let Some(a) = q.add.as_mut() {
        a.checksum = Some(format!("sha256:{wrong}"));
    }
    let err = copy(&q).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "checksum mismatch for {url}: expected sha256:{wrong}, got sha256:{}",
            sha(&tgz)
        )
    );
    assert!(!r.join("bad").exists());
    let leftovers: Vec<_> = fs::read_dir(r)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".kiln"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn url_errors_name_the_url() {
    let base = serve(HashMap::new());
    let e = env();
    let url = format!("{base}/missing.bin");
    let err = copy(&add_req(&e, &[&url], "/x/")).unwrap_err();
    assert_eq!(err.to_string(), format!("{url}: server answered 404"));
    assert!(!e.root.path().join("x").exists());
    // A port nothing listens on.
    let url = format!("http://127.0.0.1:{}/file", free_port());
    let err = copy(&add_req(&e, &[&url], "/y/")).unwrap_err();
    assert!(matches!(err, CopyError::Fetch(_)), "{err}");
    assert!(err.to_string().starts_with(&url), "{err}");
    // git sources are not supported yet; COPY refuses URLs
    let err = copy(&add_req(&e, &["https://example.com/repo.git#main"], "/g/")).unwrap_err();
    assert!(matches!(err, CopyError::GitNotSupported { .. }), "{err}");
    let mut q = add_req(&e, &[&url], "/c/");
    q.add = None;
    assert!(matches!(copy(&q), Err(CopyError::UrlInCopy { .. })));
    // --checksum needs one URL source
    fs::write(e.ctx.path().join("f"), "f").unwrap();
    let mut q = add_req(&e, &["f"], "/c/");
    if let Some(a) = q.add.as_mut() {
        a.checksum = Some(format!("sha256:{}", "0".repeat(64)));
    }
    assert!(matches!(copy(&q), Err(CopyError::ChecksumNeedsUrl)));
}
