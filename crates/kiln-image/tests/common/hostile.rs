//! Helpers of the hostile-layer tests (`hostile_layers*.rs`): a raw tar
//! writer whose names and link names go verbatim into the header (the tar
//! crate's safe setters refuse `..` and absolute paths), and a scene with a
//! destination root beside a host canary that must stay unchanged.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_image::{apply_layer, ApplyOptions, BlobStore};

// ---------------------------------------------------------------------------
// Raw tar writing: names and link names go verbatim into the header (the tar
// crate's safe setters refuse `..` and absolute paths).

/// One raw tar stream under construction.
#[derive(Default)]
pub struct RawTar {
    pub out: Vec<u8>,
}

/// Header fields for one raw entry.
pub struct Raw<'a> {
    pub name: &'a [u8],
    pub typeflag: u8,
    pub link: &'a [u8],
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// The size written in the header (normally `data.len()`).
    pub size: u64,
    pub data: &'a [u8],
    pub dev: Option<(u32, u32)>,
}

impl<'a> Raw<'a> {
    pub fn new(name: &'a str, typeflag: u8) -> Raw<'a> {
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
    pub fn new() -> RawTar {
        RawTar::default()
    }

    pub fn pad(&mut self) {
        self.out.resize(self.out.len().div_ceil(512) * 512, 0);
    }

    pub fn raw(&mut self, r: Raw<'_>) -> &mut Self {
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

    pub fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.raw(Raw {
            mode,
            size: data.len() as u64,
            data,
            ..Raw::new(name, b'0')
        })
    }

    pub fn file_owned(&mut self, name: &str, data: &[u8], mode: u32, owner: u64) -> &mut Self {
        self.raw(Raw {
            mode,
            uid: owner,
            gid: owner,
            size: data.len() as u64,
            data,
            ..Raw::new(name, b'0')
        })
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(Raw {
            mode,
            ..Raw::new(name, b'5')
        })
    }

    pub fn dir_owned(&mut self, name: &str, mode: u32, owner: u64) -> &mut Self {
        self.raw(Raw {
            mode,
            uid: owner,
            gid: owner,
            ..Raw::new(name, b'5')
        })
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(Raw {
            link: target.as_bytes(),
            mode: 0o777,
            ..Raw::new(name, b'2')
        })
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(Raw {
            link: target.as_bytes(),
            ..Raw::new(name, b'1')
        })
    }

    pub fn device(&mut self, name: &str, typeflag: u8, major: u32, minor: u32) -> &mut Self {
        self.raw(Raw {
            mode: 0o666,
            dev: Some((major, minor)),
            ..Raw::new(name, typeflag)
        })
    }

    /// A PAX extended header (`x`) carrying `records` for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
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
    pub fn gnu_longname(&mut self, name: &str) -> &mut Self {
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        self.raw(Raw {
            size: data.len() as u64,
            data: &data,
            ..Raw::new("././@LongLink", b'L')
        })
    }

    /// A GNU long-link record (`K`) giving the next entry's link name.
    pub fn gnu_longlink(&mut self, target: &str) -> &mut Self {
        let mut data = target.as_bytes().to_vec();
        data.push(0);
        self.raw(Raw {
            size: data.len() as u64,
            data: &data,
            ..Raw::new("././@LongLink", b'K')
        })
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.resize(out.len() + 1024, 0);
        out
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("compress");
    enc.finish().expect("compress")
}

// ---------------------------------------------------------------------------
// The scene: a destination root and, beside it, host canaries.

/// A destination root and host canaries (a file, a directory holding a file)
/// outside it, in one temporary directory.
pub struct Scene {
    pub tmp: tempfile::TempDir,
    pub store: BlobStore,
    pub root: PathBuf,
    /// `<tmp>/outside`: a directory outside the root.
    pub outside: PathBuf,
    /// `<tmp>/outside/canary`: a file outside the root.
    pub file: PathBuf,
    /// `<tmp>/outside/cdir`: a directory outside the root, holding `keep`.
    pub dir: PathBuf,
    pub before: String,
}

pub const CANARY_MTIME: i64 = 1_600_000_000;
pub const CANARY_OWNER: u32 = 4321;

impl Scene {
    pub fn new() -> Scene {
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

    pub fn file_s(&self) -> &str {
        self.file.to_str().expect("utf-8 temp path")
    }

    pub fn dir_s(&self) -> &str {
        self.dir.to_str().expect("utf-8 temp path")
    }

    /// The canary file's path as a name inside the root (no leading `/`).
    pub fn file_rel(&self) -> &str {
        self.file_s().trim_start_matches('/')
    }

    pub fn dir_rel(&self) -> &str {
        self.dir_s().trim_start_matches('/')
    }

    /// A link target that climbs from `depth` levels below the root up to
    /// the temporary directory and down to `to` (a sibling of the root).
    pub fn climb(&self, depth: usize, to: &str) -> String {
        format!("{}{to}", "../".repeat(depth + 1))
    }

    pub fn apply(&self, tar: &[u8], opts: &ApplyOptions) -> kiln_image::Result<()> {
        let digest = self.store.put_bytes(tar).expect("store layer");
        apply_layer(&self.store, &digest, &self.root, opts)
    }

    pub fn apply_plain(&self, tar: &[u8]) -> kiln_image::Result<()> {
        self.apply(tar, &ApplyOptions::default())
    }

    /// The host canaries are exactly as they were: contents, modes,
    /// owners, mtimes, inodes and link counts, and no new entries.
    pub fn assert_canaries(&self) {
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

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn set_mtime(p: &Path, secs: i64) {
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

pub use kiln_testkit::tree::snapshot;

/// A failed apply must say what it refused.
pub fn assert_clear_error(r: kiln_image::Result<()>) -> String {
    let e = r.expect_err("the layer must be refused");
    let text = e.to_string();
    assert!(!text.trim().is_empty(), "an empty error");
    text
}

pub fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}
