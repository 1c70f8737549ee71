//! The local step cache: cache keys, and records of what each step produced.
//!
//! A step's key is a SHA-256 over everything that can change its result:
//! the parent step's key (so, transitively, the base image digest and every
//! earlier step), the instruction after variable expansion, the environment
//! and build arguments the step can see, heredoc bodies, the content and
//! metadata of every file COPY/ADD reads (never mtimes alone), the source
//! stage's key for `--from`, mount definitions (never secret contents) and
//! the platform. Keys are computed by [`KeyBuilder`], a length-prefixed
//! field encoding so two different field lists can never hash alike.
//!
//! A record ([`StepRecord`]) maps a key to the step's layer (if it made one)
//! and its history entry. Records live in
//! `<cache-dir>/steps/<key>.json` and are written atomically (temp file in
//! the same directory, fsync, rename), so concurrent builds sharing a cache
//! dir see either a whole record or none. A record whose layer blob is
//! missing from the store is treated as a miss.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use kiln_dockerfile::pattern::PatternSet;
use kiln_image::{BlobStore, History, Layer};

/// Builds a cache key from typed fields.
#[derive(Clone)]
pub struct KeyBuilder {
    hasher: Sha256,
}

impl KeyBuilder {
    /// Starts a key for a step of kind `what` (e.g. `"COPY"`), versioned so
    /// a change in kiln's key scheme never reuses old records.
    pub fn new(what: &str) -> Self {
        let mut k = KeyBuilder {
            hasher: Sha256::new(),
        };
        k.field("kiln-step-key-v1");
        k.field(what);
        k
    }

    /// Adds one field.
    pub fn field(&mut self, value: &str) -> &mut Self {
        self.bytes(value.as_bytes())
    }

    /// Adds one binary field.
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.hasher.update((value.len() as u64).to_le_bytes());
        self.hasher.update(value);
        self
    }

    /// Adds a list of fields (its length first).
    pub fn list<S: AsRef<str>>(&mut self, values: &[S]) -> &mut Self {
        self.hasher.update((values.len() as u64).to_le_bytes());
        for v in values {
            self.field(v.as_ref());
        }
        self
    }

    /// The key, as lowercase hex.
    pub fn finish(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

/// What a cached step produced: its layer (if it made one) and its history
/// entry, whose `created` time is reused on a hit so a rebuild that changes
/// nothing yields the same image digest. The image config itself is always
/// recomputed from the Dockerfile (metadata instructions are cheap), so a
/// record never carries stale labels or environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// The layer the step added, if any.
    pub layer: Option<Layer>,
    /// The step's history entry.
    pub history: History,
}

/// Somewhere step records can be looked up and stored: the local cache
/// directory, or a registry cache.
pub trait CacheBackend: Send + Sync {
    /// How progress names a hit from here (`local`, `registry host/repo`).
    fn describe(&self) -> String;
    /// The record for `key`, with its layer blob present in `store` (a
    /// remote backend downloads it). `None` on a miss or any failure: a
    /// cache that cannot be read only costs time.
    fn get(&self, key: &str, store: &BlobStore) -> Option<StepRecord>;
    /// Stores a record whose layer blob is in `store`.
    fn put(&self, key: &str, record: &StepRecord, store: &BlobStore) -> Result<(), CacheError>;
}

