//! Stage root filesystems kept between builds, so that a rebuild whose first
//! changed step sits deep in a stage starts from the files the stage had
//! before that step instead of unpacking every layer below it again.
//!
//! A snapshot is a directory under `<cache>/snapshots/`, named after the
//! cache key of the filesystem state it holds (and the user that made it:
//! a root build and a rootless build record owners differently). Two kinds
//! are kept:
//! - a stage's final root at the end of the build (moved: free);
//! - the root just before a step that reads the build context runs, the
//!   usual place a rebuild starts from. It is a hard-link copy: directories
//!   are made, everything else is linked, so no file data is written.
//!
//! Linking is safe because kiln never changes a file of a stage root in
//! place: a RUN's changes land in an overlay upper directory and are renamed
//! in, COPY writes a new file and renames it over the old one, and layer
//! extraction removes a path before creating it. (In-place builds, whose
//! root is the container's, keep no snapshots.)
//!
//! A build uses a snapshot by renaming it into its stage directory, so one
//! build owns it; at most [`KEEP`] are kept, the least recently made going
//! to the build's discard directory (deleted after the build).
//!
//! The copy before a context step may be linked while that step runs: when
//! the step only writes entries of one directory (a COPY to a path that
//! does not exist yet, or into a directory, replacing no subdirectory),
//! that directory is [`Frozen`]: the copy takes only the entries it had and
//! the times it had before the step, and for the files the step replaces,
//! hard links made to them before it ran.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::copy::fsops::{atime_of, copy_xattrs, mtime_of, set_times};

/// How many snapshots a cache directory keeps.
pub const KEEP: usize = 8;

/// The snapshot directory of one cache, for one build.
#[derive(Clone)]
pub struct Snapshots {
    dir: PathBuf,
    /// `false` (`--no-cache`): snapshots are made but never used.
    reuse: bool,
    /// Where evicted snapshots go (deleted after the build).
    discard: PathBuf,
    owner: u32,
}

impl Snapshots {
    pub fn new(dir: PathBuf, discard: PathBuf, reuse: bool) -> Self {
        Snapshots {
            dir,
            reuse,
            discard,
            owner: rustix::process::geteuid().as_raw(),
        }
    }

    /// Whether kept snapshots are used (not with the cache lookups off).
    pub fn reuses(&self) -> bool {
        self.reuse
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{}-{key}", self.owner))
    }

    pub fn has(&self, key: &str) -> bool {
        self.path(key).is_dir()
    }

    /// Moves the snapshot of `key` to `into` (an empty directory, replaced);
    /// false when there is none (or another build took it first).
    pub fn take(&self, key: &str, into: &Path) -> bool {
        let from = self.path(key);
        if !self.reuse || !from.is_dir() || fs::remove_dir(into).is_err() {
            return false;
        }
        if fs::rename(&from, into).is_ok() {
            return true;
        }
        let _ = fs::create_dir_all(into);
        false
    }

    /// Keeps `root` (moved away: the caller no longer has it) as the
    /// snapshot of `key`.
    pub fn keep_moved(&self, key: &str, root: &Path) {
        if self.has(key) || fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        if fs::rename(root, self.path(key)).is_ok() {
            self.evict();
        }
    }

