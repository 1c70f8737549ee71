//! ADD's archive extraction: recognizes tar archives by content (plain,
//! gzip, bzip2, xz, zstd — never by file name) and extracts them into a
//! directory of the stage, keeping every entry inside that directory.
//!
//! As Docker's builder does: entry owners come from the archive unless
//! `--chown` is given, modes and mtimes from the headers; existing
//! directories are merged, other existing entries replaced; a path with
//! `..` leading out of the destination is an error.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::copy::fsops::{
    apply_meta, clean_components, clear_non_dir, resolve_in_root, temp_sibling, Escape, Meta,
};
use crate::copy::Changed;

/// Errors while reading or extracting an archive.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("archive entry {entry:?} leads outside the destination")]
    Breakout { entry: String },
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
    #[error("extracting {path}: {error}")]
    Write {
        path: String,
        #[source]
        error: io::Error,
    },
}

/// How an archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// Detects compression by magic bytes.
fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

fn open(file: &Path) -> io::Result<(Compression, Box<dyn Read>)> {
    let mut f = std::fs::File::open(file)?;
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        let got = f.read(&mut head[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let kind = sniff(head.get(..n).unwrap_or(&[]));
    let f = std::fs::File::open(file)?;
    let r: Box<dyn Read> = match kind {
        Compression::None => Box::new(f),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(f)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(f)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(f)?),
    };
    Ok((kind, r))
}

/// `Some(compression)` when `file` is a tar archive (its first header
/// reads), `None` when it is any other file.
pub fn detect_archive(file: &Path) -> Result<Option<Compression>, UnpackError> {
    let (kind, r) = open(file).map_err(UnpackError::Read)?;
    let mut ar = tar::Archive::new(r);
    let Ok(mut entries) = ar.entries() else {
        return Ok(None);
    };
    match entries.next() {
        Some(Ok(_)) => Ok(Some(kind)),
        _ => Ok(None),
    }
}

/// Extracts `file` into `dest_dir` (an existing directory inside
/// `dest_root`), with every owner set to `chown` when given. Returns what it
/// wrote, relative to `dest_root`.
pub fn unpack_archive(
    file: &Path,
    dest_root: &Path,
    dest_dir: &Path,
    chown: Option<(u32, u32)>,
) -> Result<Vec<Changed>, UnpackError> {
    let (_, r) = open(file).map_err(UnpackError::Read)?;
    let mut ar = tar::Archive::new(r);
    let mut written: Vec<Changed> = Vec::new();
    let mut dirs: Vec<(PathBuf, Meta)> = Vec::new();
    let mut seen_dirs: HashSet<PathBuf> = HashSet::new();
    let record = |written: &mut Vec<Changed>, host: &Path, uid: u32, gid: u32| {
        if let Ok(rel) = host.strip_prefix(dest_root) {
            let path = rel.to_string_lossy().into_owned();
            if !path.is_empty() {
                written.push(Changed { path, uid, gid });
            }
        }
    };
    for entry in ar.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let comps = clean_components(&name).ok_or_else(|| UnpackError::Breakout {
            entry: name.clone(),
        })?;
        let Some((last, parents)) = comps.split_last() else {
            continue; // "./": the destination itself
        };
        let header = entry.header().clone();
        let (uid, gid) = match chown {
            Some(o) => o,
            None => (
                header.uid().unwrap_or(0) as u32,
                header.gid().unwrap_or(0) as u32,
            ),
        };
        let meta = Meta {
            uid,
            gid,
            perm: header.mode().unwrap_or(0o644) & 0o7777,
            mtime: Some((header.mtime().unwrap_or(0) as i64, 0)),
            atime: None,
        };
        let werr = |error: io::Error| UnpackError::Write {
            path: name.clone(),
            error,
        };
        // Parents: resolved inside the destination, created when missing.
        let parent_r =
            resolve_in_root(dest_dir, &parents.join("/"), true, Escape::Clamp).map_err(|_| {
                UnpackError::Breakout {
                    entry: name.clone(),
                }
            })?;
        let mut parent = dest_dir.to_path_buf();
        for c in &parent_r.rel {
            parent.push(c);
            if std::fs::symlink_metadata(&parent).is_err() {
                std::fs::create_dir(&parent).map_err(werr)?;
                let (u, g) = chown.unwrap_or((0, 0));
                let m = Meta {
                    uid: u,
                    gid: g,
                    perm: 0o755,
                    mtime: None,
                    atime: None,
                };
                apply_meta(&parent, &m, false).map_err(werr)?;
                record(&mut written, &parent, u, g);
            }
        }
        let target = parent.join(last);
        let kind = header.entry_type();
        if kind.is_dir() {
            match std::fs::symlink_metadata(&target) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => {
                    std::fs::remove_file(&target).map_err(werr)?;
                    std::fs::create_dir(&target).map_err(werr)?;
                }
                Err(_) => std::fs::create_dir(&target).map_err(werr)?,
            }
            set_xattrs(&mut entry, &target);
            if seen_dirs.insert(target.clone()) {
                dirs.push((target.clone(), meta));
            }
            record(&mut written, &target, uid, gid);
            continue;
        }
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        if !clear_non_dir(&target).map_err(werr)? {
            std::fs::remove_dir_all(&target).map_err(werr)?;
        }
        let tmp = temp_sibling(&target);
        let made = (|| -> io::Result<bool> {
            if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)?;
                io::copy(&mut entry, &mut out)?;
            } else if kind.is_symlink() {
                let link = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                std::os::unix::fs::symlink(link, &tmp)?;
            } else if kind.is_hard_link() {
                let link = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let lc = clean_components(&link).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "hard link leads outside")
                })?;
                let r = resolve_in_root(dest_dir, &lc.join("/"), false, Escape::Clamp)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "hard link target"))?;
                std::fs::hard_link(r.host(dest_dir), &tmp)?;
                return Ok(false);
            } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let ft = if kind.is_fifo() {
                    rustix::fs::FileType::Fifo
                } else if kind.is_character_special() {
                    rustix::fs::FileType::CharacterDevice
                } else {
                    rustix::fs::FileType::BlockDevice
                };
                crate::copy::fsops::make_special(
                    &tmp,
                    ft,
                    meta.perm,
                    rustix::fs::makedev(major, minor),
                )?;
            } else {
                return Err(io::Error::new(io::ErrorKind::Unsupported, "entry type"));
            }
            Ok(true)
        })();
        match made {
            Ok(set_meta) => {
                if set_meta {
                    set_xattrs(&mut entry, &tmp);
                    if let Err(e) = apply_meta(&tmp, &meta, kind.is_symlink()) {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(werr(e));
                    }
                }
                if let Err(e) = std::fs::rename(&tmp, &target) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(werr(e));
                }
                record(&mut written, &target, uid, gid);
            }
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                if e.kind() == io::ErrorKind::InvalidData {
                    return Err(UnpackError::Breakout { entry: name });
                }
                return Err(werr(e));
            }
        }
    }
    // Directory metadata last: writing their contents changes their mtime.
    for (dir, meta) in dirs.iter().rev() {
        apply_meta(dir, meta, false).map_err(|error| UnpackError::Write {
            path: dir.display().to_string(),
            error,
        })?;
    }
    Ok(written)
}

/// Applies `SCHILY.xattr.*` PAX records of the entry, best effort.
fn set_xattrs<R: Read>(entry: &mut tar::Entry<R>, path: &Path) {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return;
    };
    for ext in exts.flatten() {
        if let Ok(key) = ext.key() {
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                let _ = rustix::fs::lsetxattr(
                    path,
                    name,
                    ext.value_bytes(),
                    rustix::fs::XattrFlags::empty(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(b"BZh91"), Compression::Bzip2);
        assert_eq!(sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0]), Compression::Xz);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"hello"), Compression::None);
    }
}
