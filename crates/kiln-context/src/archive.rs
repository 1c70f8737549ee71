//! Extracting a context tar stream (plain, gzip or zstd, detected from the
//! first bytes) into a directory, scoped to that directory.
//!
//! Entries are read and written one at a time, so an archive of any size
//! streams through with bounded memory. Every entry's path must be relative
//! and free of `..`; writes go through the `tar` crate's `unpack_in`, which
//! refuses to write through a symlink that leads outside the root and
//! replaces (never follows) an existing link at the destination.

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path};

use crate::ContextError;

/// Compression of a tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Tells the compression from a stream's first bytes.
pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

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
        return extract_with(chained, detect(&first), dest, source);
    } else {
        detect(head)
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
    compression: Compression,
    dest: &Path,
    source: &str,
) -> Result<u64, ContextError> {
    let reader: Box<dyn Read + '_> = match compression {
        Compression::None => input,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(input)
                .map_err(|e| archive_error(source, format!("zstd: {e}")))?,
        ),
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let entries = archive
        .entries()
        .map_err(|e| archive_error(source, e.to_string()))?;
    let mut count = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_error(source, reason_of(&e)))?;
        let path = entry
            .path()
            .map_err(|e| archive_error(source, format!("entry with an invalid path: {e}")))?
            .into_owned();
        check_relative(&path)
            .map_err(|why| archive_error(source, format!("entry {} {why}", path.display())))?;
        if entry.header().entry_type().is_hard_link() {
            if let Ok(Some(target)) = entry.link_name() {
                check_relative(&target).map_err(|why| {
                    archive_error(
                        source,
                        format!("hard link {} -> {} {why}", path.display(), target.display()),
                    )
                })?;
            }
        }
        entry.unpack_in(dest).map_err(|e| {
            archive_error(
                source,
                format!("entry {}: {}", path.display(), reason_of(&e)),
            )
        })?;
        count += 1;
    }
    Ok(count)
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
    fn detects_magic() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(detect(b"file.txt\0"), Compression::None);
    }

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
