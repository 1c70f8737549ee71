//! Hostile layer tars against `apply_layer`: the shapes an attacker can put
//! in a base image layer's names and links (traversal, absolute names, PAX
//! and GNU long names that disagree with the ustar name, PAX sizes that
//! desynchronise the stream, writes through symlinks, a directory replaced
//! by a symlink before its deferred chmod/chown, hardlinks and whiteouts
//! through links, duplicates, device nodes, setuid files). Legitimate
//! shapes images rely on (symlinks with more `..` than their depth,
//! replaced `/bin/sh`, merged-usr, `/var/run -> /run`, gzip layers) must
//! keep applying.
//!
//! Each test keeps a host canary beside the destination root, with known
//! content, mode, owner, mtime and inode, and asserts it is unchanged; the
//! layer either fails with an error or lands inside the root. The raw tar
//! writer and the canary scene are in `common/hostile.rs`.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::hostile::*;
use kiln_image::ApplyOptions;

// ---------------------------------------------------------------------------
// Names that leave the root.

#[test]
fn dotdot_names_are_refused() {
    let s = Scene::new();
    let file_up = s.climb(0, "outside/canary");
    for name in [
        "../outside/canary",
        "./../outside/canary",
        "a/../../outside/canary",
        file_up.as_str(),
        "a/b/../../../outside/cdir/keep",
    ] {
        let tar = RawTar::new().file(name, b"pwn", 0o777).finish();
        let err = assert_clear_error(s.apply_plain(&tar));
        assert!(err.contains(".."), "{name}: {err}");
        s.assert_canaries();
    }
    // A directory entry and a symlink named with `..` too.
    let tar = RawTar::new().dir("../outside/cdir/", 0o777).finish();
    assert_clear_error(s.apply_plain(&tar));
    let tar = RawTar::new().symlink("../outside/canary", "/x").finish();
    assert_clear_error(s.apply_plain(&tar));
    s.assert_canaries();
}

#[test]
fn absolute_names_land_inside_the_root() {
    let s = Scene::new();
    let keep = format!("{}/keep", s.dir_s());
    let tar = RawTar::new()
        .file(s.file_s(), b"pwn", 0o4777)
        .file(&keep, b"pwn", 0o4777)
        .dir(s.dir_s(), 0o777)
        .finish();
    s.apply_plain(&tar)
        .expect("absolute names are made relative");
    s.assert_canaries();
    assert_eq!(fs::read(s.root.join(s.file_rel())).expect("inside"), b"pwn");
    assert_eq!(mode_of(&s.root.join(s.dir_rel())), 0o777);
}

#[test]
fn pax_path_that_differs_from_the_ustar_name() {
    let s = Scene::new();
    // The ustar name is innocent, the PAX path climbs: refused.
    let tar = RawTar::new()
        .pax(&[("path", b"../outside/canary")])
        .file("innocent", b"pwn", 0o644)
        .finish();
    let err = assert_clear_error(s.apply_plain(&tar));
    assert!(err.contains(".."), "{err}");
    assert!(!s.root.join("innocent").exists(), "the ustar name was used");
    // The PAX path is absolute: made relative, inside the root.
    let tar = RawTar::new()
        .pax(&[("path", s.file_s().as_bytes())])
        .file("innocent2", b"pwn", 0o644)
        .finish();
    s.apply_plain(&tar).expect("contained");
    assert_eq!(fs::read(s.root.join(s.file_rel())).expect("inside"), b"pwn");
    assert!(!s.root.join("innocent2").exists());
    // The ustar name climbs, the PAX path is innocent: the PAX path wins.
    let tar = RawTar::new()
        .pax(&[("path", b"fine")])
        .file("../outside/canary", b"pwn", 0o644)
        .finish();
    s.apply_plain(&tar).expect("the PAX path is the name");
    assert_eq!(fs::read(s.root.join("fine")).expect("fine"), b"pwn");
    // A PAX linkpath that climbs, on a hardlink: refused.
    let tar = RawTar::new()
        .pax(&[("linkpath", b"../outside/canary")])
        .hardlink("h", "fine")
        .finish();
    assert_clear_error(s.apply_plain(&tar));
    s.assert_canaries();
}

