//! The stat walk of an in-place root: [`scan`] records every path's
//! metadata in a [`Baseline`], [`changes`] walks again and lists what a step
//! changed as layer entries, in the same form [`crate::upper_changes_since`]
//! gives for the same change made over an overlay.
//!
//! Both walks run on several threads (one directory is one job on a shared
//! queue). A path counts as changed when its type, inode (and birth time,
//! where the filesystem records it), mode, owner, size, mtime, device
//! number or symlink target differ, or when its ctime moved while its link
//! count did not (an xattr or other metadata change; a ctime move that
//! comes with a link count change is `ln`/`rm` of another name, which does
//! not change the file, as Docker's builder also judges). Content is read
//! only where stat cannot decide: a file whose ctime falls within the
//! timestamp granularity ([`racy_window_ns`]) of a walk's start could be
//! rewritten later without any timestamp moving, so that walk hashes it,
//! and the next walk hashes it again and compares.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_image::{EntryKind, LayerEntry};
use nix::sys::stat::{major, minor};
use sha2::{Digest, Sha256};

use super::ignore::IgnoreSet;
use crate::error::{IoContext, Result, SandboxError};

/// The most (in nanoseconds) a walk's racy window can be: see
/// [`racy_window_ns`]. Files whose ctime has no sub-second part (a
/// filesystem with whole-second timestamps) are racy for a whole second
/// before the walk's start second.
pub const RACY_WINDOW_NS: i128 = 50_000_000;

/// How close (in nanoseconds) to a walk's start a file's ctime must be for
/// the walk to hash its content. File timestamps come from the kernel's
/// coarse clock, which lags the real time by at most one tick: the window
/// is two ticks of that clock plus a millisecond (measured once with
/// `clock_getres`), at least 2 ms and at most [`RACY_WINDOW_NS`] (also
/// what it is when the clock cannot be asked).
pub fn racy_window_ns() -> i128 {
    static WINDOW: std::sync::OnceLock<i128> = std::sync::OnceLock::new();
    *WINDOW.get_or_init(|| {
        let res = rustix::time::clock_getres(rustix::time::ClockId::RealtimeCoarse);
        let tick = i128::from(res.tv_sec) * NS + i128::from(res.tv_nsec);
        if tick <= 0 {
            return RACY_WINDOW_NS;
        }
        (2 * tick + 1_000_000).clamp(2_000_000, RACY_WINDOW_NS)
    })
}

const NS: i128 = 1_000_000_000;

/// What kind of filesystem object a [`Record`] is. Sockets are not
/// recorded: a layer cannot hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// What a walk saw of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: FileKind,
    /// Permission bits plus setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Nanoseconds since the epoch.
    pub ctime_ns: i128,
    /// Birth time in nanoseconds, where the filesystem records it.
    pub btime_ns: Option<i128>,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
    pub symlink_target: Option<PathBuf>,
    /// SHA-256 of the content, for regular files that were racy at the walk.
    pub content_hash: Option<[u8; 32]>,
}

#[derive(Debug, Clone)]
struct Node {
    name: OsString,
    rec: Record,
}

/// The state of a root as one walk saw it: the input of the next
/// [`changes`].
#[derive(Clone)]
pub struct Baseline {
    /// Children of every walked directory (`""` is the root), sorted by name.
    dirs: HashMap<PathBuf, Vec<Node>>,
    started_ns: i128,
}

impl std::fmt::Debug for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baseline")
            .field("paths", &self.len())
            .field("hashed", &self.hashed())
            .field("started_ns", &self.started_ns)
            .finish()
    }
}

impl Baseline {
    /// How many paths were recorded (the root itself not counted).
    pub fn len(&self) -> usize {
        self.dirs.values().map(Vec::len).sum()
    }

    /// Whether the walk found nothing below the root.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many files were racy and had their content hashed.
    pub fn hashed(&self) -> usize {
        self.nodes()
            .filter(|n| n.rec.content_hash.is_some())
            .count()
    }

    /// The record of `rel` (relative to the root), if the walk saw it.
    pub fn get(&self, rel: &Path) -> Option<&Record> {
        let name = rel.file_name()?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let nodes = self.dirs.get(parent)?;
        let i = nodes
            .binary_search_by(|n| n.name.as_os_str().cmp(name))
            .ok()?;
        nodes.get(i).map(|n| &n.rec)
    }

    /// When the walk started, in nanoseconds since the epoch.
    pub fn started_ns(&self) -> i128 {
        self.started_ns
    }

    fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.dirs.values().flatten()
    }

    fn children(&self, dir: &Path) -> &[Node] {
        self.dirs.get(dir).map(Vec::as_slice).unwrap_or_default()
    }
}

/// Records every path below `root` except ignored ones.
pub fn scan(root: &Path, ignore: &IgnoreSet) -> Result<Baseline> {
    walk(root, ignore, None)
}

/// Walks `root` again and lists what changed since `before`, as layer
/// entries in walk order (a directory before its contents, names sorted),
/// with the new baseline for the next step:
///
/// - added and changed paths become entries as [`crate::upper_changes`]
///   makes them (mode with setuid/setgid/sticky, owner, whole-second mtime,
///   xattrs, device numbers; regular files stream from `root`); every
///   directory above a reported path is reported too, with its current
///   metadata, as an overlay upper dir holds it;
/// - a deleted path is one [`EntryKind::Whiteout`] (a deleted directory is
///   one whiteout, nothing for what was inside);
/// - a directory replaced by anything else is reported as the new entry;
///   a directory that replaced anything else, or that was deleted and made
///   again, is a [`EntryKind::Dir`] plus an [`EntryKind::OpaqueDir`] entry
///   followed by everything inside it;
/// - a new file with several names among the reported entries is a `File`
///   at its first path and [`EntryKind::Hardlink`]s to it elsewhere.
///
/// `ignore` must be the set `before` was made with.
pub fn changes(
    root: &Path,
    before: &Baseline,
    ignore: &IgnoreSet,
) -> Result<(Vec<LayerEntry>, Baseline)> {
    let mut after = walk(root, ignore, Some(before))?;
    let mut out = Vec::new();
    let mut differ = Differ {
        root,
        old: before,
        new: &after,
        links: HashMap::new(),
    };
    differ.diff_dir(Path::new(""), &mut out)?;
    // Hashes taken only to compare with `before` are not needed next time.
    let started = after.started_ns;
    for n in after.dirs.values_mut().flatten() {
        if !is_racy(n.rec.ctime_ns, started) {
            n.rec.content_hash = None;
        }
    }
    Ok((out, after))
}

/// Whether a file with this ctime could change later without its ctime
/// moving, as seen from a walk that started at `started_ns`.
fn is_racy(ctime_ns: i128, started_ns: i128) -> bool {
    if ctime_ns >= started_ns - racy_window_ns() {
        return true;
    }
    ctime_ns.rem_euclid(NS) == 0 && ctime_ns >= (started_ns.div_euclid(NS) - 1) * NS
}

fn now_ns() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn time_ns(sec: i64, nsec: i64) -> i128 {
    i128::from(sec) * NS + i128::from(nsec)
}

fn system_time_ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The shared work queue of a walk.
struct Queue {
    jobs: Vec<PathBuf>,
    /// Jobs taken and not finished.
    active: usize,
    failed: Option<SandboxError>,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A poisoned queue only means another worker panicked; its join
    // reports that, and the state itself is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn worker_count() -> usize {
    // Stat calls block on the disk when the cache is cold: more threads
    // than cores keep the disk queue full.
    std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .clamp(4, 16)
}

/// Walks `root` on several threads. With `old`, files that were hashed
/// there are hashed again so [`changes`] can compare them.
///
/// Hand-rolled on `std::thread::scope`: one directory is one job, and the
/// only shared state is the queue, so a work-stealing pool would add a
/// dependency without making the walk faster.
fn walk(root: &Path, ignore: &IgnoreSet, old: Option<&Baseline>) -> Result<Baseline> {
    let started_ns = now_ns();
    let queue = Mutex::new(Queue {
        jobs: vec![PathBuf::new()],
        active: 0,
        failed: None,
    });
    let wake = Condvar::new();
    let work = |out: &mut Vec<(PathBuf, Vec<Node>)>| loop {
        let job = {
            let mut q = lock(&queue);
            loop {
                if q.failed.is_some() {
                    return;
                }
                if let Some(j) = q.jobs.pop() {
                    q.active += 1;
                    break j;
                }
                if q.active == 0 {
                    return;
                }
                q = wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let res = read_dir(root, &job, ignore, old, started_ns);
        let mut q = lock(&queue);
        q.active -= 1;
        match res {
            Ok((nodes, subdirs)) => {
                q.jobs.extend(subdirs);
                out.push((job, nodes));
            }
            Err(e) => {
                q.failed.get_or_insert(e);
            }
        }
        drop(q);
        wake.notify_all();
    };
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..worker_count())
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    work(&mut out);
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join())
            .collect::<std::result::Result<Vec<_>, _>>()
    });
    let results = results.map_err(|_| SandboxError::Io {
        context: format!("walk {}", root.display()),
        source: std::io::Error::other("a walk thread panicked"),
    })?;
    if let Some(e) = lock(&queue).failed.take() {
        return Err(e);
    }
    Ok(Baseline {
        dirs: results.into_iter().flatten().collect(),
        started_ns,
    })
}

