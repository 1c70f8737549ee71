//! Hostile layer tars against `apply_layer`: every shape an attacker can put
//! in a base image layer (traversal, absolute names, PAX and GNU long names
//! that disagree with the ustar name, PAX sizes that desynchronise the
//! stream, writes through symlinks, a directory replaced by a symlink before
//! its deferred chmod/chown, hardlinks and whiteouts through links, device
//! nodes, setuid files, decompression bombs, huge entry counts, and in-place
//! protected paths reached through a parent symlink). Each test keeps a host
//! canary beside the destination root, with known content, mode, owner,
//! mtime and inode, and asserts it is unchanged; the layer either fails with
//! an error or lands inside the root. Legitimate shapes images rely on
//! (symlinks with more `..` than their depth, replaced `/bin/sh`,
//! merged-usr, `/var/run -> /run`) must keep applying.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_image::{apply_layer, ApplyOptions, BlobStore};

// ---------------------------------------------------------------------------
// Raw tar writing: names and link names go verbatim into the header (the tar
// crate's safe setters refuse `..` and absolute paths).

/// One raw tar stream under construction.
#[derive(Default)]
struct RawTar {
    out: Vec<u8>,
}

/// Header fields for one raw entry.
struct Raw<'a> {
    name: &'a [u8],
    typeflag: u8,
    link: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    /// The size written in the header (normally `data.len()`).
    size: u64,
    data: &'a [u8],
    dev: Option<(u32, u32)>,
}

impl<'a> Raw<'a> {
    fn new(name: &'a str, typeflag: u8) -> Raw<'a> {
        Raw {
            name: name.as_bytes(),
            typeflag,
            link: b"",
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            data: b"",
            dev: None,
        }
    }
}

impl RawTar {
    fn new() -> RawTar {
        RawTar::default()
    }

    fn pad(&mut self) {
        self.out.resize(self.out.len().div_ceil(512) * 512, 0);
    }

    fn raw(&mut self, r: Raw<'_>) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        assert!(r.name.len() <= 100, "use a long-name record for long names");
        assert!(r.link.len() <= 100, "link name too long for a raw header");
        h.as_old_mut().name[..r.name.len()].copy_from_slice(r.name);
        h.as_old_mut().linkname[..r.link.len()].copy_from_slice(r.link);
        h.set_entry_type(tar::EntryType::new(r.typeflag));
        h.set_size(r.size);
        h.set_mode(r.mode);
        h.set_uid(r.uid);
        h.set_gid(r.gid);
        h.set_mtime(1_700_000_000);
        if let Some((major, minor)) = r.dev {
            h.set_device_major(major).expect("ustar header");
            h.set_device_minor(minor).expect("ustar header");
        }
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(r.data);
        self.pad();
        self
    }

    fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.raw(Raw {
            mode,
            size: data.len() as u64,
            data,
            ..Raw::new(name, b'0')
        })
    }

    fn file_owned(&mut self, name: &str, data: &[u8], mode: u32, owner: u64) -> &mut Self {
        self.raw(Raw {
            mode,
            uid: owner,
            gid: owner,
            size: data.len() as u64,
            data,
            ..Raw::new(name, b'0')
        })
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(Raw {
            mode,
            ..Raw::new(name, b'5')
        })
    }

    fn dir_owned(&mut self, name: &str, mode: u32, owner: u64) -> &mut Self {
        self.raw(Raw {
            mode,
            uid: owner,
            gid: owner,
            ..Raw::new(name, b'5')
        })
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(Raw {
            link: target.as_bytes(),
            mode: 0o777,
            ..Raw::new(name, b'2')
        })
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(Raw {
            link: target.as_bytes(),
            ..Raw::new(name, b'1')
        })
    }

    fn device(&mut self, name: &str, typeflag: u8, major: u32, minor: u32) -> &mut Self {
        self.raw(Raw {
            mode: 0o666,
            dev: Some((major, minor)),
            ..Raw::new(name, typeflag)
        })
    }