#[test]
fn gnu_long_names_that_differ_from_the_ustar_name() {
    let s = Scene::new();
    let deep = format!("{}../outside/canary", "x/".repeat(60));
    let climb = format!("{}{}", "../".repeat(40), "outside/canary");
    for long in [deep.as_str(), climb.as_str()] {
        let tar = RawTar::new()
            .gnu_longname(long)
            .file("innocent", b"pwn", 0o644)
            .finish();
        let err = assert_clear_error(s.apply_plain(&tar));
        assert!(err.contains(".."), "{err}");
        assert!(!s.root.join("innocent").exists(), "the ustar name was used");
    }
    // A long absolute name: inside the root.
    let long_abs = format!("{}/{}", s.file_s(), "y".repeat(120));
    let tar = RawTar::new()
        .dir(s.file_s(), 0o755)
        .gnu_longname(&long_abs)
        .file("innocent", b"pwn", 0o644)
        .finish();
    s.apply_plain(&tar).expect("contained");
    assert_eq!(
        fs::read(s.root.join(long_abs.trim_start_matches('/'))).expect("inside"),
        b"pwn"
    );
    // A symlink whose long link name points out, then a write through it.
    let long_target = format!("{}{}", s.dir_s(), "/.".repeat(60));
    let tar = RawTar::new()
        .gnu_longlink(&long_target)
        .symlink("esc", "innocent")
        .file("esc/keep", b"pwn", 0o644)
        .finish();
    let r = s.apply_plain(&tar);
    eprintln!("long link name then write through it: {r:?}");
    s.assert_canaries();
}

/// The header says one size, PAX another: a reader that honours one sees
/// the entry's data as the next headers (hidden entries), a reader that
/// honours the other does not. Whichever way kiln reads it, nothing leaves
/// the root.
#[test]
fn pax_size_that_differs_from_the_header_size() {
    let s = Scene::new();
    // Hidden entries: a symlink out and writes through it.
    let hidden = RawTar::new()
        .symlink("esc", s.dir_s())
        .file("esc/keep", b"pwn", 0o4777)
        .symlink("f", s.file_s())
        .file("f", b"pwn", 0o4777)
        .out
        .clone();
    for (pax_size, header_size) in [
        (0u64, hidden.len() as u64),
        (hidden.len() as u64, 0u64),
        (1u64, hidden.len() as u64),
    ] {
        let size = pax_size.to_string();
        let mut t = RawTar::new();
        t.pax(&[("size", size.as_bytes())]);
        t.raw(Raw {
            size: header_size,
            data: &hidden,
            ..Raw::new("carrier", b'0')
        });
        let tar = t.finish();
        let r = s.apply_plain(&tar);
        eprintln!("pax size {pax_size}, header size {header_size}: {r:?}");
        s.assert_canaries();
    }
}

// ---------------------------------------------------------------------------
// Writes through symlinks.

#[test]
fn symlink_then_write_through_it_stays_inside() {
    let s = Scene::new();
    let climb = s.climb(0, "outside/cdir");
    let climb_file = s.climb(1, "outside/canary");
    let tar = RawTar::new()
        // Absolute, relative climbing, and chained links to the canary dir.
        .symlink("abs", s.dir_s())
        .file("abs/keep", b"pwn", 0o4777)
        .file("abs/new", b"pwn", 0o644)
        .dir("abs/newdir/", 0o777)
        .symlink("rel", &climb)
        .file("rel/keep", b"pwn", 0o4777)
        .symlink("a", "b")
        .symlink("b", s.dir_s())
        .file("a/keep", b"pwn", 0o4777)
        // A link to the canary file, then a file of the same name (replaces
        // the link, does not write through it).
        .dir("d/", 0o755)
        .symlink("d/f", &climb_file)
        .file("d/f", b"pwn", 0o4777)
        .finish();
    s.apply_plain(&tar).expect("contained");
    s.assert_canaries();
    let inside = s.root.join(s.dir_rel());
    assert_eq!(fs::read(inside.join("keep")).expect("inside"), b"pwn");
    assert_eq!(fs::read(inside.join("new")).expect("inside"), b"pwn");
    assert!(inside.join("newdir").is_dir());
    assert_eq!(
        fs::read(s.root.join("outside/cdir/keep")).expect("rel"),
        b"pwn"
    );
    assert!(!fs::symlink_metadata(s.root.join("d/f"))
        .expect("d/f")
        .file_type()
        .is_symlink());
}