    /// A temporary directory beside the snapshots, where one is made (and
    /// where [`Frozen::before_replacing`] keeps what a step replaces).
    pub fn workspace(&self) -> io::Result<tempfile::TempDir> {
        fs::create_dir_all(&self.dir)?;
        crate::placement::spread_subtrees(&self.dir);
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.dir)
    }

    /// Keeps a hard-link copy of `root` as the snapshot of `key`, with
    /// `frozen` as it was when frozen.
    pub fn keep_linked(&self, key: &str, root: &Path, frozen: Option<&Frozen>) -> io::Result<()> {
        if self.has(key) {
            return Ok(());
        }
        self.keep_linked_in(key, root, frozen, self.workspace()?)
    }

    /// [`Self::keep_linked`], made in `tmp` (from [`Self::workspace`]).
    pub fn keep_linked_in(
        &self,
        key: &str,
        root: &Path,
        frozen: Option<&Frozen>,
        tmp: tempfile::TempDir,
    ) -> io::Result<()> {
        if self.has(key) {
            return Ok(());
        }
        let made = tmp.path().join("root");
        link_tree(root, &made, frozen)?;
        if fs::rename(&made, self.path(key)).is_ok() {
            self.evict();
        }
        // The temp dir (and whatever is left in it) goes with `tmp`.
        Ok(())
    }

    /// Drops the snapshot of `key`: the step that leads to that state ran
    /// again, and its new cache record must not meet the old files.
    pub fn invalidate(&self, key: &str) {
        let p = self.path(key);
        if !p.is_dir() {
            return;
        }
        let _ = fs::create_dir_all(&self.discard);
        let gone = p
            .file_name()
            .is_some_and(|n| fs::rename(&p, self.discard.join(n)).is_ok());
        if !gone {
            let _ = fs::remove_dir_all(&p);
        }
    }

    /// Moves the oldest snapshots beyond [`KEEP`] to the discard directory.
    fn evict(&self) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut snaps: Vec<(i64, PathBuf)> = rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let md = e.metadata().ok()?;
                Some((md.ctime(), e.path()))
            })
            .collect();
        if snaps.len() <= KEEP {
            return;
        }
        snaps.sort();
        let _ = fs::create_dir_all(&self.discard);
        for (_, p) in snaps.iter().take(snaps.len() - KEEP) {
            if let Some(name) = p.file_name() {
                if fs::rename(p, self.discard.join(name)).is_err() {
                    let _ = fs::remove_dir_all(p);
                }
            }
        }
    }
}

/// A directory of a stage root whose entries a running step writes, as it
/// was before: a snapshot linked meanwhile takes only these entries, these
/// times, and for the entries the step replaces the links kept to them
/// (the step changes nothing else of it: not its mode, owner or extended
/// attributes, nor any other entry).
#[derive(Debug, Clone)]
pub struct Frozen {
    /// The directory (a host path below the stage root).
    pub dir: PathBuf,
    pub names: HashSet<OsString>,
    /// Entries the step replaces: hard links to them made before it ran.
    kept: HashMap<OsString, PathBuf>,
    atime: (i64, i64),
    mtime: (i64, i64),
}

impl Frozen {
    /// `dir`'s entries and times now.
    fn of(dir: &Path) -> Option<Frozen> {
        let md = fs::symlink_metadata(dir).ok()?;
        let names = fs::read_dir(dir)
            .ok()?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .ok()?;
        Some(Frozen {
            dir: dir.to_path_buf(),
            names,
            kept: HashMap::new(),
            atime: atime_of(&md),
            mtime: mtime_of(&md),
        })
    }

    /// Before a step that writes only the entries `writes` of the existing
    /// directory `dir` (a superset will do): those it already has are
    /// hard-linked into `stash` (made here; in the snapshot's workspace, on
    /// the same filesystem). `None` when one of them is a directory (the
    /// step would write into it) or a link fails.
    pub fn before_replacing(
        dir: &Path,
        writes: &HashSet<OsString>,
        stash: &Path,
    ) -> Option<Frozen> {
        let mut frozen = Self::of(dir)?;
        let replaced: Vec<OsString> = frozen.names.intersection(writes).cloned().collect();
        if replaced.is_empty() {
            return Some(frozen);
        }
        fs::create_dir(stash).ok()?;
        for (i, name) in replaced.into_iter().enumerate() {
            let from = dir.join(&name);
            if fs::symlink_metadata(&from).ok()?.is_dir() {
                return None;
            }
            // link(2) does not follow a symlink: the link is kept.
            let to = stash.join(i.to_string());
            fs::hard_link(&from, &to).ok()?;
            frozen.kept.insert(name, to);
        }
        Some(frozen)
    }

