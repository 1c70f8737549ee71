//! Extracting a context tar stream (plain, gzip, bzip2, xz or zstd, told
//! from its first bytes by [`Compressed`]) into a directory, scoped to that
//! directory.
//!
//! Entries are read and written one at a time, so an archive of any size
//! streams through with bounded memory (PAX and GNU long-name records are
//! capped by [`kiln_image::tarlimit::MetaLimit`]). Every entry's path and
//! every hard link's target must be relative and free of `..`, and lie
//! below real directories: an archive of a directory never holds an entry
//! below one of its own symlinks, so an entry written through one is
//! refused rather than followed. Every write goes through
//! [`kiln_image::root`]: the destination is held by a descriptor, parents
//! are opened one component at a time without following symlinks, and the
//! entry is created under a temporary name and renamed over whatever was
//! there (a symlink there is replaced, never followed). Directory modes
//! and times are applied after the archive, through the directory's own
//! descriptor, and dropped when a later entry replaces the directory.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use kiln_image::root::{Dir, Root, RootError};
use kiln_image::Compressed;

use crate::ContextError;

fn archive_error(source: &str, reason: impl Into<String>) -> ContextError {
    ContextError::Archive {
        location: source.to_string(),
        reason: reason.into(),
    }
}

/// Extracts the tar stream `input` into `dest` (which must exist), naming
/// `source` in errors. Returns the number of entries extracted.
pub fn extract(input: impl Read, dest: &Path, source: &str) -> Result<u64, ContextError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, input);
    let head = buffered
        .fill_buf()
        .map_err(|e| archive_error(source, e.to_string()))?;
    if head.is_empty() {
        return Err(archive_error(source, "empty archive"));
    }
    // A zstd or gzip magic needs 4 bytes; a short first read is rare but
    // possible on pipes, so top it up when needed.
    let compression = if head.len() < 4 {
        let mut first = head.to_vec();
        let n = first.len();
        buffered.consume(n);
        let mut more = [0u8; 4];
        let got = read_up_to(&mut buffered, &mut more[..4 - n])
            .map_err(|e| archive_error(source, e.to_string()))?;
        first.extend_from_slice(&more[..got]);
        let chained: Box<dyn Read> = Box::new(std::io::Cursor::new(first.clone()).chain(buffered));
        return extract_with(chained, Compressed::sniff(&first), dest, source);
    } else {
        Compressed::sniff(head)
    };
    extract_with(Box::new(buffered), compression, dest, source)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn extract_with(
    input: Box<dyn Read + '_>,
    compression: Compressed,
    dest: &Path,
    source: &str,
) -> Result<u64, ContextError> {
    let reader = compression
        .decoder(BufReader::new(input))
        .map_err(|e| archive_error(source, format!("{compression:?}: {e}")))?;
    let mut archive = tar::Archive::new(kiln_image::tarlimit::MetaLimit::new(reader));
    let root = Root::open(dest).map_err(|e| archive_error(source, e.to_string()))?;
    let mut out = Extractor {
        root: &root,
        dirs: BTreeMap::new(),
        last: None,
        tmp: 0,
    };
    let entries = archive
        .entries()
        .map_err(|e| archive_error(source, e.to_string()))?;
    let mut count = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_error(source, reason_of(&e)))?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| archive_error(source, format!("entry with an invalid path: {e}")))?
            .into_owned();
        check_relative(&path)
            .map_err(|why| archive_error(source, format!("entry {} {why}", path.display())))?;
        let link = if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| archive_error(source, format!("entry {}: {e}", path.display())))?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            check_relative(&target).map_err(|why| {
                archive_error(
                    source,
                    format!("hard link {} -> {} {why}", path.display(), target.display()),
                )
            })?;
            Some(target)
        } else {
            None
        };
        out.entry(&mut entry, &path, link.as_deref())
            .map_err(|e| archive_error(source, format!("entry {}: {e}", path.display())))?;
        count += 1;
    }
    out.finish()
        .map_err(|e| archive_error(source, e.to_string()))?;
    Ok(count)
}

/// Why one entry could not be extracted.
#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error("{0} is a symbolic link; entries are only written below real directories")]
    ThroughSymlink(String),
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error("hard link target {0} does not exist")]
    MissingLinkTarget(String),
    #[error("unsupported entry type {0:?}")]
    Unsupported(tar::EntryType),
    #[error(transparent)]
    Root(#[from] RootError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Extraction state: the destination, deferred directory metadata (mode,
/// mtime by path, applied deepest first at the end) and the last parent
/// directory opened (entries of one directory come together).
struct Extractor<'r> {
    root: &'r Root,
    dirs: BTreeMap<String, (u32, i64)>,
    last: Option<(String, Dir)>,
    tmp: u64,
}

