//! Dumps of directory trees that tests compare or search: each function is
//! one level of detail, from bare paths to every attribute a user of an
//! image sees. All of them read with `lstat` (symlinks are never followed)
//! and panic on an unreadable tree.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .expect("under root")
        .to_string_lossy()
        .into_owned()
}

fn children(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    names.sort();
    names
}

/// Every path below `root`, relative and sorted as strings, directories
/// with a trailing `/`.
pub fn paths(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for p in children(dir) {
            if fs::symlink_metadata(&p).expect("lstat").is_dir() {
                out.push(format!("{}/", rel(root, &p)));
                walk(root, &p, out);
            } else {
                out.push(rel(root, &p));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Every path below `root`, relative, in depth-first order (siblings
/// sorted, a directory right before its contents).
pub fn walk_order(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for p in children(dir) {
            out.push(rel(root, &p));
            if fs::symlink_metadata(&p).expect("stat").is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// (relative path, what it holds) of every entry below `root`, sorted: `dir`
/// for a directory, `-> TARGET` for a symlink, the contents (as lossy
/// UTF-8) for anything else.
pub fn contents(root: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for p in children(dir) {
            let r = rel(root, &p);
            let m = fs::symlink_metadata(&p).expect("lstat");
            if m.file_type().is_symlink() {
                out.push((
                    r,
                    format!("-> {}", fs::read_link(&p).expect("readlink").display()),
                ));
            } else if m.is_dir() {
                out.push((r, "dir".into()));
                walk(root, &p, out);
            } else {
                let data = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                out.push((r, String::from_utf8_lossy(&data).into_owned()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Every path under `root` with type and mode bits (`st_mode` in octal),
/// owner, size, link target and a content sum with the link count, sorted:
/// two trees with equal listings are equal.
pub fn detailed(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for p in children(&dir) {
            let md = fs::symlink_metadata(&p).expect("lstat");
            let ft = md.file_type();
            let extra = if ft.is_symlink() {
                format!("-> {}", fs::read_link(&p).expect("readlink").display())
            } else if ft.is_file() {
                // FNV-1a of the content: equal trees, equal sums.
                let sum = fs::read(&p)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                    .iter()
                    .fold(0xcbf29ce484222325u64, |h, b| {
                        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
                    });
                format!("{sum:016x} links={}", md.nlink())
            } else {
                String::new()
            };
            out.push(format!(
                "{} {:o} {}:{} {} {extra}",
                rel(root, &p),
                md.mode(),
                md.uid(),
                md.gid(),
                if ft.is_dir() { 0 } else { md.len() }
            ));
            if ft.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// One entry of a tree (an unpacked image, say): everything a user of it
/// sees except timestamps.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// A hash of the contents: equality of two test trees, not security.
    pub content: Option<u64>,
    pub link_target: Option<PathBuf>,
    /// For a file with several links: the first path (in sorted order) of
    /// those that share its inode.
    pub hardlink_group: Option<String>,
}

/// Every entry below `root` by relative path.
pub fn entries(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<String, Entry>,
        inodes: &mut BTreeMap<u64, String>,
    ) {
        for p in children(dir) {
            let rel = rel(root, &p);
            let m = fs::symlink_metadata(&p).expect("lstat");
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "special"
            };
            let content = ft.is_file().then(|| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(&fs::read(&p).expect("read"), &mut h);
                std::hash::Hasher::finish(&h)
            });
            let hardlink_group = (ft.is_file() && m.nlink() > 1)
                .then(|| inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone());
            out.insert(
                rel.clone(),
                Entry {
                    kind,
                    mode: if ft.is_symlink() {
                        0
                    } else {
                        m.mode() & 0o7777
                    },
                    uid: m.uid(),
                    gid: m.gid(),
                    size: if ft.is_dir() { 0 } else { m.len() },
                    content,
                    link_target: ft
                        .is_symlink()
                        .then(|| fs::read_link(&p).expect("readlink")),
                    hardlink_group,
                },
            );
            if ft.is_dir() {
                walk(root, &p, out, inodes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out, &mut BTreeMap::new());
    out
}

/// Every entry below `top` (and `top` itself), one line each: type, mode,
/// owner, mtime, inode, link count, and contents or link target. The
/// hostile-input tests compare it before and after a build to prove a host
/// canary unchanged.
pub fn snapshot(top: &Path) -> String {
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
