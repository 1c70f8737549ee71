//! Hostile layers and archives end to end through the kiln binary: base
//! images in a loopback registry whose layers were written by hand (a
//! directory replaced by a symlink to a host file or directory), the same
//! image as a `COPY --from` source, and `ADD`ed archives with escaping
//! shapes (a symlink then a write through it, `..` and absolute names, a
//! gzip bomb that must stream in bounded memory). Finding 1 of the security
//! review.
//!
//! Every case keeps a host canary in /tmp with known content, mode, owner
//! and mtime and asserts it is unchanged; the build either fails with an
//! error or holds the shape inside the image. Each case runs under
//! `--isolation userns` and `--isolation root` (`isolation_matrix!`). The
//! raw tars, layouts, canaries and builds are in `common/hostile.rs`.
//!
//! Real components only: the kiln binary, the CNCF distribution registry,
//! skopeo, umoci, busybox, gzip and python3.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::hostile::*;
use common::*;

// ---------------------------------------------------------------------------
// Finding 1: a directory replaced by a symlink, in a base image, a COPY
// --from image and an ADDed archive.

/// `d/` 6777 then `d -> <host file>`, `e/` 0777 then `e -> <host dir>`.
fn finding1_layer(c: &HostCanary) -> Vec<u8> {
    Tar::default()
        .dir("d/", 0o6777)
        .symlink("d", &c.file())
        .dir("e/", 0o777)
        .symlink("e", &c.cdir())
        .finish()
}

fn finding1_base_image(isolation: &str) {
    let c = HostCanary::new("f1-base");
    let reg = Registry::plain();
    let image = push_hostile(&reg, "f1-base", finding1_layer(&c));
    let sb = Sandbox::new();
    sb.dockerfile(&format!("FROM {image}\nRUN echo ran > /ran\n"));
    let (out, rootfs) = build(&sb, isolation);
    c.assert_unchanged(&out);
    if let Some(r) = rootfs {
        assert_eq!(
            std::fs::read_link(r.join("d")).expect("d"),
            Path::new(&c.file())
        );
    }
}
isolation_matrix!(
    finding1_chmod_through_symlink_replacing_dir_base_image => finding1_base_image
);

fn finding1_copy_from(isolation: &str) {
    let c = HostCanary::new("f1-from");
    let reg = Registry::plain();
    let image = push_hostile(&reg, "f1-from", finding1_layer(&c));
    let sb = Sandbox::new();
    sb.dockerfile(&format!("FROM scratch\nCOPY --from={image} / /imported/\n"));
    let (out, _) = build(&sb, isolation);
    c.assert_unchanged(&out);
}
isolation_matrix!(
    finding1_chmod_through_symlink_replacing_dir_copy_from => finding1_copy_from
);

fn finding1_add_archive(isolation: &str) {
    let c = HostCanary::new("f1-add");
    let sb = Sandbox::new();
    context_targz(&sb, "evil.tar.gz", &finding1_layer(&c));
    sb.dockerfile("FROM scratch\nADD evil.tar.gz /x/\n");
    let (out, _) = build(&sb, isolation);
    c.assert_unchanged(&out);
}
isolation_matrix!(
    finding1_chmod_through_symlink_replacing_dir_add_archive => finding1_add_archive
);

// ---------------------------------------------------------------------------
// ADDed archives: symlink-then-write, `..`, absolute names.

fn add_symlink_then_write(isolation: &str) {
    let c = HostCanary::new("add-sym");
    let sb = Sandbox::new();
    let climb = format!("{}{}", "../".repeat(40), c.rel());
    let tar = Tar::default()
        .symlink("abs", &c.cdir())
        .file("abs/keep", b"pwn", 0o4777)
        .file("abs/new", b"pwn", 0o644)
        .symlink("rel", &climb)
        .file("rel/canary", b"pwn", 0o4777)
        .symlink("f", &c.file())
        .file("f", b"replaced", 0o4777)
        .finish();
    context_targz(&sb, "evil.tar.gz", &tar);
    sb.dockerfile("FROM scratch\nADD evil.tar.gz /x/\n");
    let (out, rootfs) = build(&sb, isolation);
    c.assert_unchanged(&out);
    if let Some(r) = rootfs {
        assert_eq!(std::fs::read(r.join("x/f")).expect("x/f"), b"replaced");
    }
}
isolation_matrix!(add_archive_symlink_then_write => add_symlink_then_write);