/// Why a cache could not be parsed, read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A `--cache-to` / `--cache-from` value that does not parse.
    #[error("{flag} {spec}: {problem}")]
    BadSpec {
        flag: &'static str,
        spec: String,
        problem: String,
    },
    /// `--cache-from type=inline` names nothing to read.
    #[error("type=inline names no cache to read; use --cache-from type=registry,ref=IMAGE for an image built with an inline cache")]
    InlineImport,
    /// A cache image reference that does not parse.
    #[error("{reference}: {source}")]
    Reference {
        reference: String,
        #[source]
        source: Box<kiln_registry::Error>,
    },
    /// A pull or push of a cache image failed.
    #[error("{action}{reference}: {source}")]
    Transfer {
        /// `"pushing "` or `""` (an import names only the reference).
        action: &'static str,
        reference: String,
        #[source]
        source: Box<kiln_registry::Error>,
    },
    /// The local step cache could not be written.
    #[error(transparent)]
    Local(#[from] std::io::Error),
    /// A cache image could not be stored or read in the blob store.
    #[error(transparent)]
    Image(#[from] kiln_image::Error),
    #[error(transparent)]
    Build(Box<crate::BuildError>),
}

/// The step records under a cache directory.
pub struct StepCache {
    dir: PathBuf,
}

impl StepCache {
    pub fn open(cache_dir: &Path) -> std::io::Result<Self> {
        let dir = cache_dir.join("steps");
        crate::scratch::private_dir(&dir)?;
        Ok(StepCache { dir })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The record for `key`, if it exists, parses, and its layer is still
    /// in the store.
    pub fn get(&self, key: &str, store: &BlobStore) -> Option<StepRecord> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let record: StepRecord = serde_json::from_slice(&bytes).ok()?;
        if let Some(layer) = &record.layer {
            if !store.contains(&layer.digest) {
                return None;
            }
        }
        // Touch it so pruning by age keeps what is used.
        let _ = std::fs::File::open(self.path(key))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Some(record)
    }

    /// Stores a record atomically (temp file in the same directory, fsync,
    /// rename): a concurrent reader sees the whole record or none.
    pub fn put(&self, key: &str, record: &StepRecord) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.path(key)).map_err(|e| e.error)?;
        Ok(())
    }

    /// Removes records not used for `max_age`, then the oldest until the
    /// records' layers fit in `max_bytes` (when given). Returns how many
    /// records were removed. Layer blobs are left to the blob store's own
    /// pruning: several records (and images) may share one.
    pub fn prune(
        &self,
        max_age: Option<std::time::Duration>,
        max_bytes: Option<u64>,
    ) -> std::io::Result<PruneReport> {
        let now = std::time::SystemTime::now();
        let mut entries = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let meta = e.metadata()?;
            let used = meta.modified().unwrap_or(now);
            let size = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<StepRecord>(&b).ok())
                .and_then(|r| r.layer.map(|l| l.size))
                .unwrap_or(0);
            entries.push((used, size, path));
        }
        // Oldest first.
        entries.sort_by_key(|(used, _, _)| *used);
        let mut report = PruneReport::default();
        let mut total: u64 = entries.iter().map(|(_, s, _)| *s).sum();
        for (used, size, path) in entries {
            let too_old = max_age
                .map(|age| now.duration_since(used).unwrap_or_default() > age)
                .unwrap_or(false);
            let too_big = max_bytes.map(|max| total > max).unwrap_or(false);
            if too_old || too_big {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        report.removed += 1;
                        report.bytes += size;
                        total = total.saturating_sub(size);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            } else {
                report.kept += 1;
            }
        }
        Ok(report)
    }
}

/// What [`StepCache::prune`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: usize,
    pub kept: usize,
    /// Layer bytes the removed records referred to.
    pub bytes: u64,
}

