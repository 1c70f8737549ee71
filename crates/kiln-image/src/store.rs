//! The content-addressed blob store: `<root>/blobs/sha256/<hex>`, written atomically
//! (temp file in the same directory + fsync + rename) and verified by digest, so a
//! killed build never leaves a partial blob and several builds may share one store.
//!
//! Integrity on reuse ([`BlobStore::check`]): a blob written or verified here gets
//! a marker `<root>/verified/sha256/<hex>` made after it. A blob whose size is right
//! and whose inode has not changed since its marker (ctime strictly before the
//! marker's mtime) is trusted without reading it; any other is hashed again. So a
//! truncated or overwritten blob is caught by its digest, and an untouched one costs
//! a stat. The marker is stamped by the kernel (`UTIME_NOW`), with the same coarse
//! clock that stamps ctime: a user-space `now()` can run a tick ahead of it, which
//! would let an overwrite right after the marking look older than the marker.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

/// A content-addressed directory of blobs.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    blobs: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).ctx(|| format!("create blob store {}", blobs.display()))?;
        Ok(BlobStore {
            root: root.to_path_buf(),
            blobs,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob for `d` lives (whether or not it exists).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    /// Whether the store holds `d`.
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    fn marker(&self, d: &Digest) -> PathBuf {
        self.root.join("verified").join("sha256").join(d.hex())
    }

    /// Whether blob `d` is present and whole: `size` bytes that hash to `d`
    /// (hashed only when the blob changed since it was last found intact).
    pub fn check(&self, d: &Digest, size: u64) -> Integrity {
        use std::os::unix::fs::MetadataExt;
        let path = self.path(d);
        let md = match fs::metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Integrity::Missing,
            Err(e) => return Integrity::Corrupt(format!("cannot stat {}: {e}", path.display())),
        };
        if md.len() != size {
            return Integrity::Corrupt(format!(
                "{} holds {} bytes, its descriptor says {size}",
                path.display(),
                md.len()
            ));
        }
        let marked = fs::metadata(self.marker(d))
            .ok()
            .is_some_and(|m| (m.mtime(), m.mtime_nsec()) > (md.ctime(), md.ctime_nsec()));
        if marked {
            return Integrity::Intact;
        }
        let mut hasher = Sha256::new();
        let hashed = File::open(&path).and_then(|mut f| io::copy(&mut f, &mut hasher));
        if let Err(e) = hashed {
            return Integrity::Corrupt(format!("cannot read {}: {e}", path.display()));
        }
        let got = Digest::from_hasher(hasher);
        if &got != d {
            return Integrity::Corrupt(format!("{} hashes to {got}", path.display()));
        }
        self.mark(d);
        Integrity::Intact
    }

    /// Notes that blob `d` was found whole now (best effort: without a
    /// marker the blob is just hashed again next time).
    ///
    /// The marker must end up strictly after the blob's ctime. Right after
    /// the blob was written both can fall in one clock tick, so the stamp is
    /// retried: with multigrain timestamps (Linux 6.13+) the retry after a
    /// stat gets a fine-grained stamp at once; elsewhere it waits for the next
    /// tick (4 ms on a 250 Hz kernel).
    fn mark(&self, d: &Digest) {
        use std::os::unix::fs::MetadataExt;
        let marker = self.marker(d);
        if let Some(dir) = marker.parent() {
            let _ = fs::create_dir_all(dir);
        }
        let Ok(file) = File::create(&marker) else {
            return;
        };
        let now = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        };
        let now = rustix::fs::Timestamps {
            last_access: now,
            last_modification: now,
        };
        for attempt in 0..20 {
            if attempt > 1 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if rustix::fs::futimens(&file, &now).is_err() {
                return;
            }
            let (Ok(m), Ok(b)) = (file.metadata(), fs::metadata(self.path(d))) else {
                return;
            };
            if (m.mtime(), m.mtime_nsec()) > (b.ctime(), b.ctime_nsec()) {
                return;
            }
        }
    }

    /// Removes blob `d` (and its marker); a missing blob is not an error.
    pub fn remove(&self, d: &Digest) -> Result<()> {
        let _ = fs::remove_file(self.marker(d));
        match fs::remove_file(self.path(d)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(e).ctx(|| format!("remove blob {d}"))
            }
            _ => Ok(()),
        }
    }

    /// Stores `bytes`, returning their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::sha256(bytes);
        if self.contains(&d) {
            return Ok(d);
        }
        let mut w = self.writer()?;
        w.write_all(bytes).ctx(|| "write blob")?;
        let (got, _) = w.commit()?;
        Ok(got)
    }

    /// A writer for a new blob; nothing is left behind unless [`BlobWriter::commit`] is called.
    pub fn writer(&self) -> Result<BlobWriter> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.blobs)
            .ctx(|| format!("create temp blob in {}", self.blobs.display()))?;
        Ok(BlobWriter {
            file: BufWriter::with_capacity(256 * 1024, tmp),
            hasher: Sha256::new(),
            size: 0,
            blobs: self.blobs.clone(),
            store: self.clone(),
        })
    }

    /// Copies everything from `r` into the store, verifying it hashes to `expected`.
    pub fn put_verified(&self, r: &mut dyn Read, expected: &Digest) -> Result<u64> {
        let mut w = self.writer()?;
        let n = io::copy(r, &mut w).ctx(|| format!("copy blob {expected}"))?;
        w.commit_expecting(expected)?;
        Ok(n)
    }

    /// Opens a blob for reading (not re-verified).
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.path(d)).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::BlobNotFound(d.to_string())
            } else {
                Error::Io {
                    context: format!("open blob {d}"),
                    source: e,
                }
            }
        })
    }

    /// Reads a whole blob, verifying its digest (meant for configs, manifests, indexes).
    pub fn read_bytes(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut buf)
            .ctx(|| format!("read blob {d}"))?;
        let got = Digest::sha256(&buf);
        if &got != d {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {}", self.path(d).display()),
                expected: d.to_string(),
                actual: got.to_string(),
            });
        }
        Ok(buf)
    }

    /// Size in bytes of a stored blob.
    pub fn size(&self, d: &Digest) -> Result<u64> {
        Ok(self
            .open_blob(d)?
            .metadata()
            .ctx(|| format!("stat blob {d}"))?
            .len())
    }
}