/// A symlink loop, and a link chain that is too long, cannot hang apply.
#[test]
fn symlink_loops_are_refused() {
    let s = Scene::new();
    let tar = RawTar::new()
        .symlink("loop1", "loop2")
        .symlink("loop2", "loop1")
        .file("loop1/x", b"pwn", 0o644)
        .finish();
    assert_clear_error(s.apply_plain(&tar));
    s.assert_canaries();
}

// ---------------------------------------------------------------------------
// Finding 1: a directory's deferred metadata applied through the symlink
// that replaced it.

/// `d/` (mode 6777), then `d -> <host file>`: the deferred chmod of `d`
/// must not reach the host file.
#[test]
fn finding1_chmod_through_symlink_replacing_dir_file() {
    let s = Scene::new();
    let tar = RawTar::new()
        .dir("d/", 0o6777)
        .symlink("d", s.file_s())
        .finish();
    let r = s.apply_plain(&tar);
    s.assert_canaries();
    if r.is_ok() {
        let link = fs::read_link(s.root.join("d")).expect("d is the symlink");
        assert_eq!(link, s.file);
    }
}

/// The same with a relative link that climbs out of the root.
#[test]
fn finding1_chmod_through_symlink_replacing_dir_relative() {
    let s = Scene::new();
    let up = s.climb(1, "outside/canary");
    let tar = RawTar::new()
        .dir("a/", 0o755)
        .dir("a/d/", 0o6777)
        .symlink("a/d", &up)
        .finish();
    let _ = s.apply_plain(&tar);
    s.assert_canaries();
}

/// `d/` (mode 0777), then `d -> <host dir>`: the host directory keeps its
/// mode.
#[test]
fn finding1_chmod_through_symlink_replacing_dir_directory() {
    let s = Scene::new();
    let tar = RawTar::new()
        .dir("d/", 0o777)
        .symlink("d", s.dir_s())
        .finish();
    let _ = s.apply_plain(&tar);
    s.assert_canaries();
}

/// As root with ownership applied: the directory entry's owner (and its
/// setuid/setgid mode) must not reach the host file or directory either.
#[test]
fn finding1_chmod_through_symlink_replacing_dir_chown_as_root() {
    assert!(
        is_root(),
        "this test applies ownership and must run as root (CI runs it as root)"
    );
    let s = Scene::new();
    let opts = ApplyOptions {
        same_owner: true,
        protected: Vec::new(),
    };
    let tar = RawTar::new()
        .dir_owned("d/", 0o6777, 0)
        .symlink("d", s.file_s())
        .dir_owned("e/", 0o6777, 0)
        .symlink("e", s.dir_s())
        .finish();
    let _ = s.apply(&tar, &opts);
    s.assert_canaries();
}

/// A directory replaced by a symlink through a longer detour: the directory,
/// a file removing it, then the symlink; and a directory whose own child
/// entry comes after the replacement.
#[test]
fn finding1_chmod_through_symlink_replacing_dir_after_detours() {
    let s = Scene::new();
    let tar = RawTar::new()
        .dir("d/", 0o6777)
        .file("d", b"now a file", 0o644)
        .symlink("d", s.file_s())
        .dir("p/", 0o755)
        .dir("p/q/", 0o777)
        .file("p/q/x", b"x", 0o644)
        .symlink("p/q", s.dir_s())
        .finish();
    let _ = s.apply_plain(&tar);
    s.assert_canaries();
}

// ---------------------------------------------------------------------------
// Hardlinks.

#[test]
fn hardlinks_to_outside_or_through_symlinks_stay_inside() {
    let s = Scene::new();
    // Climbing, absolute, and through a symlinked parent: all refused or
    // pointing inside the root (where there is no such file).
    for target in ["../outside/canary", "a/../../outside/canary"] {
        let tar = RawTar::new().hardlink("h", target).finish();
        assert_clear_error(s.apply_plain(&tar));
    }
    let tar = RawTar::new().hardlink("h", s.file_s()).finish();
    assert_clear_error(s.apply_plain(&tar));
    let tar = RawTar::new()
        .symlink("l", s.dir_s())
        .hardlink("h", "l/keep")
        .finish();
    assert_clear_error(s.apply_plain(&tar));
    s.assert_canaries();

    // A hardlink to a symlink that points out: the link is to the symlink
    // itself, never to the host file; writing a file over it replaces it.
    let tar = RawTar::new()
        .symlink("sl", s.file_s())
        .hardlink("h2", "sl")
        .file("h2", b"pwn", 0o4777)
        .hardlink("h3", "sl")
        .finish();
    let r = s.apply_plain(&tar);
    s.assert_canaries();
    if r.is_ok() {
        let h3 = fs::symlink_metadata(s.root.join("h3")).expect("h3");
        assert!(h3.file_type().is_symlink(), "h3 is the symlink itself");
        assert_eq!(fs::read(s.root.join("h2")).expect("h2"), b"pwn");
    }
}

