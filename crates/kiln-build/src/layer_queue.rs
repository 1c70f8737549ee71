//! A stage's layer queue: the layers whose writers run in the background
//! while the stage's next steps do, and the rules that say which of them
//! must be finished ("settled") before a step may change the root they
//! read.
//!
//! A pending layer's files are on the stage's root filesystem and none of
//! them may change until it is settled: a RUN reads that root only as its
//! overlay's lower directory and merges its own changes after; WORKDIR and
//! a cache hit settle first; a COPY settles only the layers that read a
//! file it may write ([`LayerQueue::settle_count_for_write`]); a RUN whose
//! merge replaces files the writers read has them kept aside by hard links
//! first ([`LayerQueue::touched_by`], [`LayerQueue::keep_for_writers`]).
//! Layers are settled in step order. Recording settled layers (caches,
//! progress) is the executor's; this module owns the queue and its rules.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_image::{BlobStore, History, Layer, LayerEntry, LayerOptions};

/// Names the links [`LayerQueue::keep_for_writers`] makes.
static KEPT_FOR_WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A layer whose writer runs while the next steps do.
pub(crate) struct PendingLayer {
    pub(crate) writer: std::thread::JoinHandle<kiln_image::Result<Layer>>,
    /// The progress id of the step that made it.
    pub(crate) step: usize,
    /// That step's cache key, once the executor has it.
    pub(crate) key: Option<String>,
    /// That step's history entry.
    pub(crate) history: Option<History>,
    /// Whether its files are in the stage root.
    pub(crate) on_disk: bool,
    /// The stage-root files it reads (when `on_disk`).
    pub(crate) files: HashSet<PathBuf>,
    /// The stage whose step made it (a stage built `FROM` that one may
    /// settle it).
    pub(crate) stage: usize,
    /// Files of `files` that a later step replaced or deleted, and the
    /// hard link kept to each for the writer, which opens a file only
    /// while holding this lock.
    moved: Arc<Mutex<HashMap<PathBuf, PathBuf>>>,
}

/// What a new layer is made of.
pub(crate) struct NewLayer {
    pub(crate) store: BlobStore,
    pub(crate) options: LayerOptions,
    pub(crate) entries: Vec<LayerEntry>,
    /// Whether the entries' files are in the stage root (false for a
    /// layer made straight from the build context).
    pub(crate) on_disk: bool,
    pub(crate) step: usize,
    pub(crate) stage: usize,
    pub(crate) history: Option<History>,
}

/// What merging a RUN's changes does to the files pending layers read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Touch {
    /// None of them changes.
    Nothing,
    /// These (paths below the root) are replaced or deleted themselves:
    /// kept aside for their writers, the merge may go on.
    Replaces(BTreeSet<String>),
    /// The merge may remove them wholesale (a deletion, an opaque
    /// directory or a non-directory over a directory holding one), or
    /// what they read is not known: settle everything first.
    Everything,
}

/// See the module doc.
#[derive(Default)]
pub(crate) struct LayerQueue {
    pending: VecDeque<PendingLayer>,
}

