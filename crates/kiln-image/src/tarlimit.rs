//! A bound on the tar metadata records a reader buffers whole.
//!
//! The `tar` crate reads a PAX extended header (`x`, `g`) or a GNU long name or long
//! link (`L`, `K`) into memory in one piece before it yields the entry it describes, so a
//! hostile layer or archive holding one such record of gigabytes makes kiln allocate
//! gigabytes. [`MetaLimit`] sits between the decompressed stream and the tar reader,
//! follows the archive's 512-byte blocks as they pass, and fails the read with an
//! error naming the record as soon as a metadata record announces more than
//! [`MAX_META_RECORD`] bytes, before any of it is buffered.
//!
//! It is written by hand because no tar crate offers the bound. It only observes: it
//! never changes a byte. Should it lose track of the block structure (a header whose
//! checksum does not add up, as in a corrupt or non-tar stream), it stops looking and
//! passes the rest through, leaving the verdict to the tar reader; it can therefore
//! never refuse an archive the tar reader would read with bounded memory.

use std::io::{self, Read};

/// The largest PAX or GNU long-name record accepted (1 MiB: far above any real path,
/// xattr set or PAX header, far below what hurts).
pub const MAX_META_RECORD: u64 = 1 << 20;

const BLOCK: usize = 512;

/// See the module doc.
pub struct MetaLimit<R> {
    inner: R,
    header: [u8; BLOCK],
    /// Bytes of the current header block seen so far.
    hpos: usize,
    /// Bytes of entry data (with padding) before the next header.
    remaining: u64,
    /// The entry data being passed is a PAX record kept to read a `size` override.
    pax: Option<Vec<u8>>,
    /// Unpadded length of the PAX record being kept.
    pax_len: u64,
    /// A `size` from a PAX record, for the next entry.
    next_size: Option<u64>,
    /// GNU sparse extension blocks still to come after a header.
    sparse_ext: bool,
    /// Lost track of the blocks: pass everything through.
    blind: bool,
}

impl<R: Read> MetaLimit<R> {
    pub fn new(inner: R) -> Self {
        MetaLimit {
            inner,
            header: [0; BLOCK],
            hpos: 0,
            remaining: 0,
            pax: None,
            pax_len: 0,
            next_size: None,
            sparse_ext: false,
            blind: false,
        }
    }

    fn on_header(&mut self) -> io::Result<()> {
        let h = &self.header;
        if h.iter().all(|b| *b == 0) {
            return Ok(()); // end-of-archive blocks
        }
        if !checksum_ok(h) {
            self.blind = true;
            return Ok(());
        }
        if self.sparse_ext {
            // A GNU sparse extension block: no data of its own.
            self.sparse_ext = h[504] != 0;
            return Ok(());
        }
        let kind = h[156];
        let Some(mut size) = parse_size(&h[124..136]) else {
            self.blind = true;
            return Ok(());
        };
        let meta = matches!(kind, b'x' | b'g' | b'L' | b'K');
        if meta && size > MAX_META_RECORD {
            let what = match kind {
                b'x' | b'g' => "PAX extended header",
                _ => "GNU long name",
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "tar {what} record of {size} bytes exceeds the {MAX_META_RECORD}-byte limit"
                ),
            ));
        }
        if !meta {
            if let Some(s) = self.next_size.take() {
                size = s;
            }
        }
        if kind == b'S' && h[482] != 0 {
            self.sparse_ext = true;
        }
        if kind == b'x' {
            self.pax = Some(Vec::with_capacity(size as usize));
            self.pax_len = size;
        }
        self.remaining = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        if self.remaining == 0 {
            self.finish_pax();
        }
        Ok(())
    }

    fn finish_pax(&mut self) {
        if let Some(rec) = self.pax.take() {
            let rec = &rec[..rec.len().min(self.pax_len as usize)];
            self.next_size = pax_size(rec);
        }
    }
}