impl Extractor<'_> {
    /// Opens (creating when missing) the directory `parent` below the
    /// destination, one component at a time, never following a symlink.
    fn parent(&mut self, parent: &[OsString]) -> Result<Dir, EntryError> {
        let key = join(parent);
        if let Some((k, d)) = &self.last {
            if *k == key {
                return Ok(d.try_clone()?);
            }
        }
        let mut dir = self.root.top()?;
        for c in parent {
            match dir.lstat(c)? {
                Some(st) if st.is_dir() => {}
                Some(st) if st.is_symlink() => {
                    return Err(EntryError::ThroughSymlink(dir.rel_of(c)))
                }
                Some(_) => return Err(EntryError::NotADirectory(dir.rel_of(c))),
                None => dir.mkdir(c, 0o755)?,
            }
            dir = dir.subdir(c)?;
        }
        self.last = Some((key, dir.try_clone()?));
        Ok(dir)
    }

    fn entry(
        &mut self,
        entry: &mut tar::Entry<'_, impl Read>,
        path: &Path,
        link: Option<&Path>,
    ) -> Result<(), EntryError> {
        let comps = components(path);
        let Some((name, parent)) = comps.split_last() else {
            return Ok(()); // "./": the destination itself
        };
        let dir = self.parent(parent)?;
        let rel = dir.rel_of(name);
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().unwrap_or(0) as i64;
        let existing = dir.lstat(name)?;
        if kind.is_dir() {
            if !existing.as_ref().is_some_and(|st| st.is_dir()) {
                dir.remove_all(name)?;
                self.forget(&rel);
                dir.mkdir(name, 0o700)?;
            }
            self.dirs.insert(rel, (mode, mtime));
            return Ok(());
        }
        if existing.as_ref().is_some_and(|st| st.is_dir()) {
            dir.remove_all(name)?;
            self.forget(&rel);
        }
        self.tmp += 1;
        let tmp = OsString::from(format!(".kiln-tmp-{}-{}", std::process::id(), self.tmp));
        let made = (|| -> Result<bool, EntryError> {
            if kind.is_file() || kind.is_contiguous() {
                let mut file = dir.create_file(&tmp, 0o600)?;
                std::io::copy(entry, &mut file)?;
            } else if kind.is_symlink() {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                dir.symlink(&tmp, OsStr::from_bytes(&target))?;
                return Ok(false);
            } else if let Some(link) = link {
                let lc = components(link);
                let Some((lname, lparent)) = lc.split_last() else {
                    return Err(EntryError::MissingLinkTarget(link.display().to_string()));
                };
                let ldir = self.parent(lparent)?;
                if ldir.lstat(lname)?.is_none() {
                    return Err(EntryError::MissingLinkTarget(link.display().to_string()));
                }
                dir.link_from(&tmp, &ldir, lname)?;
                return Ok(false);
            } else if kind.is_fifo() {
                dir.mknod(&tmp, rustix::fs::FileType::Fifo, mode, 0)?;
            } else {
                // Devices have no place in a build context (Docker's
                // builder refuses to send them too).
                return Err(EntryError::Unsupported(kind));
            }
            Ok(true)
        })();
        match made {
            Ok(set_meta) => {
                if set_meta {
                    dir.chmod(&tmp, mode)?;
                    dir.set_times(&tmp, (mtime, 0), (mtime, 0))?;
                }
                if let Err(e) = dir.rename(&tmp, &dir, name) {
                    let _ = dir.remove_all(&tmp);
                    return Err(e.into());
                }
                Ok(())
            }
            Err(e) => {
                let _ = dir.remove_all(&tmp);
                Err(e)
            }
        }
    }

    /// Drops the deferred metadata of `rel` and everything below it.
    fn forget(&mut self, rel: &str) {
        let below = format!("{rel}/");
        self.dirs
            .retain(|k, _| k.as_str() != rel && !k.starts_with(below.as_str()));
        if self
            .last
            .as_ref()
            .is_some_and(|(k, _)| k.as_str() == rel || k.starts_with(below.as_str()))
        {
            self.last = None;
        }
    }

    /// Applies directory modes and times, deepest first (a child's entry
    /// changes its parent's mtime; a parent's mode may forbid the child).
    fn finish(mut self) -> Result<(), RootError> {
        self.last = None;
        for (rel, (mode, mtime)) in std::mem::take(&mut self.dirs).into_iter().rev() {
            let Some((parent, name)) = self.root.parent(&rel, None)? else {
                continue;
            };
            parent.dir.chmod(&name, mode)?;
            parent.dir.set_times(&name, (mtime, 0), (mtime, 0))?;
        }
        Ok(())
    }
}

/// A checked relative path's normal components.
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            _ => None,
        })
        .collect()
}

fn join(parts: &[OsString]) -> String {
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// An I/O error from the tar crate and its causes on one line, without the
/// "failed to unpack <path>" wrappers the crate nests around the cause.
fn reason_of(e: &std::io::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(inner) = cur {
        parts.push(inner.to_string());
        cur = inner.source();
    }
    let useful: Vec<&String> = parts
        .iter()
        .filter(|p| !p.starts_with("failed to unpack"))
        .collect();
    let mut msg = if useful.is_empty() {
        parts.join(": ")
    } else {
        useful
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(": ")
    };
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        msg = format!("truncated archive ({msg})");
    }
    msg
}

/// Rejects absolute paths and `..` components.
fn check_relative(path: &Path) -> Result<(), &'static str> {
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => return Err("is an absolute path"),
            Component::ParentDir => return Err("escapes the context (\"..\")"),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_only() {
        assert!(check_relative(Path::new("a/b")).is_ok());
        assert!(check_relative(Path::new("./a")).is_ok());
        assert_eq!(
            check_relative(Path::new("/etc/x")),
            Err("is an absolute path")
        );
        assert_eq!(
            check_relative(Path::new("a/../../x")),
            Err("escapes the context (\"..\")")
        );
    }
}