    /// A PAX extended header (`x`) carrying `records` for the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n", where len counts itself.
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.raw(Raw {
            size: body.len() as u64,
            data: &body,
            ..Raw::new("././@PaxHeader", b'x')
        })
    }

    /// A GNU long-name record (`L`) naming the next entry.
    fn gnu_longname(&mut self, name: &str) -> &mut Self {
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        self.raw(Raw {
            size: data.len() as u64,
            data: &data,
            ..Raw::new("././@LongLink", b'L')
        })
    }

    /// A GNU long-link record (`K`) giving the next entry's link name.
    fn gnu_longlink(&mut self, target: &str) -> &mut Self {
        let mut data = target.as_bytes().to_vec();
        data.push(0);
        self.raw(Raw {
            size: data.len() as u64,
            data: &data,
            ..Raw::new("././@LongLink", b'K')
        })
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.resize(out.len() + 1024, 0);
        out
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("compress");
    enc.finish().expect("compress")
}

// ---------------------------------------------------------------------------
// The scene: a destination root and, beside it, host canaries.

/// A destination root and host canaries (a file, a directory holding a file)
/// outside it, in one temporary directory.
struct Scene {
    tmp: tempfile::TempDir,
    store: BlobStore,
    root: PathBuf,
    /// `<tmp>/outside`: a directory outside the root.
    outside: PathBuf,
    /// `<tmp>/outside/canary`: a file outside the root.
    file: PathBuf,
    /// `<tmp>/outside/cdir`: a directory outside the root, holding `keep`.
    dir: PathBuf,
    before: String,
}

const CANARY_MTIME: i64 = 1_600_000_000;
const CANARY_OWNER: u32 = 4321;

impl Scene {
    fn new() -> Scene {
        let tmp = tempfile::tempdir().expect("temp dir");
        // Everything on the way must be traversable by anyone (the temp
        // dir is 0700): the canaries' absolute paths are used as link
        // targets and entry names.
        let store = BlobStore::open(&tmp.path().join("store")).expect("store");
        let root = tmp.path().join("root");
        fs::create_dir(&root).expect("mkdir root");
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).expect("mkdir outside");
        let file = outside.join("canary");
        fs::write(&file, b"host canary\n").expect("write canary");
        let dir = outside.join("cdir");
        fs::create_dir(&dir).expect("mkdir canary dir");
        fs::write(dir.join("keep"), b"keep me\n").expect("write keep");
        for (p, mode) in [
            (&dir.join("keep"), 0o640),
            (&file, 0o640),
            (&dir, 0o750),
            (&outside, 0o755),
        ] {
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod canary");
            if is_root() {
                std::os::unix::fs::chown(p, Some(CANARY_OWNER), Some(CANARY_OWNER))
                    .expect("chown canary");
            }
            set_mtime(p, CANARY_MTIME);
        }
        let before = snapshot(&outside);
        Scene {
            tmp,
            store,
            root,
            outside,
            file,
            dir,
            before,
        }
    }

    fn file_s(&self) -> &str {
        self.file.to_str().expect("utf-8 temp path")
    }

    fn dir_s(&self) -> &str {
        self.dir.to_str().expect("utf-8 temp path")
    }

    /// The canary file's path as a name inside the root (no leading `/`).
    fn file_rel(&self) -> &str {
        self.file_s().trim_start_matches('/')
    }

    fn dir_rel(&self) -> &str {
        self.dir_s().trim_start_matches('/')
    }

    /// A link target that climbs from `depth` levels below the root up to
    /// the temporary directory and down to `to` (a sibling of the root).
    fn climb(&self, depth: usize, to: &str) -> String {
        format!("{}{to}", "../".repeat(depth + 1))
    }

    fn apply(&self, tar: &[u8], opts: &ApplyOptions) -> kiln_image::Result<()> {
        let digest = self.store.put_bytes(tar).expect("store layer");
        apply_layer(&self.store, &digest, &self.root, opts)
    }

    fn apply_plain(&self, tar: &[u8]) -> kiln_image::Result<()> {
        self.apply(tar, &ApplyOptions::default())
    }

    /// The host canaries are exactly as they were: contents, modes,
    /// owners, mtimes, inodes and link counts, and no new entries.
    fn assert_canaries(&self) {
        let now = snapshot(&self.outside);
        assert_eq!(
            self.before, now,
            "a layer changed the host outside the root"
        );
        // Nothing appeared beside the root either.
        let mut names: Vec<String> = fs::read_dir(self.tmp.path())
            .expect("read tmp")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["outside", "root", "store"], "new host entries");
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn set_mtime(p: &Path, secs: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("set mtime");
}