// ---------------------------------------------------------------------------
// Whiteouts and opaque markers.

#[test]
fn whiteouts_naming_dotdot_are_refused() {
    let s = Scene::new();
    for name in [".wh..", "a/.wh..", ".wh...", "../outside/.wh.canary"] {
        let tar = RawTar::new().dir("a/", 0o755).file(name, b"", 0).finish();
        assert_clear_error(s.apply_plain(&tar));
        s.assert_canaries();
    }
}

#[test]
fn whiteouts_and_opaque_markers_through_symlinks_stay_inside() {
    let s = Scene::new();
    let up = s.climb(0, "outside");
    let tar = RawTar::new()
        .symlink("abs", s.dir_s())
        .file("abs/.wh.keep", b"", 0)
        .symlink("rel", &up)
        .file("rel/.wh.canary", b"", 0)
        .file("rel/.wh.cdir", b"", 0)
        .symlink("op", s.dir_s())
        .file("op/.wh..wh..opq", b"", 0)
        .symlink("op2", &up)
        .file("op2/.wh..wh..opq", b"", 0)
        .finish();
    let _ = s.apply_plain(&tar);
    s.assert_canaries();
    // Again in a later layer, over a root that already holds the links.
    let _ = s.apply_plain(
        &RawTar::new()
            .file("abs/.wh.keep", b"", 0)
            .file("rel/.wh.cdir", b"", 0)
            .file("op/.wh..wh..opq", b"", 0)
            .finish(),
    );
    s.assert_canaries();
}

// ---------------------------------------------------------------------------
// Duplicates, devices, setuid.

#[test]
fn duplicate_entries_end_as_the_last_one() {
    let s = Scene::new();
    let tar = RawTar::new()
        .file("x", b"first", 0o644)
        .dir("x/", 0o755)
        .file("x/child", b"child", 0o644)
        .file("x", b"last", 0o600)
        .dir("y/", 0o700)
        .symlink("y", s.dir_s())
        .dir("y/", 0o751)
        .file("y/z", b"z", 0o644)
        .symlink("w", s.file_s())
        .symlink("w", "elsewhere")
        .finish();
    let r = s.apply_plain(&tar);
    s.assert_canaries();
    r.expect("duplicates are legal");
    assert_eq!(fs::read(s.root.join("x")).expect("x"), b"last");
    let y = fs::symlink_metadata(s.root.join("y")).expect("y");
    assert!(y.is_dir(), "y ends as a directory");
    assert_eq!(fs::read(s.root.join("y/z")).expect("y/z"), b"z");
    assert_eq!(
        fs::read_link(s.root.join("w")).expect("w"),
        Path::new("elsewhere")
    );
}

/// A directory's deferred metadata belongs to the directory: when a later
/// entry of the same layer replaces it (a file, a symlink, a device), the
/// replacement keeps its own mode and owner.
#[test]
fn deferred_dir_metadata_is_dropped_when_a_later_entry_replaces_it() {
    let s = Scene::new();
    let tar = RawTar::new()
        .file("x", b"first", 0o644)
        .dir("x/", 0o6777)
        .file("x", b"last", 0o600)
        .dir("y/", 0o6777)
        .raw(Raw {
            mode: 0o640,
            ..Raw::new("y", b'6')
        })
        .finish();
    let r = s.apply_plain(&tar);
    s.assert_canaries();
    r.expect("duplicates are legal");
    assert_eq!(fs::read(s.root.join("x")).expect("x"), b"last");
    assert_eq!(mode_of(&s.root.join("x")), 0o600, "x keeps its own mode");
    assert_eq!(mode_of(&s.root.join("y")), 0o640, "y keeps its own mode");
}