impl LayerQueue {
    /// Starts writing a layer in the background and queues it.
    pub(crate) fn push(&mut self, new: NewLayer) -> std::io::Result<()> {
        // The files the writer will read from the stage root: a later
        // COPY that writes none of them need not wait for it.
        let files = if new.on_disk {
            new.entries
                .iter()
                .filter_map(|e| match &e.kind {
                    kiln_image::EntryKind::File { source, .. } => Some(source.clone()),
                    _ => None,
                })
                .collect()
        } else {
            HashSet::new()
        };
        let moved: Arc<Mutex<HashMap<PathBuf, PathBuf>>> = Arc::default();
        let table = moved.clone();
        let (store, entries, options) = (new.store, new.entries, new.options);
        let writer = std::thread::Builder::new()
            .name("kiln-layer".into())
            .spawn(move || {
                // Opened under the lock: a file is either where it was or
                // already kept aside when the writer looks.
                let open = |source: &Path| {
                    let moved = table
                        .lock()
                        .map_err(|_| std::io::Error::other("a layer writer's file table broke"))?;
                    kiln_image::open_source(moved.get(source).map_or(source, |p| p.as_path()))
                };
                kiln_image::write_layer_opening(&store, entries, &options, &open)
            })?;
        self.pending.push_back(PendingLayer {
            writer,
            step: new.step,
            key: None,
            history: new.history,
            on_disk: new.on_disk,
            files,
            stage: new.stage,
            moved,
        });
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether every pending layer's files are in the stage root.
    pub(crate) fn all_on_disk(&self) -> bool {
        self.pending.iter().all(|p| p.on_disk)
    }

    /// The oldest layer, to settle.
    pub(crate) fn pop_front(&mut self) -> Option<PendingLayer> {
        self.pending.pop_front()
    }

    /// The newest layer when its step's key is not known yet.
    pub(crate) fn newest_unkeyed(&mut self) -> Option<&mut PendingLayer> {
        self.pending.back_mut().filter(|p| p.key.is_none())
    }

    /// Takes every pending layer out (to hand the queue to the next stage,
    /// to defer it to the end of the build, or to wait for it).
    pub(crate) fn take(&mut self) -> LayerQueue {
        std::mem::take(self)
    }

    /// Waits for every writer, dropping what it wrote.
    pub(crate) fn join_all(&mut self) {
        for p in self.pending.drain(..) {
            let _ = p.writer.join();
        }
    }

    /// How many layers, from the oldest, must be settled before a COPY that
    /// writes only at or below `dest` (a host path in the stage root; when
    /// `names` is given, only below those entries of it): up to the last
    /// one that reads a file the COPY may write. Layers after it go on
    /// being written.
    pub(crate) fn settle_count_for_write(
        &self,
        dest: &Path,
        names: Option<&HashSet<OsString>>,
    ) -> usize {
        let written = |f: &Path| match (f.strip_prefix(dest), names) {
            (Err(_), _) => false,
            (Ok(_), None) => true,
            (Ok(rel), Some(names)) => rel
                .components()
                .next()
                .is_none_or(|first| names.contains(first.as_os_str())),
        };
        self.pending
            .iter()
            .rposition(|p| p.files.iter().any(|f| written(f)))
            .map_or(0, |i| i + 1)
    }

    /// What merging a RUN's `changes` (paths relative to `rootfs`) does to
    /// the files the pending layers read.
    pub(crate) fn touched_by(&self, rootfs: &Path, changes: &[LayerEntry]) -> Touch {
        if self.pending.is_empty() {
            return Touch::Nothing;
        }
        if !self.all_on_disk() {
            return Touch::Everything;
        }
        let read: BTreeSet<String> = self
            .pending
            .iter()
            .flat_map(|p| p.files.iter())
            .filter_map(|f| f.strip_prefix(rootfs).ok())
            .map(|r| r.to_string_lossy().into_owned())
            .collect();
        // A change that is not a directory (a deletion, a replacement by a
        // file or link, an opaque directory) removes everything below it.
        let below_a_removal = changes.iter().any(|c| {
            let below = format!("{}/", c.path);
            !matches!(c.kind, kiln_image::EntryKind::Dir)
                && read
                    .range(below.clone()..)
                    .next()
                    .is_some_and(|r| r.starts_with(&below))
        });
        if below_a_removal {
            return Touch::Everything;
        }
        let replaced: BTreeSet<String> = changes
            .iter()
            .map(|c| c.path.clone())
            .filter(|p| read.contains(p))
            .collect();
        if replaced.is_empty() {
            Touch::Nothing
        } else {
            Touch::Replaces(replaced)
        }
    }

    /// Keeps a hard link to each of `replaced` (paths relative to
    /// `rootfs`, read by pending layers) in `kept` (the build's discard
    /// directory), and points the writers that read the file there: the
    /// merge that follows may then replace or delete it. A writer that
    /// opened the file before keeps reading what it opened; the merge
    /// only starts once every link is made and recorded.
    pub(crate) fn keep_for_writers(
        &self,
        rootfs: &Path,
        replaced: &BTreeSet<String>,
        kept: &Path,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(kept)?;
        for rel in replaced {
            let source = rootfs.join(rel);
            // A writer that has a link already keeps it: the file as its
            // step left it (the path may have been deleted since).
            let readers: Vec<&PendingLayer> = self
                .pending
                .iter()
                .filter(|p| p.files.contains(&source))
                .filter(|p| p.moved.lock().is_ok_and(|m| !m.contains_key(&source)))
                .collect();
            if readers.is_empty() {
                continue;
            }
            let n = KEPT_FOR_WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let link = kept.join(format!("w{}-{n}", std::process::id()));
            std::fs::hard_link(&source, &link)?;
            for p in readers {
                let mut moved = p
                    .moved
                    .lock()
                    .map_err(|_| std::io::Error::other("a layer writer's file table broke"))?;
                moved.entry(source.clone()).or_insert_with(|| link.clone());
            }
        }
        Ok(())
    }
}

impl IntoIterator for LayerQueue {
    type Item = PendingLayer;
    type IntoIter = std::collections::vec_deque::IntoIter<PendingLayer>;