    /// Where a step that writes only at or below `scope` (a host path in
    /// `root`, symlinks resolved) adds entries, if it only adds new ones:
    /// `scope`'s deepest existing ancestor when `scope` does not exist, or
    /// `scope` itself when it is an empty directory. `None` otherwise (it
    /// may replace entries, or change a directory a snapshot reads).
    pub fn before_writing(root: &Path, scope: &Path) -> Option<Frozen> {
        let dir = match fs::symlink_metadata(scope) {
            Ok(md) if md.is_dir() => fs::read_dir(scope)
                .ok()?
                .next()
                .is_none()
                .then_some(scope)?,
            Ok(_) => return None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut dir = scope.parent()?;
                loop {
                    if !dir.starts_with(root) {
                        return None;
                    }
                    match fs::symlink_metadata(dir) {
                        Ok(md) if md.is_dir() => break dir,
                        Ok(_) => return None,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => dir = dir.parent()?,
                        Err(_) => return None,
                    }
                }
            }
            Err(_) => return None,
        };
        Self::of(dir)
    }

    /// Whether a step that writes the entries `other` froze only writes
    /// what a snapshot of `self` leaves out or has kept links for: entries
    /// of the same directory that `self` does not have or keeps, or
    /// anything below an entry `self` does not have.
    pub fn hides(&self, other: &Frozen) -> bool {
        if other.dir == self.dir {
            return other
                .kept
                .keys()
                .all(|n| !self.names.contains(n) || self.kept.contains_key(n));
        }
        other
            .dir
            .strip_prefix(&self.dir)
            .ok()
            .and_then(|rel| rel.components().next())
            .is_some_and(|first| !self.names.contains(first.as_os_str()))
    }
}

/// Makes `to` a copy of the tree at `from` in which every non-directory is
/// a hard link to the original: directories are created with the
/// original's mode, owner, times and extended attributes; the `frozen`
/// directory with the entries and times it had when frozen.
///
/// Directories are linked by a few threads taking them from a shared list:
/// link(2) and mkdir(2) in different directories proceed in parallel in the
/// kernel (about 1.5x faster on two cores for a 25,000-entry root). Each
/// directory's metadata is set once every entry is made, since making an
/// entry changes its parent's times.
pub fn link_tree(from: &Path, to: &Path, frozen: Option<&Frozen>) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(to)?;
    let work = LinkWork {
        frozen,
        state: std::sync::Mutex::new(LinkState {
            todo: vec![(from.to_path_buf(), to.to_path_buf())],
            busy: 0,
            error: None,
        }),
        wake: std::sync::Condvar::new(),
        made: std::sync::Mutex::new(Vec::new()),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|| work.run());
        }
        work.run();
    });
    let state = work
        .state
        .into_inner()
        .map_err(|_| io::Error::other("a linking thread panicked"))?;
    if let Some(e) = state.error {
        return Err(e);
    }
    let made = work
        .made
        .into_inner()
        .map_err(|_| io::Error::other("a linking thread panicked"))?;
    let root = rustix::process::geteuid().is_root();
    // Deepest first (a directory is noted before its subdirectories): a
    // parent's mode never stops setting a child's when not root.
    for (src, dst) in made.into_iter().rev() {
        let md = fs::symlink_metadata(&src)?;
        copy_xattrs(&src, &dst);
        if root {
            std::os::unix::fs::lchown(&dst, Some(md.uid()), Some(md.gid()))?;
        }
        kiln_image::root::chmod_nofollow(&dst, md.mode() & 0o7777)?;
        match frozen.filter(|f| f.dir == src) {
            Some(f) => set_times(&dst, Some(f.atime), Some(f.mtime))?,
            None => set_times(&dst, Some(atime_of(&md)), Some(mtime_of(&md)))?,
        }
    }
    Ok(())
}