fn add_dotdot_and_absolute(isolation: &str) {
    let c = HostCanary::new("add-dotdot");
    for (i, name) in [
        format!("{}{}/canary", "../".repeat(40), c.rel()),
        c.file(),
        format!("a/../../../../../../../../../../..{}", c.file()),
        // A GNU long name that climbs, before an innocent ustar name.
        format!("long:{}{}/canary", "../".repeat(40), c.rel()),
    ]
    .iter()
    .enumerate()
    {
        let sb = Sandbox::new();
        let tar = match name.strip_prefix("long:") {
            Some(long) => Tar::default()
                .entry(
                    "././@LongLink",
                    b'L',
                    "",
                    0,
                    &[long.as_bytes(), b"\0"].concat(),
                )
                .file("innocent", b"pwn", 0o4777)
                .finish(),
            None => Tar::default().file(name, b"pwn", 0o4777).finish(),
        };
        context_targz(&sb, "evil.tar.gz", &tar);
        sb.dockerfile("FROM scratch\nADD evil.tar.gz /x/\n");
        let (out, rootfs) = build(&sb, isolation);
        c.assert_unchanged(&out);
        if i == 1 {
            // An absolute name lands below the destination.
            let r = built(&out, rootfs);
            let inside = r.join("x").join(c.rel()).join("canary");
            assert_eq!(std::fs::read(inside).expect("inside"), b"pwn");
        }
        if let Some(r) = rootfs_if_built(&sb, &out) {
            assert!(!r.join("x/innocent").exists(), "the ustar name was used");
        }
    }
}
isolation_matrix!(add_archive_dotdot_and_absolute_names => add_dotdot_and_absolute);

// ---------------------------------------------------------------------------
// An ADDed gzip bomb: streamed, not held in memory.

/// 256 MiB of zeros in one file, tarred and gzipped (about 250 KiB).
const ADD_BOMB_MIB: usize = 256;

fn add_gzip_bomb(isolation: &str) {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.context()).expect("mkdir");
    let bomb = sb.context().join("bomb.tar.gz");
    // Through gzip's stdin, so the test never holds the bomb either.
    let script = format!(
        "import sys, tarfile, io\n\
         class Zeros(io.RawIOBase):\n\
         \x20   def __init__(self, n): self.n = n\n\
         \x20   def readable(self): return True\n\
         \x20   def readinto(self, b):\n\
         \x20       k = min(len(b), self.n); b[:k] = bytes(k); self.n -= k; return k\n\
         t = tarfile.open(fileobj=sys.stdout.buffer, mode='w|')\n\
         i = tarfile.TarInfo('bomb'); i.size = {size}\n\
         t.addfile(i, io.BufferedReader(Zeros({size})))\n\
         t.close()\n",
        size = ADD_BOMB_MIB << 20
    );
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("python3 -c \"$1\" | gzip -1 -n > \"$2\"")
        .args(["sh", &script, &bomb.to_string_lossy()])
        .status()
        .expect("python3 and gzip");
    assert!(status.success(), "making the bomb failed");
    assert!(std::fs::metadata(&bomb).expect("bomb").len() < 4 << 20);
    sb.dockerfile("FROM scratch\nADD bomb.tar.gz /x/\n");
    // kiln under python's wait, which reports the children's peak RSS.
    let layout = sb.path("out");
    let measure = "import resource, subprocess, sys\n\
                   r = subprocess.run(sys.argv[1:])\n\
                   print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
                   sys.exit(r.returncode)\n";
    let out = std::process::Command::new("python3")
        .args(["-c", measure, env!("CARGO_BIN_EXE_kiln")])
        .args([
            "build",
            "--isolation",
            isolation,
            "-t",
            "bomb:latest",
            "--output",
        ])
        .arg(format!("type=oci,dest={}", layout.display()))
        .arg(sb.context())
        .env("KILN_CACHE_DIR", sb.path("cache"))
        .output()
        .expect("python3");
    assert_success(&out);
    let kib: u64 = stdout(&out)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("peak RSS");
    eprintln!("ADD of a {ADD_BOMB_MIB} MiB gzip bomb: kiln's peak RSS {kib} KiB");
    assert!(
        kib < 160 * 1024,
        "kiln's peak RSS {kib} KiB for a {ADD_BOMB_MIB} MiB bomb"
    );
    let r = umoci_unpack(&layout, "latest", &sb.path("bundle"));
    assert_eq!(
        std::fs::metadata(r.join("x/bomb")).expect("bomb").len(),
        (ADD_BOMB_MIB as u64) << 20
    );
}
isolation_matrix!(add_archive_gzip_bomb_in_bounded_memory => add_gzip_bomb);