/// A lock on a cache directory: builds hold it shared, `kiln cache prune`
/// exclusive, so pruning never removes what a running build uses.
pub struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    fn take(cache_dir: &Path, exclusive: bool, wait: bool) -> std::io::Result<Option<Self>> {
        use rustix::fs::FlockOperation as Op;
        std::fs::create_dir_all(cache_dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cache_dir.join("lock"))?;
        let op = match (exclusive, wait) {
            (true, true) => Op::LockExclusive,
            (true, false) => Op::NonBlockingLockExclusive,
            (false, true) => Op::LockShared,
            (false, false) => Op::NonBlockingLockShared,
        };
        match rustix::fs::flock(&file, op) {
            Ok(()) => Ok(Some(CacheLock { _file: file })),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Held by a build for its whole run (waits while a prune runs).
    pub fn shared(cache_dir: &Path) -> std::io::Result<Self> {
        Self::take(cache_dir, false, true)?
            .ok_or_else(|| std::io::Error::other("cache lock not taken"))
    }

    /// [`CacheLock::shared`], calling `alone` first when no other build (nor
    /// a prune) holds the lock: then nothing is being written, and what
    /// dead builds left half-written can go.
    pub fn shared_after(cache_dir: &Path, alone: &mut dyn FnMut()) -> std::io::Result<Self> {
        match Self::take(cache_dir, true, false)? {
            Some(lock) => {
                alone();
                // Converted in place: another build may join from now on.
                rustix::fs::flock(&lock._file, rustix::fs::FlockOperation::LockShared)?;
                Ok(lock)
            }
            None => Self::shared(cache_dir),
        }
    }

    /// Held by a prune; `None` when builds are running.
    pub fn try_exclusive(cache_dir: &Path) -> std::io::Result<Option<Self>> {
        Self::take(cache_dir, true, false)
    }

    /// Held by a prune: waits for running builds to finish, calling
    /// `waiting` with the time waited so far when it starts waiting and
    /// about every `report_every` after; `None` when they still run after
    /// `timeout`.
    pub fn exclusive_waiting(
        cache_dir: &Path,
        timeout: std::time::Duration,
        report_every: std::time::Duration,
        waiting: &mut dyn FnMut(std::time::Duration),
    ) -> std::io::Result<Option<Self>> {
        let start = std::time::Instant::now();
        let mut next_report = std::time::Duration::ZERO;
        loop {
            if let Some(lock) = Self::try_exclusive(cache_dir)? {
                return Ok(Some(lock));
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Ok(None);
            }
            if waited >= next_report {
                waiting(waited);
                next_report = waited + report_every;
            }
            std::thread::sleep(std::time::Duration::from_millis(100).min(timeout - waited));
        }
    }
}

/// What [`prune_cache`] removes.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove step records and blobs unused for longer than this.
    pub keep_duration: Option<std::time::Duration>,
    /// Then remove the oldest records until their layers fit in this.
    pub keep_bytes: Option<u64>,
    /// Remove everything: records, blobs, cache mounts, stat caches.
    pub all: bool,
}

/// What [`prune_cache`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CachePruneReport {
    pub records: usize,
    pub blobs: usize,
    pub bytes: u64,
}

/// Prunes a cache directory (the caller holds [`CacheLock::try_exclusive`]):
/// step records by age and size, then blobs that no remaining record
/// refers to and that were not written within `keep_duration` (base images
/// pulled recently stay; others are pulled again when needed).
pub fn prune_cache(cache_dir: &Path, opts: &PruneOptions) -> std::io::Result<CachePruneReport> {
    let mut report = CachePruneReport::default();
    let steps = StepCache::open(cache_dir)?;
    // Scratch space of builds that died, and what finished builds left to
    // their background cleaners.
    crate::scratch::sweep_dead(cache_dir)?;
    crate::scratch::remove_partial_writes(cache_dir)?;
    if let Ok(rd) = std::fs::read_dir(cache_dir.join("trash")) {
        for e in rd.flatten() {
            let p = e.path();
            // A finished build's cleaner may be deleting it too.
            let removed = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match removed {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    if opts.all {
        let r = steps.prune(Some(std::time::Duration::ZERO), Some(0))?;
        report.records = r.removed;
        for sub in ["mounts", "stat", "work", "trash", "snapshots"] {
            let p = cache_dir.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p)?;
            }
        }
    } else {
        let r = steps.prune(opts.keep_duration, opts.keep_bytes)?;
        report.records = r.removed;
        // Kept stage roots: by age; a size budget drops them all (their
        // files are mostly hard links, so their size cannot be told apart).
        if let Ok(rd) = std::fs::read_dir(cache_dir.join("snapshots")) {
            use std::os::unix::fs::MetadataExt;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            for e in rd.flatten() {
                // Kept (renamed in) at its ctime; its mtime is the image's.
                let kept = e.metadata().map_or(0, |m| m.ctime());
                let age = std::time::Duration::from_secs(now.saturating_sub(kept).max(0) as u64);
                let old = opts.keep_duration.is_some_and(|keep| age > keep);
                if old || opts.keep_bytes.is_some() {
                    std::fs::remove_dir_all(e.path())?;
                }
            }
        }
    }
    // Blobs still referenced by a record.
    let mut referenced = std::collections::HashSet::new();
    for e in std::fs::read_dir(&steps.dir)? {
        let path = e?.path();
        if let Some(layer) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<StepRecord>(&b).ok())
            .and_then(|r| r.layer)
        {
            referenced.insert(layer.digest.hex().to_string());
        }
    }
    let blobs = cache_dir.join("blobs").join("sha256");
    let now = std::time::SystemTime::now();
    if let Ok(rd) = std::fs::read_dir(&blobs) {
        for e in rd {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            if referenced.contains(&name) {
                continue;
            }
            let meta = e.metadata()?;
            let age = now
                .duration_since(meta.modified().unwrap_or(now))
                .unwrap_or_default();
            let old_enough = opts.all || opts.keep_duration.is_none_or(|keep| age > keep);
            if old_enough {
                std::fs::remove_file(e.path())?;
                let _ = std::fs::remove_file(cache_dir.join("verified").join("sha256").join(&name));
                report.blobs += 1;
                report.bytes += meta.len();
            }
        }
    }
    Ok(report)
}

