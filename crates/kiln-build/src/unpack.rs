//! ADD's archive extraction: recognizes tar archives by content (plain,
//! gzip, bzip2, xz, zstd — never by file name) and extracts them into a
//! directory of the stage, keeping every entry inside that directory.
//!
//! As Docker's builder does: entry owners come from the archive unless
//! `--chown` is given, modes and mtimes from the headers; existing
//! directories are merged, other existing entries replaced; a path with
//! `..` leading out of the destination is an error.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use kiln_image::root::{Dir, NewDir, Root, RootError};
use kiln_image::Compressed;

use crate::copy::fsops::{apply_meta_at, clean_components, Meta};
use crate::snapshot::Changed;

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

fn open(file: &Path) -> io::Result<(Compressed, Box<dyn Read>)> {
    let mut f = std::io::BufReader::new(std::fs::File::open(file)?);
    let kind = Compressed::sniff(std::io::BufRead::fill_buf(&mut f)?);
    let r: Box<dyn Read> = Box::new(kind.decoder(f)?);
    // PAX and GNU long-name records are read whole by the tar reader: bound them.
    Ok((kind, Box::new(kiln_image::tarlimit::MetaLimit::new(r))))
}

/// `Some(compression)` when `file` is a tar archive (its first header
/// reads), `None` when it is any other file.
pub fn detect_archive(file: &Path) -> Result<Option<Compressed>, UnpackError> {
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

/// Extracts `file` into `root`, the ADD destination directory (at `base`
/// below the stage root), with every owner set to `chown` when given.
/// Returns what it wrote, relative to the stage root. Every write goes
/// through `root`: the archive's own symlinks are followed inside the
/// destination, never out of it, and nothing is done through a path the
/// kernel resolves again.
pub fn unpack_archive(
    file: &Path,
    root: &Root,
    base: &str,
    chown: Option<(u32, u32)>,
) -> Result<Vec<Changed>, UnpackError> {
    let (_, r) = open(file).map_err(UnpackError::Read)?;
    let mut ar = tar::Archive::new(r);
    let base = base.to_string();
    let full = |rel: &str| -> String {
        match (base.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => base.clone(),
            (false, false) => format!("{base}/{rel}"),
        }
    };
    let mut written: Vec<Changed> = Vec::new();
    // Deferred directory metadata, keyed by path below `dest_dir`; dropped when a
    // later entry replaces or removes the directory.
    let mut dirs: BTreeMap<String, Meta> = BTreeMap::new();
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
        let kind = header.entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
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
        let rerr = |e: RootError| UnpackError::Write {
            path: name.clone(),
            error: e.into(),
        };
        // Parents: resolved inside the destination, created when missing.
        let (u, g) = chown.unwrap_or((0, 0));
        let parent = root
            .dir(
                &parents.join("/"),
                Some(NewDir {
                    mode: 0o755,
                    owner: Some((u, g)).filter(|_| can_chown()),
                }),
            )
            .map_err(rerr)?
            .ok_or_else(|| UnpackError::Breakout {
                entry: name.clone(),
            })?;
        for c in &parent.created {
            written.push(Changed {
                path: full(c),
                uid: u,
                gid: g,
            });
        }
        let dir = parent.dir;
        let oname = OsStr::new(last.as_str());
        let rel = dir.rel_of(oname);
        let existing = dir.lstat(oname).map_err(rerr)?;
        if kind.is_dir() {
            if !existing.is_some_and(|s| s.is_dir()) {
                dir.remove_all(oname).map_err(rerr)?;
                forget(&mut dirs, &rel);
                dir.mkdir(oname, 0o700).map_err(rerr)?;
            }
            set_xattrs(&mut entry, &dir, oname);
            dirs.entry(rel.clone()).or_insert(meta);
            written.push(Changed {
                path: full(&rel),
                uid,
                gid,
            });
            continue;
        }
        let tmp = OsString::from(format!(".kiln-tmp-{}-{last}", std::process::id()));
        let made = (|| -> Result<bool, RootError> {
            if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
                let mut out = dir.create_file(&tmp, 0o600)?;
                io::copy(&mut entry, &mut out).map_err(|e| RootError::Io {
                    op: "write",
                    path: name.clone(),
                    source: e,
                })?;
            } else if kind.is_symlink() {
                let link = entry.link_name_bytes().unwrap_or_default().into_owned();
                dir.symlink(&tmp, OsStr::from_bytes(&link))?;
            } else if kind.is_hard_link() {
                let link = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let lc = clean_components(&link).ok_or_else(|| RootError::Io {
                    op: "link",
                    path: name.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "hard link leads outside"),
                })?;
                let (tdir, tname) =
                    root.parent(&lc.join("/"), None)?
                        .ok_or_else(|| RootError::Io {
                            op: "link",
                            path: name.clone(),
                            source: io::Error::new(io::ErrorKind::NotFound, "hard link target"),
                        })?;
                dir.link_from(&tmp, &tdir.dir, &tname)?;
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
                dir.mknod(&tmp, ft, meta.perm, rustix::fs::makedev(major, minor))?;
            } else {
                return Err(RootError::Io {
                    op: "extract",
                    path: name.clone(),
                    source: io::Error::new(io::ErrorKind::Unsupported, "entry type"),
                });
            }
            Ok(true)
        })();
        match made {
            Ok(set_meta) => {
                if set_meta {
                    set_xattrs(&mut entry, &dir, &tmp);
                    if let Err(e) = apply_meta_at(&dir, &tmp, &meta, kind.is_symlink()) {
                        let _ = dir.remove_all(&tmp);
                        return Err(rerr(e));
                    }
                }
                if existing.is_some_and(|s| s.is_dir()) {
                    dir.remove_all(oname).map_err(rerr)?;
                }
                forget(&mut dirs, &rel);
                if let Err(e) = dir.rename(&tmp, &dir, oname) {
                    let _ = dir.remove_all(&tmp);
                    return Err(rerr(e));
                }
                written.push(Changed {
                    path: full(&rel),
                    uid,
                    gid,
                });
            }
            Err(e) if e.kind() == Some(io::ErrorKind::Unsupported) => {}
            Err(e) => {
                let _ = dir.remove_all(&tmp);
                if e.kind() == Some(io::ErrorKind::InvalidData) {
                    return Err(UnpackError::Breakout { entry: name });
                }
                return Err(rerr(e));
            }
        }
    }
    // Directory metadata last (writing their contents changes their mtime), deepest
    // first, each found again from the destination and only if still a directory.
    for (rel, meta) in dirs.iter().rev() {
        let werr = |e: RootError| UnpackError::Write {
            path: rel.clone(),
            error: e.into(),
        };
        let Some((p, name)) = root.parent(rel, None).map_err(werr)? else {
            continue;
        };
        if p.dir
            .lstat(&name)
            .map_err(werr)?
            .is_some_and(|s| s.is_dir())
        {
            apply_meta_at(&p.dir, &name, meta, false).map_err(werr)?;
        }
    }
    Ok(written)
}