/// Every entry below `top` (and `top` itself): type, mode, owner, mtime,
/// inode, link count, contents or link target.
fn snapshot(top: &Path) -> String {
    fn walk(p: &Path, rel: &str, out: &mut String) {
        let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let what = if m.is_file() {
            format!("file {:?}", fs::read(p).expect("read"))
        } else if m.file_type().is_symlink() {
            format!("link {:?}", fs::read_link(p).expect("readlink"))
        } else if m.is_dir() {
            "dir".into()
        } else {
            format!("special {:x}", m.rdev())
        };
        out.push_str(&format!(
            "{rel}: {what} mode={:o} owner={}:{} mtime={} ino={} nlink={}\n",
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.ino(),
            m.nlink()
        ));
        if m.is_dir() {
            let mut kids: Vec<_> = fs::read_dir(p)
                .expect("read dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            kids.sort();
            for k in kids {
                let k = k.to_string_lossy().into_owned();
                walk(&p.join(&k), &format!("{rel}/{k}"), out);
            }
        }
    }
    let mut out = String::new();
    walk(top, ".", &mut out);
    out
}

/// A failed apply must say what it refused.
fn assert_clear_error(r: kiln_image::Result<()>) -> String {
    let e = r.expect_err("the layer must be refused");
    let text = e.to_string();
    assert!(!text.trim().is_empty(), "an empty error");
    text
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

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
// Bombs and huge entry counts: bounded memory and time, measured in a child
// process that does nothing but the apply.

/// Runs the test `name` of this binary in a child process (with `env`
/// telling it to do the work) and returns the peak RSS (KiB) and the wall
/// time it reported.
fn child_peak(name: &str, env: &str) -> (u64, f64) {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--include-ignored"])
        .env(env, "1")
        .output()
        .expect("run child");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CHILD-REPORT "))
        .unwrap_or_else(|| panic!("no report from the child:\n{text}"));
    let mut it = line.split_whitespace();
    let kib = it.next().and_then(|v| v.parse().ok()).expect("peak");
    let secs = it.next().and_then(|v| v.parse().ok()).expect("secs");
    (kib, secs)
}

/// Peak resident set of this process, from /proc/self/status (VmHWM).
fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

const BOMB_MIB: u64 = 512;

/// One file of 512 MiB of zeros, gzipped to about half a megabyte.
fn gzip_bomb() -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut h = tar::Header::new_ustar();
    h.set_path("bomb").expect("path");
    h.set_size(BOMB_MIB << 20);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    enc.write_all(h.as_bytes()).expect("compress");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..BOMB_MIB {
        enc.write_all(&zeros).expect("compress");
    }
    enc.write_all(&[0u8; 1024]).expect("compress");
    enc.finish().expect("compress")
}

#[test]
fn gzip_bomb_child() {
    if std::env::var_os("KILN_HOSTILE_BOMB_CHILD").is_none() {
        return; // only as the child of gzip_bomb_applies_in_bounded_memory
    }
    let s = Scene::new();
    let bomb = gzip_bomb();
    let digest = s.store.put_bytes(&bomb).expect("store");
    drop(bomb);
    let start = std::time::Instant::now();
    apply_layer(&s.store, &digest, &s.root, &ApplyOptions::default()).expect("apply");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(
        fs::metadata(s.root.join("bomb")).expect("bomb").len(),
        BOMB_MIB << 20
    );
    s.assert_canaries();
    println!("CHILD-REPORT {} {secs:.2}", peak_rss_kib());
}

/// A 512 MiB file compressed a thousandfold is streamed to disk, not held
/// in memory.
#[test]
fn gzip_bomb_applies_in_bounded_memory() {
    let (kib, secs) = child_peak("gzip_bomb_child", "KILN_HOSTILE_BOMB_CHILD");
    eprintln!("gzip bomb ({BOMB_MIB} MiB): peak RSS {kib} KiB, apply {secs:.2} s");
    assert!(
        kib < 96 * 1024,
        "peak RSS {kib} KiB for a {BOMB_MIB} MiB bomb"
    );
}

/// A PAX extended header whose one record is 256 MiB (compressed to a few
/// hundred KiB): a reader that collects the record whole holds it all in
/// memory.
#[test]
fn pax_record_bomb_child() {
    if std::env::var_os("KILN_HOSTILE_PAX_BOMB_CHILD").is_none() {
        return; // only as the child of pax_record_bomb_applies_in_bounded_memory
    }
    let s = Scene::new();
    let mib = 256usize;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let value_len = (mib << 20) - 64;
    let rest = "comment".len() + value_len + 3;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len += 1;
    }
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..14].copy_from_slice(b"././@PaxHeader");
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(len as u64);
    h.set_mode(0o644);
    h.set_cksum();
    enc.write_all(h.as_bytes()).expect("compress");
    enc.write_all(format!("{len} comment=").as_bytes())
        .expect("compress");
    let chunk = vec![b'a'; 1 << 20];
    let mut left = value_len;
    while left > 0 {
        let n = left.min(chunk.len());
        enc.write_all(&chunk[..n]).expect("compress");
        left -= n;
    }
    enc.write_all(b"\n").expect("compress");
    let pad = (512 - (len % 512)) % 512;
    enc.write_all(&vec![0u8; pad]).expect("compress");
    let mut f = tar::Header::new_ustar();
    f.set_path("after").expect("path");
    f.set_size(0);
    f.set_mode(0o644);
    f.set_cksum();
    enc.write_all(f.as_bytes()).expect("compress");
    enc.write_all(&[0u8; 1024]).expect("compress");
    let bomb = enc.finish().expect("compress");
    let digest = s.store.put_bytes(&bomb).expect("store");
    drop(bomb);
    let start = std::time::Instant::now();
    let r = apply_layer(&s.store, &digest, &s.root, &ApplyOptions::default());
    let secs = start.elapsed().as_secs_f64();
    eprintln!("pax record bomb: {r:?}");
    assert!(
        matches!(&r, Err(e) if e.to_string().contains("exceeds")),
        "the record is refused: {r:?}"
    );
    s.assert_canaries();
    println!("CHILD-REPORT {} {secs:.2}", peak_rss_kib());
}