/// The local cache directory as a [`CacheBackend`], with a time to live:
/// records older than `ttl` are misses (Kaniko's `--cache-ttl`).
pub struct LocalBackend {
    pub cache: StepCache,
    pub ttl: Option<std::time::Duration>,
    /// `false`: store records but never reuse one (`--no-cache`).
    pub lookup: bool,
}

impl CacheBackend for LocalBackend {
    fn describe(&self) -> String {
        "local".into()
    }

    fn get(&self, key: &str, store: &BlobStore) -> Option<StepRecord> {
        if !self.lookup {
            return None;
        }
        if let Some(ttl) = self.ttl {
            let meta = std::fs::metadata(self.cache.path(key)).ok()?;
            let age = meta.modified().ok()?.elapsed().unwrap_or_default();
            if age > ttl {
                return None;
            }
        }
        self.cache.get(key, store)
    }

    fn put(&self, key: &str, record: &StepRecord, _store: &BlobStore) -> Result<(), CacheError> {
        Ok(self.cache.put(key, record)?)
    }
}

/// Remembers the digests of context files by their stat data (path, size,
/// mtime, ctime, inode, device), so a rebuild does not re-read unchanged
/// files. An entry is trusted only when every one of those matches; files
/// modified within the last two seconds are never remembered, since a
/// second write in the same timestamp tick would go unseen.
pub struct StatCache {
    entries: std::sync::Mutex<HashMap<String, StatEntry>>,
    path: Option<PathBuf>,
    dirty: std::sync::atomic::AtomicBool,
    /// Files changed more recently than this are not remembered (tests
    /// shorten it to zero).
    racy_nanos: i128,
}

impl Default for StatCache {
    /// A cache that is never loaded nor saved.
    fn default() -> Self {
        StatCache {
            entries: Default::default(),
            path: None,
            dirty: Default::default(),
            racy_nanos: RACY_NANOS,
        }
    }
}

/// How recently a file may have changed and still be remembered.
const RACY_NANOS: i128 = 2_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StatEntry {
    size: u64,
    mtime: i128,
    ctime: i128,
    ino: u64,
    dev: u64,
    digest: String,
}

impl StatCache {
    /// Loads the stat cache kept for context directory `root` under
    /// `cache_dir` (empty when there is none or it does not parse).
    pub fn load(cache_dir: &Path, root: &Path) -> Self {
        let dir = cache_dir.join("stat");
        let name = hex::encode(Sha256::digest(root.as_os_str().as_encoded_bytes()));
        let path = dir.join(format!("{name}.json"));
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        StatCache {
            entries: std::sync::Mutex::new(entries),
            path: Some(path),
            dirty: Default::default(),
            racy_nanos: RACY_NANOS,
        }
    }

