//! Layer entries and the deterministic layer writer: entries are validated, sorted
//! (parents before children), turned into normalized tar headers and streamed in ONE
//! pass: tar → sha256 (diffID) → compressor → sha256 (digest) → blob writer.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::compress::{default_threads, Compressor};
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::media::{Compression, Format};
use crate::store::BlobStore;
use crate::tarheader::{self, typeflag, HeaderSpec};

/// One filesystem object in a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    /// Relative path: no leading `/`, no trailing `/`, no `.`/`..`/empty components.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits plus setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes (e.g. `security.capability`), written as `SCHILY.xattr.*`.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// What kind of object an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file read from disk while streaming; `size` is what the header says.
    File {
        source: PathBuf,
        size: u64,
    },
    /// A regular file with in-memory contents.
    Bytes(Vec<u8>),
    Dir,
    Symlink {
        target: String,
    },
    /// A hard link to the layer path of another entry in the same layer.
    Hardlink {
        target: String,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// `path` was deleted: written as `<dir>/.wh.<name>`.
    Whiteout,
    /// `path` is a directory hiding everything below it in lower layers:
    /// written as `<path>/.wh..wh..opq`.
    OpaqueDir,
}

/// How to write a layer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LayerOptions {
    pub compression: Compression,
    pub format: Format,
    /// `SOURCE_DATE_EPOCH`: every mtime is clamped to at most this.
    pub mtime_clamp: Option<i64>,
}

/// A layer blob in the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layer {
    /// Digest of the (compressed) blob.
    pub digest: Digest,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    pub media_type: String,
}

pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
pub(crate) const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Writes a layer with one compression worker per CPU.
pub fn write_layer(
    store: &BlobStore,
    entries: Vec<LayerEntry>,
    opts: &LayerOptions,
) -> Result<Layer> {
    write_layer_threads(store, entries, opts, default_threads())
}

/// [`write_layer`] with an explicit compression thread count (the bytes do not depend on it).
pub fn write_layer_threads(
    store: &BlobStore,
    entries: Vec<LayerEntry>,
    opts: &LayerOptions,
    threads: usize,
) -> Result<Layer> {
    write_entries(store, entries, opts, threads, &open_source)
}

/// Opens the file a layer entry's data comes from, given its `source`.
pub type SourceOpener<'a> = &'a (dyn Fn(&Path) -> io::Result<File> + Sync);

/// Opens `source` where it is.
pub fn open_source(source: &Path) -> io::Result<File> {
    File::open(source)
}

/// [`write_layer`], reading each file's data through `open`: a caller whose
/// files may be moved while the layer is written says where they went.
pub fn write_layer_opening(
    store: &BlobStore,
    entries: Vec<LayerEntry>,
    opts: &LayerOptions,
    open: SourceOpener<'_>,
) -> Result<Layer> {
    write_entries(store, entries, opts, default_threads(), open)
}

fn write_entries(
    store: &BlobStore,
    entries: Vec<LayerEntry>,
    opts: &LayerOptions,
    threads: usize,
    open: SourceOpener<'_>,
) -> Result<Layer> {
    let entries = prepare_entries(entries, opts.mtime_clamp)?;
    write_compressed(store, opts, threads, |tar| {
        write_tar_stream(tar, &entries, open)
    })
}

/// Re-encodes stored layer `layer` with `opts`' compression (and media
/// type): the uncompressed tar, and so the diffID, stays the same, which is
/// checked. Used when a cached layer was stored compressed another way.
pub fn recompress_layer(store: &BlobStore, layer: &Layer, opts: &LayerOptions) -> Result<Layer> {
    let out = write_compressed(store, opts, default_threads(), |w| {
        let mut r = crate::blobread::open_layer(store, &layer.digest)?;
        io::copy(&mut r, w).ctx(|| format!("recompress layer {}", layer.digest))?;
        Ok(())
    })?;
    if out.diff_id != layer.diff_id {
        return Err(Error::DigestMismatch {
            what: format!("layer {} uncompressed", layer.digest),
            expected: layer.diff_id.to_string(),
            actual: out.diff_id.to_string(),
        });
    }
    Ok(out)
}