    fn into_iter(self) -> Self::IntoIter {
        self.pending.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage root with files, a store, and a queue of real writers.
    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        store: BlobStore,
        queue: LayerQueue,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        for d in ["app", "app/sub", "etc", "var"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        for f in ["app/a", "app/b", "app/sub/c", "etc/conf", "var/log"] {
            std::fs::write(root.join(f), f).expect("write");
        }
        let store = BlobStore::open(&tmp.path().join("store")).expect("store");
        Fixture {
            _tmp: tmp,
            root,
            store,
            queue: LayerQueue::default(),
        }
    }

    impl Fixture {
        /// Queues a layer of `files` (paths below the root).
        fn push(&mut self, files: &[&str], on_disk: bool) {
            let entries = files
                .iter()
                .map(|f| LayerEntry {
                    path: f.to_string(),
                    kind: kiln_image::EntryKind::File {
                        source: self.root.join(f),
                        size: f.len() as u64,
                    },
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    xattrs: Vec::new(),
                })
                .collect();
            let step = self.queue.len();
            self.queue
                .push(NewLayer {
                    store: self.store.clone(),
                    // Uncompressed, so the test reads the tar as it is.
                    options: LayerOptions {
                        compression: kiln_image::Compression::None,
                        ..LayerOptions::default()
                    },
                    entries,
                    on_disk,
                    step,
                    stage: 0,
                    history: None,
                })
                .expect("push");
        }

        fn settle_all(&mut self) -> Vec<Layer> {
            let mut out = Vec::new();
            while let Some(p) = self.queue.pop_front() {
                out.push(p.writer.join().expect("join").expect("layer"));
            }
            out
        }
    }

    fn entry(path: &str, kind: kiln_image::EntryKind) -> LayerEntry {
        LayerEntry {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }

    #[test]
    fn a_copy_settles_up_to_the_last_layer_reading_what_it_writes() {
        let mut f = fixture();
        f.push(&["app/a"], true);
        f.push(&["etc/conf"], true);
        f.push(&["app/sub/c"], true);
        f.push(&["var/log"], true);
        let app = f.root.join("app");
        // Into /app: layers 0 and 2 read there; the last one goes on.
        assert_eq!(f.queue.settle_count_for_write(&app, None), 3);
        // Only the entry `b` of /app: nothing it writes is read.
        let names: HashSet<OsString> = [OsString::from("b")].into();
        assert_eq!(f.queue.settle_count_for_write(&app, Some(&names)), 0);
        // The entry `sub`: up to layer 2.
        let names: HashSet<OsString> = [OsString::from("sub")].into();
        assert_eq!(f.queue.settle_count_for_write(&app, Some(&names)), 3);
        // Somewhere nothing is read.
        assert_eq!(f.queue.settle_count_for_write(&f.root.join("opt"), None), 0);
        // Writing at the root touches everything.
        let root = f.root.clone();
        assert_eq!(f.queue.settle_count_for_write(&root, None), 4);
        assert_eq!(f.settle_all().len(), 4);
    }

    #[test]
    fn a_run_that_replaces_read_files_has_them_kept_for_the_writers() {
        let mut f = fixture();
        f.push(&["app/a", "etc/conf"], true);
        let dir = kiln_image::EntryKind::Dir;
        let file = || kiln_image::EntryKind::Bytes(b"new".to_vec());
        // Unrelated changes, and a directory that holds a read file.
        assert_eq!(
            f.queue.touched_by(
                &f.root,
                &[entry("opt/x", file()), entry("app", dir.clone())]
            ),
            Touch::Nothing
        );
        // A read file replaced: kept aside.
        let touch = f.queue.touched_by(&f.root, &[entry("app/a", file())]);
        assert_eq!(touch, Touch::Replaces(["app/a".to_string()].into()));
        // A non-directory over a directory holding one: everything.
        assert_eq!(
            f.queue.touched_by(&f.root, &[entry("etc", file())]),
            Touch::Everything
        );
        // Keep `app/a`, then replace it the way a merge does: the writer
        // still writes what the step left there.
        let Touch::Replaces(replaced) = touch else {
            unreachable!("asserted above")
        };
        let kept = f.root.parent().expect("parent").join("kept");
        f.queue
            .keep_for_writers(&f.root, &replaced, &kept)
            .expect("keep");
        assert_eq!(std::fs::read_dir(&kept).expect("kept").count(), 1);
        std::fs::remove_file(f.root.join("app/a")).expect("rm");
        std::fs::write(f.root.join("app/a"), "changed later").expect("write");
        let layers = f.settle_all();
        let [layer] = layers.as_slice() else {
            panic!("one layer")
        };
        let blob = f.store.open_blob(&layer.digest).expect("blob");
        let mut tar = tar::Archive::new(blob);
        let mut seen = Vec::new();
        for e in tar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let mut body = String::new();
            std::io::Read::read_to_string(&mut e, &mut body).expect("read");
            seen.push((e.path().expect("path").display().to_string(), body));
        }
        assert!(seen.contains(&("app/a".into(), "app/a".into())), "{seen:?}");
    }

    #[test]
    fn layers_not_on_disk_make_every_merge_settle_first() {
        let mut f = fixture();
        f.push(&["app/a"], false);
        assert!(!f.queue.all_on_disk());
        assert_eq!(
            f.queue.touched_by(
                &f.root,
                &[entry("opt/x", kiln_image::EntryKind::Bytes(Vec::new()))]
            ),
            Touch::Everything
        );
        // Off disk, a layer reads nothing of the root: no COPY waits for it.
        assert_eq!(f.queue.settle_count_for_write(&f.root, None), 0);
        let mut handed = f.queue.take();
        assert!(f.queue.is_empty());
        assert_eq!(handed.len(), 1);
        assert!(handed.newest_unkeyed().is_some());
        handed.join_all();
        assert!(handed.is_empty());
    }
}