type DirListing = (Vec<Node>, Vec<PathBuf>);

/// Reads one directory: its children's records (sorted by name) and the
/// subdirectories to walk next. Entries that vanish meanwhile are skipped.
fn read_dir(
    root: &Path,
    rel: &Path,
    ignore: &IgnoreSet,
    old: Option<&Baseline>,
    started_ns: i128,
) -> Result<DirListing> {
    let abs = root.join(rel);
    let rd = match fs::read_dir(&abs) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => {
            return Err(SandboxError::Io {
                context: format!("read dir {}", abs.display()),
                source: e,
            })
        }
    };
    let mut nodes = Vec::new();
    let mut subdirs = Vec::new();
    // Per-entry lookups cost as much as the stat itself: do them only in
    // directories where they can hit.
    let check_ignore = ignore.may_hold_ignored(rel);
    let old_hashed: &[Node] = old
        .map(|b| b.children(rel))
        .filter(|c| c.iter().any(|n| n.rec.content_hash.is_some()))
        .unwrap_or_default();
    for ent in rd {
        let ent = ent.ctx(|| format!("read dir {}", abs.display()))?;
        let name = ent.file_name();
        if check_ignore && ignore.contains(&rel.join(&name)) {
            continue;
        }
        let md = match ent.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(SandboxError::Io {
                    context: format!("stat {}", abs.join(&name).display()),
                    source: e,
                })
            }
        };
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            FileKind::Dir
        } else if ft.is_file() {
            FileKind::File
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else if ft.is_char_device() {
            FileKind::CharDevice
        } else if ft.is_block_device() {
            FileKind::BlockDevice
        } else if ft.is_fifo() {
            FileKind::Fifo
        } else {
            continue;
        };
        let symlink_target = match kind {
            FileKind::Symlink => match fs::read_link(abs.join(&name)) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(SandboxError::Io {
                        context: format!("read symlink {}", abs.join(&name).display()),
                        source: e,
                    })
                }
            },
            _ => None,
        };
        let ctime_ns = time_ns(md.ctime(), md.ctime_nsec());
        let was_hashed = || {
            old_hashed
                .binary_search_by(|n| n.name.cmp(&name))
                .ok()
                .and_then(|i| old_hashed.get(i))
                .is_some_and(|n| n.rec.content_hash.is_some())
        };
        let content_hash =
            if kind == FileKind::File && (is_racy(ctime_ns, started_ns) || was_hashed()) {
                match hash_file(&abs.join(&name)) {
                    Ok(h) => Some(h),
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(SandboxError::Io {
                            context: format!("read {}", abs.join(&name).display()),
                            source: e,
                        })
                    }
                }
            } else {
                None
            };
        if kind == FileKind::Dir {
            subdirs.push(rel.join(&name));
        }
        nodes.push(Node {
            name,
            rec: Record {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: md.len(),
                mtime_ns: time_ns(md.mtime(), md.mtime_nsec()),
                ctime_ns,
                btime_ns: md.created().ok().map(system_time_ns),
                dev: md.dev(),
                ino: md.ino(),
                nlink: md.nlink(),
                rdev: md.rdev(),
                symlink_target,
                content_hash,
            },
        });
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((nodes, subdirs))
}

fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(h.finalize().into())
}