/// Compresses what `produce` writes (an uncompressed layer tar) into a new
/// blob, hashing both sides.
fn write_compressed(
    store: &BlobStore,
    opts: &LayerOptions,
    threads: usize,
    produce: impl FnOnce(&mut HashingWriter<Compressor<ChannelWriter>>) -> Result<()>,
) -> Result<Layer> {
    // The compressed bytes are hashed and written on their own thread (like pigz's
    // writer thread), so the tar producer only frames, reads files and hashes the diffID.
    let (tx, rx) = mpsc::sync_channel::<Sink>(16);
    let mut blob = store.writer()?;
    let sink = std::thread::Builder::new()
        .name("kiln-blob-writer".into())
        .spawn(move || -> Result<(Digest, u64)> {
            for msg in rx {
                match msg {
                    Sink::Data(d) => blob.write_all(&d).ctx(|| "write layer blob")?,
                    Sink::Done => return blob.commit(),
                }
            }
            // The producer failed: drop the blob without committing it.
            Err(Error::Image(WRITE_ABORTED.into()))
        })
        .ctx(|| "start blob writer thread")?;
    let produced = (|| -> Result<Digest> {
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let comp = Compressor::new(out, &opts.compression, threads).ctx(|| "start compressor")?;
        let mut tar = HashingWriter::new(comp);
        produce(&mut tar)?;
        let (comp, diff_id, _) = tar.finish();
        let mut out = comp.finish().ctx(|| "finish compression")?;
        out.flush().ctx(|| "write layer blob")?;
        Ok(diff_id)
    })();
    let done = match &produced {
        Ok(_) => tx.send(Sink::Done).is_ok(),
        Err(_) => false,
    };
    drop(tx);
    let written = sink
        .join()
        .map_err(|_| Error::Image("blob writer thread panicked".into()))?;
    // The writer's own failure (e.g. a full disk) is why the producer
    // stopped ("blob writer stopped"): report it. Otherwise the producer's
    // error comes first (the writer then only says it was aborted).
    let (diff_id, (digest, size)) = match (produced, written) {
        (Ok(d), Ok(w)) => (d, w),
        (Err(p), Err(Error::Image(m))) if m == WRITE_ABORTED => return Err(p),
        (_, Err(w)) => return Err(w),
        (Err(p), Ok(_)) => return Err(p),
    };
    if !done {
        return Err(Error::Image("blob writer stopped early".into()));
    }
    Ok(Layer {
        digest,
        diff_id,
        size,
        media_type: opts.format.layer_media_type(&opts.compression).to_string(),
    })
}

const CHUNK: usize = 256 * 1024;

/// What the blob writer says when the producer gave up first.
const WRITE_ABORTED: &str = "layer writing was aborted";

enum Sink {
    Data(Vec<u8>),
    Done,
}

/// Buffers compressed bytes and hands them to the blob writer thread.
struct ChannelWriter {
    tx: mpsc::SyncSender<Sink>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(Sink::Data(chunk))
            .map_err(|_| io::Error::other("blob writer stopped"))
    }
}

/// An entry ready to be written: its final tar name and header.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) tar_name: String,
    pub(crate) entry: LayerEntry,
}

/// Checks that a layer path is relative and clean.
pub(crate) fn validate_path(p: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidEntry {
            path: p.to_string(),
            reason: reason.to_string(),
        })
    };
    if p.is_empty() {
        return bad("empty path");
    }
    if p.starts_with('/') || p.ends_with('/') {
        return bad("path must be relative without a trailing '/'");
    }
    if p.contains('\0') {
        return bad("path contains NUL");
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return bad("path has an empty, '.' or '..' component");
    }
    Ok(())
}

fn tar_name(e: &LayerEntry) -> String {
    match &e.kind {
        EntryKind::Dir => format!("{}/", e.path),
        EntryKind::OpaqueDir => format!("{}/{OPAQUE_MARKER}", e.path),
        EntryKind::Whiteout => match e.path.rsplit_once('/') {
            Some((dir, base)) => format!("{dir}/{WHITEOUT_PREFIX}{base}"),
            None => format!("{WHITEOUT_PREFIX}{}", e.path),
        },
        _ => e.path.clone(),
    }
}