/// The shared state of one [`link_tree`].
struct LinkWork<'a> {
    frozen: Option<&'a Frozen>,
    state: std::sync::Mutex<LinkState>,
    wake: std::sync::Condvar,
    /// Every directory made: (original, copy).
    made: std::sync::Mutex<Vec<(PathBuf, PathBuf)>>,
}

struct LinkState {
    /// Directories made whose entries are still to be linked.
    todo: Vec<(PathBuf, PathBuf)>,
    /// Directories being linked right now.
    busy: usize,
    error: Option<io::Error>,
}

impl LinkWork<'_> {
    /// Takes directories until none are left (or one failed).
    fn run(&self) {
        loop {
            let Some((src, dst)) = self.next() else {
                return;
            };
            let mut found = Vec::new();
            let result = match self.frozen.filter(|f| f.dir == src) {
                Some(frozen) => link_frozen(&src, &dst, frozen, &mut found),
                None => link_entries(&src, &dst, &mut found),
            };
            if let Ok(mut made) = self.made.lock() {
                made.push((src, dst));
            }
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            state.busy -= 1;
            match result {
                Ok(()) => state.todo.extend(found),
                Err(e) => {
                    state.error.get_or_insert(e);
                }
            }
            self.wake.notify_all();
        }
    }

    /// The next directory to link, waiting while others may still add
    /// some; `None` when all are done or one failed.
    fn next(&self) -> Option<(PathBuf, PathBuf)> {
        let mut state = self.state.lock().ok()?;
        loop {
            if state.error.is_some() {
                return None;
            }
            if let Some(dir) = state.todo.pop() {
                state.busy += 1;
                return Some(dir);
            }
            if state.busy == 0 {
                return None;
            }
            state = self.wake.wait(state).ok()?;
        }
    }
}

/// Links every non-directory of `src` into `dst` and makes its
/// subdirectories (metadata comes later), noting them in `found`.
fn link_entries(src: &Path, dst: &Path, found: &mut Vec<(PathBuf, PathBuf)>) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let is_dir = entry.file_type()?.is_dir();
        link_one(entry.path(), dst.join(entry.file_name()), is_dir, found)?;
    }
    Ok(())
}

/// Makes directory `to` (noted in `found`, its entries and metadata come
/// later) or hard-links non-directory `from` there.
fn link_one(
    from: PathBuf,
    to: PathBuf,
    is_dir: bool,
    found: &mut Vec<(PathBuf, PathBuf)>,
) -> io::Result<()> {
    if is_dir {
        fs::DirBuilder::new().mode(0o700).create(&to)?;
        found.push((from, to));
    } else {
        // link(2) does not follow a symlink: the link is linked.
        fs::hard_link(&from, &to)?;
    }
    Ok(())
}

/// [`link_entries`] for the frozen directory `src`: the entries it had
/// (not a listing of it now, which a running step changes), the replaced
/// ones from the links kept to them.
fn link_frozen(
    src: &Path,
    dst: &Path,
    frozen: &Frozen,
    found: &mut Vec<(PathBuf, PathBuf)>,
) -> io::Result<()> {
    for name in &frozen.names {
        let to = dst.join(name);
        if let Some(kept) = frozen.kept.get(name) {
            fs::hard_link(kept, &to)?;
            continue;
        }
        let from = src.join(name);
        let is_dir = fs::symlink_metadata(&from)?.is_dir();
        link_one(from, to, is_dir, found)?;
    }
    Ok(())
}

/// A lock one holder at a time may take, which the holder may hand to
/// another thread (a `MutexGuard` cannot leave its thread). Stages on the
/// same base image take it to unpack that base once: the holder keeps the
/// copy of the base's files, possibly on a background thread while its
/// first step runs, and the next holder takes that copy.
#[derive(Default)]
pub(crate) struct Gate {
    held: std::sync::Mutex<bool>,
    freed: std::sync::Condvar,
}