/// Whether the object at a path is the same one (not deleted and made
/// again, not replaced by a rename).
fn same_identity(a: &Record, b: &Record) -> bool {
    a.kind == b.kind
        && a.dev == b.dev
        && a.ino == b.ino
        && match (a.btime_ns, b.btime_ns) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

/// Whether a directory present in both walks changed itself (its entries
/// are compared separately).
fn dir_changed(a: &Record, b: &Record) -> bool {
    a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.mtime_ns != b.mtime_ns
        || a.ctime_ns != b.ctime_ns
}

/// Whether a non-directory changed (see the module doc).
fn file_changed(a: &Record, b: &Record) -> bool {
    !same_identity(a, b)
        || a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.size != b.size
        || a.mtime_ns != b.mtime_ns
        || a.rdev != b.rdev
        || a.symlink_target != b.symlink_target
        || (a.ctime_ns != b.ctime_ns && a.nlink == b.nlink)
        || matches!((a.content_hash, b.content_hash), (Some(x), Some(y)) if x != y)
}

struct Differ<'a> {
    root: &'a Path,
    old: &'a Baseline,
    new: &'a Baseline,
    /// First reported path of each multiply-linked file, by (dev, inode).
    links: HashMap<(u64, u64), String>,
}

impl Differ<'_> {
    /// Compares the children of a directory present (and the same) in both
    /// walks.
    fn diff_dir(&mut self, rel: &Path, out: &mut Vec<LayerEntry>) -> Result<()> {
        let (olds, news) = (self.old.children(rel), self.new.children(rel));
        let (mut i, mut j) = (0, 0);
        loop {
            match (olds.get(i), news.get(j)) {
                (None, None) => return Ok(()),
                (Some(o), None) => {
                    out.push(whiteout(&rel.join(&o.name))?);
                    i += 1;
                }
                (None, Some(n)) => {
                    self.added(&rel.join(&n.name), &n.rec, out)?;
                    j += 1;
                }
                (Some(o), Some(n)) => match o.name.cmp(&n.name) {
                    std::cmp::Ordering::Less => {
                        out.push(whiteout(&rel.join(&o.name))?);
                        i += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        self.added(&rel.join(&n.name), &n.rec, out)?;
                        j += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        // The common case, an unchanged file, without
                        // building its path.
                        let unchanged = o.rec.kind != FileKind::Dir
                            && n.rec.kind != FileKind::Dir
                            && !file_changed(&o.rec, &n.rec);
                        if !unchanged {
                            self.present_in_both(&rel.join(&n.name), &o.rec, &n.rec, out)?;
                        }
                        i += 1;
                        j += 1;
                    }
                },
            }
        }
    }

    fn present_in_both(
        &mut self,
        path: &Path,
        o: &Record,
        n: &Record,
        out: &mut Vec<LayerEntry>,
    ) -> Result<()> {
        match (o.kind, n.kind) {
            (FileKind::Dir, FileKind::Dir) if same_identity(o, n) => {
                let mut inside = Vec::new();
                self.diff_dir(path, &mut inside)?;
                if !inside.is_empty() || dir_changed(o, n) {
                    out.push(self.entry(path, n)?);
                    out.append(&mut inside);
                }
            }
            (_, FileKind::Dir) => {
                // Made anew: nothing of the old one shows through, as an
                // overlay marks a directory made over a whiteout opaque.
                let dir = self.entry(path, n)?;
                let opaque = LayerEntry {
                    kind: EntryKind::OpaqueDir,
                    ..dir.clone()
                };
                out.push(dir);
                out.push(opaque);
                self.added_children(path, out)?;
            }
            (FileKind::Dir, _) => out.push(self.entry(path, n)?),
            _ => {
                if file_changed(o, n) {
                    out.push(self.entry(path, n)?);
                }
            }
        }
        Ok(())
    }

    fn added(&mut self, path: &Path, n: &Record, out: &mut Vec<LayerEntry>) -> Result<()> {
        out.push(self.entry(path, n)?);
        if n.kind == FileKind::Dir {
            self.added_children(path, out)?;
        }
        Ok(())
    }

    fn added_children(&mut self, dir: &Path, out: &mut Vec<LayerEntry>) -> Result<()> {
        let new = self.new;
        for c in new.children(dir) {
            self.added(&dir.join(&c.name), &c.rec, out)?;
        }
        Ok(())
    }

    /// The layer entry for a path as the new walk saw it.
    fn entry(&mut self, rel: &Path, r: &Record) -> Result<LayerEntry> {
        let path = layer_path(rel)?;
        let abs = self.root.join(rel);
        let kind = match r.kind {
            FileKind::Dir => EntryKind::Dir,
            FileKind::File => {
                let first = (r.nlink > 1)
                    .then(|| self.links.get(&(r.dev, r.ino)))
                    .flatten();
                match first {
                    Some(first) => EntryKind::Hardlink {
                        target: first.clone(),
                    },
                    None => {
                        if r.nlink > 1 {
                            self.links.insert((r.dev, r.ino), path.clone());
                        }
                        EntryKind::File {
                            source: abs.clone(),
                            size: r.size,
                        }
                    }
                }
            }
            FileKind::Symlink => {
                let t = r.symlink_target.as_deref().unwrap_or(Path::new(""));
                EntryKind::Symlink {
                    target: layer_path_str(t, &abs)?,
                }
            }
            FileKind::CharDevice => EntryKind::CharDevice {
                major: major(r.rdev) as u32,
                minor: minor(r.rdev) as u32,
            },
            FileKind::BlockDevice => EntryKind::BlockDevice {
                major: major(r.rdev) as u32,
                minor: minor(r.rdev) as u32,
            },
            FileKind::Fifo => EntryKind::Fifo,
        };
        Ok(LayerEntry {
            path,
            kind,
            mode: r.mode,
            uid: u64::from(r.uid),
            gid: u64::from(r.gid),
            mtime: r.mtime_ns.div_euclid(NS) as i64,
            xattrs: crate::snapshot::xattrs(&abs)?,
        })
    }
}