/// Component-wise path order: a directory sorts immediately before its contents.
pub(crate) fn cmp_paths(a: &str, b: &str) -> Ordering {
    let a = a.trim_end_matches('/').split('/');
    let b = b.trim_end_matches('/').split('/');
    a.cmp(b)
}

/// Validates, clamps, sorts and fixes hardlink order (pure).
///
/// If a hardlink sorts before the entry it points to, the roles are swapped so the
/// first of the linked paths in tar order carries the content and the others link to it.
pub(crate) fn prepare_entries(
    entries: Vec<LayerEntry>,
    clamp: Option<i64>,
) -> Result<Vec<Prepared>> {
    let mut out: Vec<Prepared> = Vec::with_capacity(entries.len());
    for mut e in entries {
        validate_path(&e.path)?;
        if let EntryKind::Whiteout = e.kind {
            if e.path
                .rsplit('/')
                .next()
                .is_some_and(|b| b.starts_with(WHITEOUT_PREFIX))
            {
                return Err(Error::InvalidEntry {
                    path: e.path,
                    reason: "whiteout of a name that is itself a whiteout".into(),
                });
            }
        }
        if let Some(c) = clamp {
            e.mtime = e.mtime.min(c);
        }
        e.mode &= 0o7777;
        e.xattrs.sort();
        out.push(Prepared {
            tar_name: tar_name(&e),
            entry: e,
        });
    }
    out.sort_by(|a, b| cmp_paths(&a.tar_name, &b.tar_name));
    for w in out.windows(2) {
        if let [a, b] = w {
            if cmp_paths(&a.tar_name, &b.tar_name) == Ordering::Equal {
                return Err(Error::InvalidEntry {
                    path: a.entry.path.clone(),
                    reason: "duplicate path in layer".into(),
                });
            }
        }
    }

    // Hardlink groups: target path -> indices of links to it.
    let index: HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, p)| (p.entry.path.clone(), i))
        .collect();
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, p) in out.iter().enumerate() {
        if let EntryKind::Hardlink { target } = &p.entry.kind {
            let t = *index.get(target).ok_or_else(|| Error::InvalidEntry {
                path: p.entry.path.clone(),
                reason: format!("hardlink target {target:?} is not in the layer"),
            })?;
            if !matches!(
                out.get(t).map(|p| &p.entry.kind),
                Some(EntryKind::File { .. } | EntryKind::Bytes(_))
            ) {
                return Err(Error::InvalidEntry {
                    path: p.entry.path.clone(),
                    reason: format!("hardlink target {target:?} is not a regular file"),
                });
            }
            groups.entry(t).or_default().push(i);
        }
    }
    for (t, links) in groups {
        let first = links.iter().copied().chain([t]).min().unwrap_or(t);
        if first == t {
            continue;
        }
        let first_path = out
            .get(first)
            .map(|p| p.entry.path.clone())
            .unwrap_or_default();
        let content = out
            .get(t)
            .map(|p| p.entry.kind.clone())
            .unwrap_or(EntryKind::Dir);
        for i in links.iter().copied().chain([t]) {
            if let Some(p) = out.get_mut(i) {
                p.entry.kind = if i == first {
                    content.clone()
                } else {
                    EntryKind::Hardlink {
                        target: first_path.clone(),
                    }
                };
            }
        }
    }
    Ok(out)
}

/// The header for a prepared entry (pure).
pub(crate) fn header_for(p: &Prepared) -> HeaderSpec {
    let e = &p.entry;
    let (tf, size, link, maj, min) = match &e.kind {
        EntryKind::File { size, .. } => (typeflag::REG, *size, String::new(), 0, 0),
        EntryKind::Bytes(b) => (typeflag::REG, b.len() as u64, String::new(), 0, 0),
        EntryKind::Dir => (typeflag::DIR, 0, String::new(), 0, 0),
        EntryKind::Symlink { target } => (typeflag::SYMLINK, 0, target.clone(), 0, 0),
        EntryKind::Hardlink { target } => (typeflag::LINK, 0, target.clone(), 0, 0),
        EntryKind::CharDevice { major, minor } => {
            (typeflag::CHAR, 0, String::new(), *major, *minor)
        }
        EntryKind::BlockDevice { major, minor } => {
            (typeflag::BLOCK, 0, String::new(), *major, *minor)
        }
        EntryKind::Fifo => (typeflag::FIFO, 0, String::new(), 0, 0),
        EntryKind::Whiteout | EntryKind::OpaqueDir => (typeflag::REG, 0, String::new(), 0, 0),
    };
    HeaderSpec {
        name: p.tar_name.clone(),
        typeflag: tf,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        size,
        mtime: e.mtime,
        linkname: link,
        devmajor: maj,
        devminor: min,
        xattrs: e.xattrs.clone(),
    }
}