/// Holds a [`Gate`] until dropped.
pub(crate) struct GateHold(std::sync::Arc<Gate>);

impl Gate {
    /// Waits until the gate is free, then holds it.
    pub(crate) fn hold(gate: &std::sync::Arc<Gate>) -> Option<GateHold> {
        let mut held = gate.held.lock().ok()?;
        while *held {
            held = gate.freed.wait(held).ok()?;
        }
        *held = true;
        Some(GateHold(gate.clone()))
    }
}

impl Drop for GateHold {
    fn drop(&mut self) {
        if let Ok(mut held) = self.0.held.lock() {
            *held = false;
        }
        self.0.freed.notify_all();
    }
}

/// A snapshot of a stage root linked on a background thread.
pub(crate) struct SnapshotJob {
    pub(crate) thread: std::thread::JoinHandle<()>,
    /// The directory whose entries the step that followed it writes
    /// (`None`: a copy of the whole root, which nothing may change).
    pub(crate) frozen: Option<Frozen>,
}

/// Waits for the snapshots still being linked: the root is about to
/// change where they would see it.
pub(crate) fn join_all(jobs: &mut Vec<SnapshotJob>) {
    for job in jobs.drain(..) {
        if job.thread.join().is_err() {
            tracing::debug!("a snapshot thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn linked_copy_shares_files_and_keeps_directory_metadata() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        fs::write(root.join("a/b/f"), "x").expect("write");
        symlink("b/f", root.join("a/l")).expect("symlink");
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o750)).expect("chmod");
        let copy = t.path().join("copy");
        link_tree(&root, &copy, None).expect("link tree");
        let (f1, f2) = (
            fs::metadata(root.join("a/b/f")).expect("stat"),
            fs::metadata(copy.join("a/b/f")).expect("stat"),
        );
        assert_eq!((f1.dev(), f1.ino()), (f2.dev(), f2.ino()));
        assert_eq!(
            fs::read_link(copy.join("a/l")).expect("readlink"),
            Path::new("b/f")
        );
        let d = fs::metadata(copy.join("a")).expect("stat");
        assert_eq!(d.mode() & 0o7777, 0o750);
        assert_eq!(
            d.mtime(),
            fs::metadata(root.join("a")).expect("stat").mtime()
        );
    }

    #[test]
    fn a_wide_and_deep_tree_is_linked_whole() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        for d in 0..40 {
            let dir = root.join(format!("d{d}/e{}/f", d % 7));
            fs::create_dir_all(&dir).expect("mkdir");
            for f in 0..25 {
                fs::write(dir.join(format!("x{f}")), format!("{d}/{f}")).expect("write");
            }
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o500 + d % 3 * 0o10))
                .expect("chmod");
        }
        let copy = t.path().join("copy");
        link_tree(&root, &copy, None).expect("link tree");
        let walk = |base: &Path| {
            let mut out = Vec::new();
            let mut stack = vec![base.to_path_buf()];
            while let Some(dir) = stack.pop() {
                for e in fs::read_dir(&dir).expect("read dir") {
                    let p = e.expect("entry").path();
                    let md = fs::symlink_metadata(&p).expect("stat");
                    let rel = p.strip_prefix(base).expect("below").to_path_buf();
                    if md.is_dir() {
                        stack.push(p);
                        out.push((rel, md.mode(), md.mtime(), 0));
                    } else {
                        out.push((rel, md.mode(), md.mtime(), md.ino()));
                    }
                }
            }
            out.sort();
            out
        };
        let (a, b) = (walk(&root), walk(&copy));
        // 1,000 files in 40 × 3 directories.
        assert_eq!(a.len(), 40 * 25 + 40 * 3);
        assert_eq!(a, b);
    }

    #[test]
    fn a_frozen_directory_is_copied_as_it_was_before_the_step() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        fs::create_dir_all(root.join("app/sub")).expect("mkdir");
        fs::write(root.join("app/old.txt"), "old").expect("write");
        fs::create_dir_all(root.join("work")).expect("mkdir");
        set_times(&root.join("app"), Some((1_000, 0)), Some((2_000, 5))).expect("times");
        // A COPY to a new file in /app freezes /app; into the empty /work,
        // /work; over an existing file or into a full directory, nothing.
        let f = Frozen::before_writing(&root, &root.join("app/new.txt")).expect("frozen");
        assert_eq!(f.dir, root.join("app"));
        let names: std::collections::BTreeSet<_> = f.names.iter().cloned().collect();
        assert_eq!(
            names,
            ["old.txt".into(), "sub".into()].into_iter().collect()
        );
        let deep = Frozen::before_writing(&root, &root.join("app/a/b/c")).expect("frozen");
        assert_eq!(deep.dir, root.join("app"));
        let work = Frozen::before_writing(&root, &root.join("work")).expect("frozen");
        assert!(work.dir == root.join("work") && work.names.is_empty());
        assert!(Frozen::before_writing(&root, &root.join("app/old.txt")).is_none());
        assert!(Frozen::before_writing(&root, &root.join("app")).is_none());
        // What a snapshot of /app-as-frozen leaves out.
        assert!(f.hides(&Frozen::before_writing(&root, &root.join("app/other")).expect("f")));
        assert!(!f.hides(&work));

        // The step runs before the copy is linked (the worst interleaving):
        // new entries, a temp file, and new times on /app.
        fs::write(root.join("app/new.txt"), "new").expect("write");
        fs::write(root.join("app/.kiln-tmp-1-1"), "partial").expect("write");
        fs::create_dir_all(root.join("app/a/b")).expect("mkdir");
        fs::write(root.join("work/w.txt"), "w").expect("write");
        let copy = t.path().join("copy");
        link_tree(&root, &copy, Some(&f)).expect("link tree");
        // (Before listing it, which may update its atime.)
        let md = fs::metadata(copy.join("app")).expect("stat");
        assert_eq!((md.atime(), md.mtime(), md.mtime_nsec()), (1_000, 2_000, 5));
        let mut listed: Vec<_> = fs::read_dir(copy.join("app"))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        listed.sort();
        assert_eq!(listed, ["old.txt", "sub"]);
        assert_ne!(
            fs::metadata(root.join("app")).expect("stat").mtime(),
            2_000,
            "the root's /app did change"
        );
        // Only the frozen directory is filtered.
        assert!(copy.join("work/w.txt").is_file());
    }

    #[test]
    fn files_a_step_replaces_are_kept_for_the_snapshot_linked_meanwhile() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        let app = root.join("app");
        fs::create_dir_all(app.join(".venv/lib")).expect("mkdir");
        fs::write(app.join(".venv/lib/x.py"), "x").expect("write");
        fs::write(app.join("pyproject.toml"), "old").expect("write");
        symlink("pyproject.toml", app.join("link")).expect("symlink");
        set_times(&app, Some((1_000, 0)), Some((2_000, 0))).expect("times");
        let names =
            |list: &[&str]| -> HashSet<OsString> { list.iter().map(OsString::from).collect() };
        let snaps = Snapshots::new(t.path().join("snaps"), t.path().join("discard"), true);
        let space = snaps.workspace().expect("workspace");
        // A COPY writing into .venv (a directory it would merge into) cannot
        // go on beside a snapshot.
        let merge = names(&[".venv", "new.txt"]);
        assert!(Frozen::before_replacing(&app, &merge, &space.path().join("k0")).is_none());
        let writes = names(&["pyproject.toml", "link", "src", "new.txt"]);
        let f =
            Frozen::before_replacing(&app, &writes, &space.path().join("kept")).expect("frozen");
        // A second COPY replacing what the first keeps, or adding new
        // entries, is hidden; one replacing an entry the first links from
        // the root is not.
        let again =
            Frozen::before_replacing(&app, &names(&["pyproject.toml", "b"]), &t.path().join("k2"))
                .expect("frozen");
        assert!(f.hides(&again));
        let other =
            Frozen::before_replacing(&app, &names(&["a", "b"]), &t.path().join("k3")).expect("f");
        assert!(f.hides(&other));
        let venv = app.join(".venv/lib");
        let replace_venv = Frozen::before_replacing(&venv, &names(&["x.py"]), &t.path().join("k4"))
            .expect("frozen");
        assert!(f.hides(&Frozen::before_writing(&root, &app.join("src/deep")).expect("f")));
        assert!(
            !f.hides(&replace_venv),
            "below an entry the snapshot links from the root"
        );

        // The step replaces the file and the symlink, adds a directory and
        // a file (through temp names), before the copy is linked.
        fs::write(app.join(".kiln-tmp-1-1"), "new").expect("write");
        fs::rename(app.join(".kiln-tmp-1-1"), app.join("pyproject.toml")).expect("rename");
        fs::remove_file(app.join("link")).expect("rm");
        symlink("elsewhere", app.join("link")).expect("symlink");
        fs::create_dir_all(app.join("src")).expect("mkdir");
        fs::write(app.join("new.txt"), "n").expect("write");
        let key = "k";
        snaps
            .keep_linked_in(key, &root, Some(&f), space)
            .expect("snapshot");
        let copy = snaps.path(key);
        let md = fs::metadata(copy.join("app")).expect("stat");
        assert_eq!(md.mtime(), 2_000);
        let mut listed: Vec<_> = fs::read_dir(copy.join("app"))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        listed.sort();
        assert_eq!(listed, [".venv", "link", "pyproject.toml"]);
        assert_eq!(
            fs::read_to_string(copy.join("app/pyproject.toml")).expect("read"),
            "old"
        );
        assert_eq!(
            fs::read_link(copy.join("app/link")).expect("readlink"),
            Path::new("pyproject.toml")
        );
        assert_eq!(
            fs::read_to_string(copy.join("app/.venv/lib/x.py")).expect("read"),
            "x"
        );
        assert_eq!(
            fs::read_to_string(app.join("pyproject.toml")).expect("read"),
            "new"
        );
        // The workspace (with the kept links) is gone.
        let left: Vec<_> = fs::read_dir(t.path().join("snaps"))
            .expect("snaps")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, [OsString::from(format!("{}-{key}", snaps.owner))]);
    }

    #[test]
    fn a_snapshot_is_taken_once_and_old_ones_are_evicted() {
        let t = tempfile::tempdir().expect("tempdir");
        let snaps = Snapshots::new(t.path().join("snaps"), t.path().join("discard"), true);
        for i in 0..KEEP + 2 {
            let root = t.path().join(format!("r{i}"));
            fs::create_dir_all(root.join("etc")).expect("mkdir");
            snaps.keep_moved(&format!("k{i}"), &root);
            assert!(!root.exists(), "moved");
            // ctime has coarse ticks: keep the order unambiguous.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!snaps.has("k0") && !snaps.has("k1"), "the oldest went");
        assert!(
            t.path()
                .join("discard")
                .read_dir()
                .expect("discard")
                .count()
                == 2
        );
        let into = t.path().join("stage");
        fs::create_dir(&into).expect("mkdir");
        assert!(snaps.take(&format!("k{}", KEEP + 1), &into));
        assert!(into.join("etc").is_dir());
        assert!(!snaps.has(&format!("k{}", KEEP + 1)));
        let again = t.path().join("stage2");
        fs::create_dir(&again).expect("mkdir");
        assert!(!snaps.take(&format!("k{}", KEEP + 1), &again));
        assert!(again.is_dir(), "left as it was");
    }
}