    /// Writes the cache back atomically if it changed.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.dirty.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let bytes = {
            let entries = self
                .entries
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?;
            serde_json::to_vec(&*entries).map_err(std::io::Error::other)?
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&bytes)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    fn stat_key(meta: &std::fs::Metadata) -> (u64, i128, i128, u64, u64) {
        (
            meta.size(),
            meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            meta.ino(),
            meta.dev(),
        )
    }

    /// The SHA-256 of the file at `path` (whose metadata is `meta`), from
    /// the cache when its stat data still matches.
    pub fn digest(&self, path: &Path, meta: &std::fs::Metadata) -> std::io::Result<String> {
        let name = path.to_string_lossy().into_owned();
        let (size, mtime, ctime, ino, dev) = Self::stat_key(meta);
        if let Ok(entries) = self.entries.lock() {
            if let Some(e) = entries.get(&name) {
                if (e.size, e.mtime, e.ctime, e.ino, e.dev) == (size, mtime, ctime, ino, dev) {
                    return Ok(e.digest.clone());
                }
            }
        }
        let digest = file_digest(path)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let racy = now - mtime.max(ctime) < self.racy_nanos;
        if !racy {
            if let Ok(mut entries) = self.entries.lock() {
                entries.insert(
                    name,
                    StatEntry {
                        size,
                        mtime,
                        ctime,
                        ino,
                        dev,
                        digest: digest.clone(),
                    },
                );
                self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(digest)
    }
}

/// Hashes a source tree for a COPY/ADD key: relative paths, file types,
/// modes, ownership, symlink targets and file contents, in sorted order.
/// `filter` is the context's `.dockerignore`: an excluded entry is left
/// out unless an exception may bring back something below it (then the
/// walk goes in, hashing a superset, which can only cost a cache hit).
/// Modification times are not part of it: touching a file without
/// changing it keeps the cache.
pub fn hash_tree(
    key: &mut KeyBuilder,
    root: &Path,
    rel: &str,
    filter: Option<&PatternSet>,
    stat: &StatCache,
) -> std::io::Result<()> {
    let path = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            key.field("missing").field(rel);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    key.field(rel)
        .field(&format!("{:o}:{}:{}", meta.mode(), meta.uid(), meta.gid()));
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(&path)?;
        key.field("symlink").field(&target.to_string_lossy());
    } else if ft.is_file() {
        key.field("file").field(&stat.digest(&path, &meta)?);
    } else if ft.is_dir() {
        key.field("dir");
        let mut names: Vec<String> = std::fs::read_dir(&path)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        for name in names {
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if let Some(f) = filter {
                if f.matches(&child) && !f.may_have_included_children(&child) {
                    continue;
                }
            }
            hash_tree(key, root, &child, filter, stat)?;
        }
    } else {
        key.field("special").field(&format!("{}", meta.rdev()));
    }
    Ok(())
}