/// Writes prepared entries as a complete tar stream (ending in two zero blocks).
pub(crate) fn write_tar_stream<W: Write>(
    w: &mut W,
    entries: &[Prepared],
    open: SourceOpener<'_>,
) -> Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    for p in entries {
        let h = header_for(p);
        w.write_all(&tarheader::encode(&h))
            .ctx(|| "write tar header")?;
        match &p.entry.kind {
            EntryKind::File { source, size } => {
                let f = open(source).ctx(|| format!("open {}", source.display()))?;
                let copied = copy_exact(f.take(*size), w, &mut buf)
                    .ctx(|| format!("read {}", source.display()))?;
                if copied != *size {
                    return Err(Error::FileChanged {
                        path: source.clone(),
                        expected: *size,
                        actual: copied,
                    });
                }
                pad(w, *size)?;
            }
            EntryKind::Bytes(b) => {
                w.write_all(b).ctx(|| "write tar data")?;
                pad(w, b.len() as u64)?;
            }
            _ => {}
        }
    }
    w.write_all(&[0u8; 1024]).ctx(|| "write tar trailer")?;
    Ok(())
}

fn copy_exact<R: Read, W: Write>(mut r: R, w: &mut W, buf: &mut [u8]) -> io::Result<u64> {
    let mut n = 0u64;
    loop {
        let k = match r.read(buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(buf.get(..k).unwrap_or_default())?;
        n += k as u64;
    }
}

fn pad<W: Write>(w: &mut W, len: u64) -> Result<()> {
    let p = tarheader::padding(len);
    w.write_all(&[0u8; 512][..p]).ctx(|| "write tar padding")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, kind: EntryKind) -> LayerEntry {
        LayerEntry {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 100,
            xattrs: vec![],
        }
    }

    #[test]
    fn sorts_parents_first_and_names_whiteouts() {
        let p = prepare_entries(
            vec![
                e("a-b", EntryKind::Dir),
                e("a/b", EntryKind::Bytes(vec![])),
                e("a", EntryKind::Dir),
                e("a/gone", EntryKind::Whiteout),
                e("c", EntryKind::OpaqueDir),
            ],
            Some(50),
        )
        .unwrap();
        let names: Vec<_> = p.iter().map(|p| p.tar_name.as_str()).collect();
        assert_eq!(names, ["a/", "a/.wh.gone", "a/b", "a-b/", "c/.wh..wh..opq"]);
        assert!(p.iter().all(|p| p.entry.mtime == 50));
    }

    #[test]
    fn rejects_bad_paths_and_duplicates() {
        for bad in ["/abs", "a/", "a/../b", "", "a//b", "./a"] {
            assert!(
                prepare_entries(vec![e(bad, EntryKind::Dir)], None).is_err(),
                "{bad}"
            );
        }
        let err = prepare_entries(vec![e("x", EntryKind::Dir), e("x", EntryKind::Fifo)], None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid layer entry \"x\": duplicate path in layer"
        );
    }

    #[test]
    fn hardlink_before_target_swaps_roles() {
        let p = prepare_entries(
            vec![
                e("z", EntryKind::Bytes(b"hi".to_vec())),
                e("a", EntryKind::Hardlink { target: "z".into() }),
                e("m", EntryKind::Hardlink { target: "z".into() }),
            ],
            None,
        )
        .unwrap();
        assert_eq!(p[0].entry.kind, EntryKind::Bytes(b"hi".to_vec()));
        assert_eq!(p[1].entry.kind, EntryKind::Hardlink { target: "a".into() });
        assert_eq!(p[2].entry.kind, EntryKind::Hardlink { target: "a".into() });
    }
}