impl<R: Read> Read for MetaLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.blind {
            return self.inner.read(buf);
        }
        let want = if self.remaining > 0 {
            buf.len()
                .min(self.remaining.min(usize::MAX as u64) as usize)
        } else {
            buf.len().min(BLOCK - self.hpos)
        };
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Ok(0);
        }
        if self.remaining > 0 {
            if let Some(rec) = self.pax.as_mut() {
                rec.extend_from_slice(&buf[..n]);
            }
            self.remaining -= n as u64;
            if self.remaining == 0 {
                self.finish_pax();
            }
        } else {
            self.header[self.hpos..self.hpos + n].copy_from_slice(&buf[..n]);
            self.hpos += n;
            if self.hpos == BLOCK {
                self.hpos = 0;
                self.on_header()?;
            }
        }
        Ok(n)
    }
}

fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let Some(want) = parse_octal(&h[148..156]) else {
        return false;
    };
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    sum == want
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// A header's size field: octal, or GNU base-256 (high bit of the first byte set).
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    parse_octal(field)
}

/// The `size` keyword of a PAX record set (`<len> size=<n>\n` lines).
fn pax_size(mut rec: &[u8]) -> Option<u64> {
    let mut found = None;
    while !rec.is_empty() {
        let sp = rec.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rec[..sp]).ok()?.parse().ok()?;
        if len <= sp || len > rec.len() {
            return found;
        }
        let line = &rec[sp + 1..len];
        if let Some(v) = line.strip_prefix(b"size=") {
            let v = v.strip_suffix(b"\n").unwrap_or(v);
            found = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
        }
        rec = &rec[len..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn read_all(bytes: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                let n = b.len().min(self.1).min(self.0.len());
                b[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        MetaLimit::new(Trickle(bytes, chunk)).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn ordinary_archives_pass_unchanged_whatever_the_read_sizes() {
        let long = "d/".repeat(200) + "f";
        let bytes = archive(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(1000);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, &long, &vec![7u8; 1000][..]).unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_size(3);
            h.set_cksum();
            b.append_pax_extensions([("path", b"p/".repeat(300).as_slice())])
                .unwrap();
            b.append_data(&mut h, "short", &b"abc"[..]).unwrap();
        });
        for chunk in [1, 7, 512, 513, 100_000] {
            assert_eq!(read_all(&bytes, chunk).unwrap(), bytes, "chunk {chunk}");
        }
    }

    #[test]
    fn a_huge_pax_record_is_refused_before_it_is_read() {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(MAX_META_RECORD + 1);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(b'a', 4096));
        let err = read_all(&bytes, 100_000).unwrap_err();
        assert!(err.to_string().contains("PAX extended header"), "{err}");
    }

    #[test]
    fn a_huge_gnu_long_name_after_ordinary_entries_is_refused() {
        let mut bytes = archive(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(5);
            h.set_cksum();
            b.append_data(&mut h, "a", &b"hello"[..]).unwrap();
        });
        bytes.truncate(1024); // drop the end-of-archive blocks
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(64 << 20);
        h.set_cksum();
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend(std::iter::repeat_n(b'n', 2048));
        assert!(read_all(&bytes, 333).is_err());
    }

    #[test]
    fn a_pax_size_override_keeps_the_blocks_in_step() {
        // The PAX size (600) differs from the header's (0): the next header must
        // be found after 600 bytes of data, so its huge long name is still caught.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", b"600".as_slice())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_path("f").unwrap();
        h.set_cksum();
        let mut bytes = b.into_inner().unwrap();
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend(vec![1u8; 1024]); // 600 bytes of data, padded to 1024
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::GNULongName);
        l.set_size(64 << 20);
        l.set_cksum();
        bytes.extend_from_slice(l.as_bytes());
        assert!(read_all(&bytes, 4096).is_err());
    }

    #[test]
    fn a_stream_that_is_not_tar_passes_through() {
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(read_all(&bytes, 1000).unwrap(), bytes);
    }
}