/// What [`BlobStore::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    Intact,
    Missing,
    /// Present but not the blob: why, in words (path and what is wrong).
    Corrupt(String),
}

/// An in-progress blob. Implements [`Write`]; [`BlobWriter::commit`] makes it visible.
pub struct BlobWriter {
    file: BufWriter<tempfile::NamedTempFile>,
    hasher: Sha256,
    size: u64,
    blobs: PathBuf,
    store: BlobStore,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or(buf));
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.size
    }

    /// Fsyncs and atomically renames the blob into place; returns its digest and size.
    pub fn commit(self) -> Result<(Digest, u64)> {
        self.commit_inner(None)
    }

    /// Like [`commit`](Self::commit) but fails (leaving nothing behind) unless the
    /// content hashes to `expected`.
    pub fn commit_expecting(self, expected: &Digest) -> Result<(Digest, u64)> {
        self.commit_inner(Some(expected))
    }

    fn commit_inner(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let digest = Digest::from_hasher(self.hasher);
        if let Some(e) = expected {
            if e != &digest {
                return Err(Error::DigestMismatch {
                    what: "blob".into(),
                    expected: e.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let tmp = self
            .file
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx(|| "flush blob")?;
        let dest = self.blobs.join(digest.hex());
        if dest.is_file() {
            // Same content already stored by someone else; the temp file is removed on drop.
            return Ok((digest, self.size));
        }
        tmp.as_file().sync_all().ctx(|| "fsync blob")?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .ctx(|| "chmod blob")?;
        tmp.persist(&dest)
            .map_err(|e| e.error)
            .ctx(|| format!("rename blob into {}", dest.display()))?;
        if let Ok(dir) = File::open(&self.blobs) {
            // Best effort: make the rename itself durable.
            let _ = dir.sync_all();
        }
        // Hashed as written: whole until its inode changes.
        self.store.mark(&digest);
        Ok((digest, self.size))
    }
}