#[test]
fn device_nodes_stay_entries_inside_the_root() {
    let s = Scene::new();
    // A device node through a symlink to a host directory, and over a host
    // file reached by an absolute name.
    let tar = RawTar::new()
        .dir("dev/", 0o755)
        .device("dev/null", b'3', 1, 3)
        .device("dev/disk", b'4', 7, 0)
        .symlink("hostdir", s.dir_s())
        .device("hostdir/node", b'3', 1, 3)
        .device(s.file_s(), b'4', 7, 0)
        .raw(Raw {
            mode: 0o644,
            ..Raw::new("fifo", b'6')
        })
        .finish();
    s.apply_plain(&tar)
        .expect("device nodes are kept or skipped");
    s.assert_canaries();
    // Where kept, they are the nodes the layer names, inside the root.
    for (p, dev) in [("dev/null", (1, 3)), ("dev/disk", (7, 0))] {
        if let Ok(m) = fs::symlink_metadata(s.root.join(p)) {
            let ft = m.file_type();
            assert!(ft.is_char_device() || ft.is_block_device(), "{p}: {ft:?}");
            assert_eq!(m.rdev(), rustix::fs::makedev(dev.0, dev.1), "{p}");
        }
    }
    assert!(fs::symlink_metadata(s.root.join("fifo"))
        .expect("fifo")
        .file_type()
        .is_fifo());
}

#[test]
fn setuid_files_keep_their_bits_inside_and_never_outside() {
    let s = Scene::new();
    let tar = RawTar::new()
        .file_owned("su", b"#!su", 0o4755, 0)
        .file_owned("sg", b"#!sg", 0o2755, 0)
        .symlink("tool", s.file_s())
        .file_owned("tool", b"#!tool", 0o6755, 0)
        .finish();
    s.apply_plain(&tar).expect("setuid files apply");
    s.assert_canaries();
    assert_eq!(mode_of(&s.root.join("su")), 0o4755);
    assert_eq!(mode_of(&s.root.join("sg")), 0o2755);
    assert_eq!(mode_of(&s.root.join("tool")), 0o6755);
}

// ---------------------------------------------------------------------------
// Legitimate shapes that must keep applying.

/// Java's cacerts: a symlink with more `..` than its depth, which resolves
/// at the root (as a path walk at `/` does); later writes through a
/// directory link of the same kind land inside the root.
#[test]
fn legit_symlinks_with_more_dotdot_than_their_depth() {
    let s = Scene::new();
    let cacerts = "../../../../../../etc/pki/ca-trust/extracted/java/cacerts";
    let base = RawTar::new()
        .dir("etc/", 0o755)
        .dir("etc/pki/", 0o755)
        .dir("etc/pki/ca-trust/", 0o755)
        .dir("etc/pki/ca-trust/extracted/", 0o755)
        .dir("etc/pki/ca-trust/extracted/java/", 0o755)
        .file("etc/pki/ca-trust/extracted/java/cacerts", b"certs", 0o644)
        .dir("etc/ssl/", 0o755)
        .dir("etc/ssl/certs/", 0o755)
        .dir("etc/ssl/certs/java/", 0o755)
        .symlink("etc/ssl/certs/java/cacerts", cacerts)
        .dir("etc/java/", 0o755)
        .dir("etc/java/security/", 0o755)
        .dir("opt/", 0o755)
        .dir("opt/jdk/", 0o755)
        .dir("opt/jdk/lib/", 0o755)
        .symlink(
            "opt/jdk/lib/security",
            "../../../../../../../etc/java/security",
        )
        .finish();
    s.apply_plain(&base).expect("legit layer");
    let upper = RawTar::new()
        .file("opt/jdk/lib/security/java.security", b"policy", 0o644)
        .dir("opt/jdk/lib/security/policy/", 0o750)
        .finish();
    s.apply_plain(&upper).expect("legit layer");
    s.assert_canaries();
    assert_eq!(
        fs::read_link(s.root.join("etc/ssl/certs/java/cacerts")).expect("link"),
        Path::new(cacerts)
    );
    assert_eq!(
        fs::read(s.root.join("etc/java/security/java.security")).expect("through the link"),
        b"policy"
    );
    assert_eq!(mode_of(&s.root.join("etc/java/security/policy")), 0o750);
}