/// Forgets deferred metadata of `rel` and everything below it.
fn forget(dirs: &mut BTreeMap<String, Meta>, rel: &str) {
    let prefix = format!("{rel}/");
    dirs.remove(rel);
    let below: Vec<String> = dirs
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in below {
        dirs.remove(&k);
    }
}

fn can_chown() -> bool {
    rustix::process::geteuid().is_root()
}

/// Applies `SCHILY.xattr.*` PAX records of the entry, best effort.
fn set_xattrs<R: Read>(entry: &mut tar::Entry<R>, dir: &Dir, name: &OsStr) {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return;
    };
    for ext in exts.flatten() {
        if let Ok(key) = ext.key() {
            if let Some(k) = key.strip_prefix("SCHILY.xattr.") {
                let _ = dir.set_xattr(name, k, ext.value_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw tar whose entries come in the given order, names unchecked.
    fn raw_tar(path: &Path, entries: &[(&str, tar::EntryType, u32, &str, &[u8])]) {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, mode, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_size(data.len() as u64);
            h.set_mtime(1);
            {
                let gnu = h.as_gnu_mut().expect("gnu header");
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        std::fs::write(path, b.into_inner().expect("tar")).expect("write tar");
    }

    #[test]
    fn an_archive_cannot_chmod_or_write_through_its_own_symlinks() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        use tar::EntryType as T;
        let t = tempfile::tempdir().expect("tempdir");
        let canary = t.path().join("canary");
        std::fs::write(&canary, b"keep").expect("canary");
        std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).expect("outside");
        let c = canary.display().to_string();
        let o = outside.display().to_string();
        let archive = t.path().join("a.tar");
        raw_tar(
            &archive,
            &[
                ("d/", T::Directory, 0o6777, "", b""),
                ("d", T::Symlink, 0o777, &c, b""),
                ("l", T::Symlink, 0o777, &o, b""),
                ("l/x", T::Regular, 0o644, "", b"x"),
                ("up", T::Symlink, 0o777, "../../../..", b""),
                ("up/y", T::Regular, 0o644, "", b"y"),
            ],
        );
        let root = t.path().join("root");
        let dest = root.join("app");
        std::fs::create_dir_all(&dest).expect("dest");
        let dest_root = Root::open(&dest).expect("dest root");
        unpack_archive(&archive, &dest_root, "app", None).expect("unpack");
        let md = std::fs::metadata(&canary).expect("canary");
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_ne!(md.mtime(), 1);
        assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
        // What the symlinks led to landed inside the destination.
        assert!(dest.join(&o[1..]).join("x").is_file());
        assert!(dest.join("y").is_file());
    }
}
