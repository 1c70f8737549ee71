//! Turns the paths a COPY/ADD step changed into layer entries: each changed
//! path with its parent directories (as a diff of the filesystem shows
//! them), read from disk, with the owners the step decided.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_image::{EntryKind, LayerEntry};

use crate::copy::fsops::read_xattrs;

/// A path a step wrote, with the owner it must have in the layer (even
/// when this process could not chown it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Relative to the stage root, `/`-separated, no leading `/`.
    pub path: String,
    pub uid: u32,
    pub gid: u32,
}

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot: {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Layer entries for `changed` (paths relative to `rootfs`), sorted by
/// path, parents first. Changed paths take their owner from `changed`;
/// parent directories take theirs from disk. Files sharing an inode become
/// one file and hard links to the first path in sorted order. Sockets are
/// left out (a layer cannot hold them).
pub fn layer_entries(rootfs: &Path, changed: &[Changed]) -> Result<Vec<LayerEntry>, SnapshotError> {
    layer_entries_from(rootfs, changed, &HashMap::new())
}

/// [`layer_entries`] where the paths in `sources` are read from the host
/// path given there (a planned COPY's sources) instead of from `rootfs`.
pub fn layer_entries_from(
    rootfs: &Path,
    changed: &[Changed],
    sources: &HashMap<String, PathBuf>,
) -> Result<Vec<LayerEntry>, SnapshotError> {
    let mut paths: BTreeMap<String, Option<(u32, u32)>> = BTreeMap::new();
    for ch in changed {
        let clean: Vec<&str> = ch
            .path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if clean.is_empty() || clean.contains(&"..") {
            continue;
        }
        for i in 1..clean.len() {
            paths
                .entry(clean.get(..i).unwrap_or(&[]).join("/"))
                .or_insert(None);
        }
        paths.insert(clean.join("/"), Some((ch.uid, ch.gid)));
    }
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    let mut out = Vec::with_capacity(paths.len());
    for (path, owner) in paths {
        let host = match sources.get(&path) {
            Some(src) => src.clone(),
            None => rootfs.join(&path),
        };
        let io = |source| SnapshotError::Io {
            path: host.clone(),
            source,
        };
        let md = std::fs::symlink_metadata(&host).map_err(io)?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&host).map_err(io)?;
            EntryKind::Symlink {
                target: target.to_string_lossy().into_owned(),
            }
        } else if ft.is_file() {
            let key = (md.dev(), md.ino());
            match (md.nlink() > 1).then(|| inodes.get(&key)).flatten() {
                Some(first) => EntryKind::Hardlink {
                    target: first.clone(),
                },
                None => {
                    if md.nlink() > 1 {
                        inodes.insert(key, path.clone());
                    }
                    EntryKind::File {
                        source: host.clone(),
                        size: md.len(),
                    }
                }
            }
        } else if ft.is_char_device() {
            EntryKind::CharDevice {
                major: rustix::fs::major(md.rdev()),
                minor: rustix::fs::minor(md.rdev()),
            }
        } else if ft.is_block_device() {
            EntryKind::BlockDevice {
                major: rustix::fs::major(md.rdev()),
                minor: rustix::fs::minor(md.rdev()),
            }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            continue;
        };
        let (uid, gid) = owner.unwrap_or((md.uid(), md.gid()));
        out.push(LayerEntry {
            path,
            kind,
            mode: md.mode() & 0o7777,
            uid: u64::from(uid),
            gid: u64::from(gid),
            mtime: md.mtime(),
            xattrs: read_xattrs(&host),
        });
    }
    Ok(out)
}

/// Every entry below `dir` (owners as on disk) as layer entries: a
/// directory packed whole, e.g. a `RUN --mount=type=cache` directory
/// exported with the build cache.
pub fn tree_entries(dir: &Path) -> Result<Vec<LayerEntry>, SnapshotError> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<Changed>) -> Result<(), SnapshotError> {
        let here = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let rd = std::fs::read_dir(&here).map_err(|source| SnapshotError::Io {
            path: here.clone(),
            source,
        })?;
        for e in rd {
            let e = e.map_err(|source| SnapshotError::Io {
                path: here.clone(),
                source,
            })?;
            let name = e.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let md = e.metadata().map_err(|source| SnapshotError::Io {
                path: here.join(e.file_name()),
                source,
            })?;
            out.push(Changed {
                path: child.clone(),
                uid: md.uid(),
                gid: md.gid(),
            });
            if md.is_dir() {
                walk(root, &child, out)?;
            }
        }
        Ok(())
    }
    let mut changed = Vec::new();
    walk(dir, "", &mut changed)?;
    layer_entries(dir, &changed)
}