/// `bin/sh -> dash`, then a later layer replaces `bin/sh` with a link to
/// bash and then a file: dash itself is never written.
#[test]
fn legit_bin_sh_link_replaced() {
    let s = Scene::new();
    s.apply_plain(
        &RawTar::new()
            .dir("bin/", 0o755)
            .file("bin/dash", b"dash", 0o755)
            .file("bin/bash", b"bash", 0o755)
            .symlink("bin/sh", "dash")
            .finish(),
    )
    .expect("base");
    s.apply_plain(&RawTar::new().symlink("bin/sh", "bash").finish())
        .expect("relink");
    assert_eq!(
        fs::read_link(s.root.join("bin/sh")).expect("sh"),
        Path::new("bash")
    );
    s.apply_plain(&RawTar::new().file("bin/sh", b"busybox sh", 0o755).finish())
        .expect("file over link");
    assert_eq!(fs::read(s.root.join("bin/sh")).expect("sh"), b"busybox sh");
    assert_eq!(fs::read(s.root.join("bin/dash")).expect("dash"), b"dash");
    assert_eq!(fs::read(s.root.join("bin/bash")).expect("bash"), b"bash");
    s.assert_canaries();
}

/// Merged /usr: `lib -> usr/lib`, `bin -> /usr/bin`; later layers write
/// `lib/x` and `bin/y`, which land in /usr.
#[test]
fn legit_merged_usr() {
    let s = Scene::new();
    s.apply_plain(
        &RawTar::new()
            .dir("usr/", 0o755)
            .dir("usr/lib/", 0o755)
            .dir("usr/bin/", 0o755)
            .symlink("lib", "usr/lib")
            .symlink("bin", "/usr/bin")
            .finish(),
    )
    .expect("base");
    s.apply_plain(
        &RawTar::new()
            .file("lib/libc.so.6", b"elf", 0o755)
            .dir("lib/x86_64-linux-gnu/", 0o755)
            .file("lib/x86_64-linux-gnu/libm.so", b"elf", 0o644)
            .file("bin/true", b"elf", 0o755)
            .hardlink("bin/true2", "bin/true")
            .finish(),
    )
    .expect("usr layer");
    s.assert_canaries();
    assert_eq!(
        fs::read(s.root.join("usr/lib/libc.so.6")).expect("lib"),
        b"elf"
    );
    assert!(s.root.join("usr/lib/x86_64-linux-gnu/libm.so").is_file());
    assert_eq!(fs::read(s.root.join("usr/bin/true")).expect("bin"), b"elf");
    assert_eq!(
        fs::metadata(s.root.join("usr/bin/true2"))
            .expect("true2")
            .ino(),
        fs::metadata(s.root.join("usr/bin/true"))
            .expect("true")
            .ino()
    );
    assert_eq!(
        fs::read_link(s.root.join("lib")).expect("lib"),
        Path::new("usr/lib")
    );
}

/// `/var/run -> /run`: entries under var/run land in /run, directory modes
/// included.
#[test]
fn legit_var_run_link() {
    let s = Scene::new();
    s.apply_plain(
        &RawTar::new()
            .dir("run/", 0o755)
            .dir("var/", 0o755)
            .symlink("var/run", "/run")
            .finish(),
    )
    .expect("base");
    s.apply_plain(
        &RawTar::new()
            .dir("var/run/lock/", 0o1777)
            .file("var/run/app.pid", b"1", 0o644)
            .file("var/run/.wh.none", b"", 0)
            .finish(),
    )
    .expect("run layer");
    s.assert_canaries();
    assert_eq!(mode_of(&s.root.join("run/lock")), 0o1777);
    assert_eq!(fs::read(s.root.join("run/app.pid")).expect("pid"), b"1");
    assert!(fs::symlink_metadata(s.root.join("var/run"))
        .expect("var/run")
        .file_type()
        .is_symlink());
    // A whiteout through the link removes inside the root.
    s.apply_plain(&RawTar::new().file("var/run/.wh.app.pid", b"", 0).finish())
        .expect("whiteout");
    assert!(!s.root.join("run/app.pid").exists());
}

#[test]
fn gzip_layers_are_read_like_plain_ones() {
    // The hostile shapes above are written uncompressed; one compressed
    // case keeps the decompressing path honest.
    let s = Scene::new();
    let tar = RawTar::new()
        .symlink("esc", s.dir_s())
        .file("esc/keep", b"pwn", 0o4777)
        .file("../outside/canary", b"pwn", 0o4777)
        .finish();
    assert_clear_error(s.apply_plain(&gzip(&tar)));
    s.assert_canaries();
}
