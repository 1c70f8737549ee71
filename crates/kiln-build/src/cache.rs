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
//! and the image config after the step. Records live in
//! `<cache-dir>/steps/<key>.json` and are written atomically (temp file in
//! the same directory, fsync, rename), so concurrent builds sharing a cache
//! dir see either a whole record or none. A record whose layer blob is
//! missing from the store is treated as a miss.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use kiln_image::{BlobStore, ImageConfig, Layer};

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

/// What a cached step produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// The layer the step added, if any.
    pub layer: Option<Layer>,
    /// The image config after the step (history included).
    pub config: ImageConfig,
}

/// The step records under a cache directory.
pub struct StepCache {
    dir: PathBuf,
}

impl StepCache {
    pub fn open(cache_dir: &Path) -> std::io::Result<Self> {
        let dir = cache_dir.join("steps");
        std::fs::create_dir_all(&dir)?;
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

    /// Stores a record atomically. Failures are reported to the caller,
    /// which may ignore them: a cache that cannot be written only costs
    /// speed.
    pub fn put(&self, key: &str, record: &StepRecord) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.path(key)).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Hashes a source tree for a COPY/ADD key: relative paths, file types,
/// modes, ownership, symlink targets and file contents, in sorted order.
/// `excluded` leaves out what `.dockerignore` drops. Modification times are
/// not part of it: touching a file without changing it keeps the cache.
pub fn hash_tree(
    key: &mut KeyBuilder,
    root: &Path,
    rel: &str,
    excluded: &dyn Fn(&str) -> bool,
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
        key.field("file").field(&file_digest(&path)?);
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
            if excluded(&child) {
                continue;
            }
            hash_tree(key, root, &child, excluded)?;
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
        let hash = || {
            let mut k = KeyBuilder::new("COPY");
            hash_tree(&mut k, dir.path(), "d", &|_| false).expect("hash");
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
        let mut k = KeyBuilder::new("COPY");
        hash_tree(&mut k, dir.path(), "d", &|p| p == "d/a").expect("hash");
        assert_ne!(k.finish(), first, "excluded files leave the key");
    }

    #[test]
    fn records_round_trip_and_need_their_blob() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = BlobStore::open(&dir.path().join("store")).expect("store");
        let cache = StepCache::open(dir.path()).expect("cache");
        let record = StepRecord {
            layer: None,
            config: ImageConfig::default(),
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
            config: ImageConfig::default(),
        };
        cache.put("k3", &with_layer).expect("put");
        assert!(
            cache.get("k3", &store).is_none(),
            "a missing blob is a miss"
        );
    }
}