fn whiteout(rel: &Path) -> Result<LayerEntry> {
    Ok(LayerEntry {
        path: layer_path(rel)?,
        kind: EntryKind::Whiteout,
        mode: 0,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: Vec::new(),
    })
}

fn layer_path(rel: &Path) -> Result<String> {
    layer_path_str(rel, rel)
}

/// `p` as UTF-8, which a layer entry needs; `at` names the offending path.
fn layer_path_str(p: &Path, at: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| SandboxError::Io {
            context: format!("{} cannot go into a layer", at.display()),
            source: std::io::Error::new(ErrorKind::InvalidData, "the path is not valid UTF-8"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes the baseline record of `rel` carry the file's current stat,
    /// as if the rewrite had happened within one clock tick of the scan
    /// and no timestamp had moved.
    fn freeze_stat(b: &mut Baseline, root: &Path, rel: &str) {
        let md = fs::symlink_metadata(root.join(rel)).unwrap();
        let rel = Path::new(rel);
        let parent = rel.parent().unwrap();
        let node = b
            .dirs
            .get_mut(parent)
            .unwrap()
            .iter_mut()
            .find(|n| n.name == rel.file_name().unwrap())
            .unwrap();
        node.rec.mtime_ns = time_ns(md.mtime(), md.mtime_nsec());
        node.rec.ctime_ns = time_ns(md.ctime(), md.ctime_nsec());
        node.rec.ino = md.ino();
        node.rec.size = md.len();
    }

    #[test]
    fn only_the_content_hash_can_tell_a_rewrite_within_one_tick() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::write(r.join("f"), "aaaa").unwrap();
        fs::write(r.join("g"), "same").unwrap();
        let ign = IgnoreSet::default();
        let mut b = scan(r, &ign).unwrap();
        // Both were written just before the scan, so it hashed them; set
        // the hashes here too so a stalled machine cannot change the case.
        for n in b.dirs.values_mut().flatten() {
            n.rec.content_hash = Some(hash_file(&r.join(&n.name)).unwrap());
        }
        fs::write(r.join("f"), "bbbb").unwrap();
        fs::write(r.join("g"), "same").unwrap();
        freeze_stat(&mut b, r, "f");
        freeze_stat(&mut b, r, "g");
        let (entries, _) = changes(r, &b, &ign).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        // g was rewritten with the same bytes: unchanged.
        assert_eq!(paths, ["f"]);

        // Without the hash, stat alone sees nothing: the hash is what found f.
        for n in b.dirs.values_mut().flatten() {
            n.rec.content_hash = None;
        }
        let (entries, _) = changes(r, &b, &ign).unwrap();
        assert!(entries.is_empty());
    }

    #[test]
    fn racy_window() {
        let start = 1_700_000_000 * NS + 500_000_000;
        assert!(is_racy(start, start));
        assert!(is_racy(start - racy_window_ns(), start));
        assert!(!is_racy(start - racy_window_ns() - 1, start));
        assert!(racy_window_ns() >= 2_000_000 && racy_window_ns() <= RACY_WINDOW_NS);
        assert!(is_racy(start + NS, start));
        // Whole-second stamps: racy for the whole previous second.
        assert!(is_racy(1_699_999_999 * NS, start));
        assert!(!is_racy(1_699_999_998 * NS, start));
    }
}