/// SHA-256 of a file's content, streamed.
fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_boundaries_matter() {
        let a = KeyBuilder::new("X").field("ab").field("c").finish();
        let b = KeyBuilder::new("X").field("a").field("bc").finish();
        assert_ne!(a, b);
        let c = KeyBuilder::new("X").field("ab").field("c").finish();
        assert_eq!(a, c);
        assert_ne!(a, KeyBuilder::new("Y").field("ab").field("c").finish());
    }

    #[test]
    fn tree_hash_follows_content_not_mtime() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        std::fs::write(dir.path().join("d/a"), "one").expect("write");
        let stat = StatCache::default();
        let hash = || {
            let mut k = KeyBuilder::new("COPY");
            hash_tree(&mut k, dir.path(), "d", None, &stat).expect("hash");
            k.finish()
        };
        let first = hash();
        let f = std::fs::File::options()
            .write(true)
            .open(dir.path().join("d/a"))
            .expect("open");
        f.set_modified(std::time::UNIX_EPOCH).expect("mtime");
        assert_eq!(hash(), first, "mtime alone does not change the key");
        std::fs::write(dir.path().join("d/a"), "two").expect("write");
        assert_ne!(hash(), first, "content changes the key");
        let second = hash();
        let ignore = PatternSet::new(&["d/a"]).expect("pattern");
        let mut k = KeyBuilder::new("COPY");
        hash_tree(&mut k, dir.path(), "d", Some(&ignore), &stat).expect("hash");
        assert_ne!(k.finish(), second, "excluded files leave the key");
    }

    #[test]
    fn records_round_trip_and_need_their_blob() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = BlobStore::open(&dir.path().join("store")).expect("store");
        let cache = StepCache::open(dir.path()).expect("cache");
        let record = StepRecord {
            layer: None,
            history: History::default(),
        };
        cache.put("k1", &record).expect("put");
        assert!(cache.get("k1", &store).is_some());
        assert!(cache.get("k2", &store).is_none());
        let digest = kiln_image::Digest::sha256(b"not stored");
        let with_layer = StepRecord {
            layer: Some(Layer {
                digest: digest.clone(),
                diff_id: digest,
                size: 1,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            }),
            history: History::default(),
        };
        cache.put("k3", &with_layer).expect("put");
        assert!(
            cache.get("k3", &store).is_none(),
            "a missing blob is a miss"
        );
    }

    #[test]
    fn excluded_directories_with_exceptions_are_still_hashed() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
        std::fs::write(dir.path().join("logs/keep.txt"), "one").expect("write");
        std::fs::write(dir.path().join("logs/drop.txt"), "x").expect("write");
        let ignore = PatternSet::new(&["logs", "!logs/keep.txt"]).expect("pattern");
        let stat = StatCache::default();
        let hash = || {
            let mut k = KeyBuilder::new("COPY");
            hash_tree(&mut k, dir.path(), "", Some(&ignore), &stat).expect("hash");
            k.finish()
        };
        let first = hash();
        std::fs::write(dir.path().join("logs/keep.txt"), "two").expect("write");
        assert_ne!(
            hash(),
            first,
            "a file brought back by an exception is keyed"
        );
    }

    #[test]
    fn stat_cache_reuses_digests_only_while_stat_matches() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("f");
        std::fs::write(&file, "one").expect("write");
        // Old enough not to be racy.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(old))
            .expect("mtime");
        let cache_dir = tempfile::tempdir().expect("tmp");
        let mut stat = StatCache::load(cache_dir.path(), dir.path());
        stat.racy_nanos = 0;
        let meta = std::fs::symlink_metadata(&file).expect("stat");
        let d1 = stat.digest(&file, &meta).expect("digest");
        stat.save().expect("save");
        let mut again = StatCache::load(cache_dir.path(), dir.path());
        again.racy_nanos = 0;
        assert_eq!(again.entries.lock().expect("lock").len(), 1, "persisted");
        assert_eq!(again.digest(&file, &meta).expect("digest"), d1);
        // Same size, content changed: ctime moves (past the kernel's coarse
        // timestamp tick), so the digest is redone.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, "two").expect("write");
        let meta = std::fs::symlink_metadata(&file).expect("stat");
        let d2 = again.digest(&file, &meta).expect("digest");
        assert_ne!(d1, d2);
        assert_eq!(d2, file_digest(&file).expect("digest"));
    }

    #[test]
    fn prune_by_age_and_size() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = StepCache::open(dir.path()).expect("cache");
        let layer = |n: u64| Layer {
            digest: kiln_image::Digest::sha256(&n.to_le_bytes()),
            diff_id: kiln_image::Digest::sha256(&n.to_le_bytes()),
            size: n,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        };
        for (key, size, age) in [("old", 100u64, 3600u64), ("mid", 200, 60), ("new", 300, 0)] {
            let rec = StepRecord {
                layer: Some(layer(size)),
                history: History::default(),
            };
            cache.put(key, &rec).expect("put");
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
            std::fs::File::open(cache.path(key))
                .and_then(|f| f.set_modified(t))
                .expect("mtime");
        }
        let r = cache
            .prune(Some(std::time::Duration::from_secs(600)), None)
            .expect("prune");
        assert_eq!((r.removed, r.kept, r.bytes), (1, 2, 100));
        assert!(!cache.path("old").exists());
        let r = cache.prune(None, Some(350)).expect("prune");
        assert_eq!((r.removed, r.kept, r.bytes), (1, 1, 200));
        assert!(cache.path("new").exists() && !cache.path("mid").exists());
    }
}