#[test]
fn pax_record_bomb_applies_in_bounded_memory() {
    let (kib, secs) = child_peak("pax_record_bomb_child", "KILN_HOSTILE_PAX_BOMB_CHILD");
    eprintln!("PAX record bomb (256 MiB): peak RSS {kib} KiB, apply {secs:.2} s");
    assert!(
        kib < 96 * 1024,
        "peak RSS {kib} KiB for a 256 MiB PAX record"
    );
}

/// 2×10⁵ rather than 10⁶: a million entries took 80–300 s to apply in a
/// debug build on a shared two-core runner, too long for every CI run; the
/// bounds below still catch anything worse than linear.
const MANY: usize = 200_000;

#[test]
fn many_entries_child() {
    if std::env::var_os("KILN_HOSTILE_MANY_CHILD").is_none() {
        return; // only as the child of many_entries_apply_in_bounded_time_and_memory
    }
    let s = Scene::new();
    // MANY headers: directories of 999 empty files each, gzipped.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut n = 0;
    let mut d = 0;
    while n < MANY {
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("d{d:04}/")).expect("path");
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_cksum();
        enc.write_all(h.as_bytes()).expect("compress");
        n += 1;
        for f in 0..999 {
            if n == MANY {
                break;
            }
            let mut h = tar::Header::new_ustar();
            h.set_path(format!("d{d:04}/f{f:03}")).expect("path");
            h.set_size(0);
            h.set_mode(0o644);
            h.set_cksum();
            enc.write_all(h.as_bytes()).expect("compress");
            n += 1;
        }
        d += 1;
    }
    enc.write_all(&[0u8; 1024]).expect("compress");
    let layer = enc.finish().expect("compress");
    let digest = s.store.put_bytes(&layer).expect("store");
    drop(layer);
    let start = std::time::Instant::now();
    apply_layer(&s.store, &digest, &s.root, &ApplyOptions::default()).expect("apply");
    let secs = start.elapsed().as_secs_f64();
    assert!(s.root.join("d0000/f998").is_file());
    s.assert_canaries();
    println!("CHILD-REPORT {} {secs:.2}", peak_rss_kib());
}

#[test]
fn many_entries_apply_in_bounded_time_and_memory() {
    let (kib, secs) = child_peak("many_entries_child", "KILN_HOSTILE_MANY_CHILD");
    eprintln!("{MANY} entries: peak RSS {kib} KiB, apply {secs:.2} s");
    assert!(kib < 192 * 1024, "peak RSS {kib} KiB for {MANY} entries");
    assert!(secs < 120.0, "{secs} s for {MANY} entries");
}

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
