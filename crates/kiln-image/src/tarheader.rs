//! Deterministic tar header encoding (pure, no I/O): POSIX ustar headers plus PAX
//! extended headers when a field does not fit (long or non-ASCII names and link
//! targets, sizes ≥ 8 GiB, ids > 2097151, negative or huge mtimes, xattrs).
//!
//! Written by hand instead of with `tar::Builder`/`tar::Header`: `tar::Builder` falls back
//! to GNU long-name (`L`/`K`) records rather than PAX, fills `uname`/`gname` from the
//! system and cannot sort PAX records, so its bytes are not fully under kiln's control.
//! The rules here: empty uname/gname, all numeric fields zero-padded octal, PAX records
//! sorted by key, PAX header name `PaxHeaders.0/<base name>`, mode/uid/gid/mtime 0 on
//! the PAX header itself; no atime/ctime anywhere.

use std::collections::BTreeMap;

/// Tar type flags used by kiln.
pub(crate) mod typeflag {
    pub const REG: u8 = b'0';
    pub const LINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const CHAR: u8 = b'3';
    pub const BLOCK: u8 = b'4';
    pub const DIR: u8 = b'5';
    pub const FIFO: u8 = b'6';
    pub const PAX: u8 = b'x';
}

/// Everything kiln writes into one entry's header(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderSpec {
    /// Full tar name (directories end in `/`).
    pub name: String,
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub linkname: String,
    pub devmajor: u32,
    pub devminor: u32,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

const MAX_OCTAL_7: u64 = 0o7_777_777;
const MAX_OCTAL_11: u64 = 0o77_777_777_777;

/// Encodes the header block(s) for `h`: an optional PAX `x` entry (header + padded
/// records) followed by the ustar header. The result's length is a multiple of 512.
pub(crate) fn encode(h: &HeaderSpec) -> Vec<u8> {
    let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let (name, prefix) = match split_ustar_name(&h.name) {
        Some(np) => np,
        None => {
            pax.insert("path".into(), h.name.as_bytes().to_vec());
            (String::new(), String::new())
        }
    };
    let linkname = if h.linkname.len() <= 100 && h.linkname.is_ascii() {
        h.linkname.clone()
    } else {
        pax.insert("linkpath".into(), h.linkname.as_bytes().to_vec());
        String::new()
    };
    let size = if h.size > MAX_OCTAL_11 {
        pax.insert("size".into(), h.size.to_string().into_bytes());
        0
    } else {
        h.size
    };
    let uid = if h.uid > MAX_OCTAL_7 {
        pax.insert("uid".into(), h.uid.to_string().into_bytes());
        0
    } else {
        h.uid
    };
    let gid = if h.gid > MAX_OCTAL_7 {
        pax.insert("gid".into(), h.gid.to_string().into_bytes());
        0
    } else {
        h.gid
    };
    let mtime = match u64::try_from(h.mtime) {
        Ok(m) if m <= MAX_OCTAL_11 => m,
        _ => {
            pax.insert("mtime".into(), h.mtime.to_string().into_bytes());
            0
        }
    };
    for (k, v) in &h.xattrs {
        pax.insert(format!("SCHILY.xattr.{k}"), v.clone());
    }

    let mut out = Vec::with_capacity(1536);
    if !pax.is_empty() {
        let mut records = Vec::new();
        for (k, v) in &pax {
            records.extend_from_slice(&pax_record(k, v));
        }
        let base = h.name.trim_end_matches('/');
        let base = base.rsplit('/').next().unwrap_or(base);
        let safe: String = base
            .chars()
            .map(|c| if c.is_ascii() && c != '\0' { c } else { '_' })
            .take(100 - "PaxHeaders.0/".len())
            .collect();
        let pax_hdr = ustar_block(&UstarFields {
            name: &format!("PaxHeaders.0/{safe}"),
            prefix: "",
            typeflag: typeflag::PAX,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: records.len() as u64,
            mtime: 0,
            linkname: "",
            devmajor: 0,
            devminor: 0,
        });
        out.extend_from_slice(&pax_hdr);
        out.extend_from_slice(&records);
        out.resize(out.len() + padding(records.len() as u64), 0);
    }
    out.extend_from_slice(&ustar_block(&UstarFields {
        name: &name,
        prefix: &prefix,
        typeflag: h.typeflag,
        mode: h.mode & 0o7777,
        uid,
        gid,
        size,
        mtime,
        linkname: &linkname,
        devmajor: h.devmajor,
        devminor: h.devminor,
    }));
    out
}

/// Zero bytes needed after `len` bytes of content to reach a 512-byte boundary.
pub(crate) fn padding(len: u64) -> usize {
    ((512 - (len % 512)) % 512) as usize
}

/// One PAX record: `"<len> <key>=<value>\n"` where `<len>` counts the whole record.
pub(crate) fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(len.to_string().as_bytes());
    r.push(b' ');
    r.extend_from_slice(key.as_bytes());
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Splits a name into ustar (name, prefix) if it fits in plain ustar fields.
fn split_ustar_name(full: &str) -> Option<(String, String)> {
    if !full.is_ascii() || full.contains('\0') {
        return None;
    }
    if full.len() <= 100 {
        return Some((full.to_string(), String::new()));
    }
    // Split at a '/' so that prefix <= 155 and name <= 100 (name non-empty).
    let bytes = full.as_bytes();
    let start = full.len().saturating_sub(101);
    for i in start..full.len().min(156) {
        if bytes.get(i) == Some(&b'/') {
            let (p, n) = (full.get(..i)?, full.get(i + 1..)?);
            if !n.is_empty() && n.len() <= 100 && p.len() <= 155 {
                return Some((n.to_string(), p.to_string()));
            }
        }
    }
    None
}

struct UstarFields<'a> {
    name: &'a str,
    prefix: &'a str,
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    linkname: &'a str,
    devmajor: u32,
    devminor: u32,
}

fn put(block: &mut [u8; 512], off: usize, width: usize, bytes: &[u8]) {
    let n = bytes.len().min(width);
    if let (Some(dst), Some(src)) = (block.get_mut(off..off + n), bytes.get(..n)) {
        dst.copy_from_slice(src);
    }
}

fn put_octal(block: &mut [u8; 512], off: usize, width: usize, v: u64) {
    let s = format!("{:0w$o}\0", v, w = width - 1);
    put(block, off, width, s.as_bytes());
}

fn ustar_block(f: &UstarFields<'_>) -> [u8; 512] {
    let mut b = [0u8; 512];
    put(&mut b, 0, 100, f.name.as_bytes());
    put_octal(&mut b, 100, 8, u64::from(f.mode));
    put_octal(&mut b, 108, 8, f.uid);
    put_octal(&mut b, 116, 8, f.gid);
    put_octal(&mut b, 124, 12, f.size);
    put_octal(&mut b, 136, 12, f.mtime);
    put(&mut b, 148, 8, b"        ");
    b[156] = f.typeflag;
    put(&mut b, 157, 100, f.linkname.as_bytes());
    put(&mut b, 257, 6, b"ustar\0");
    put(&mut b, 263, 2, b"00");
    put_octal(&mut b, 329, 8, u64::from(f.devmajor));
    put_octal(&mut b, 337, 8, u64::from(f.devminor));
    put(&mut b, 345, 155, f.prefix.as_bytes());
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    put(&mut b, 148, 8, format!("{sum:06o}\0 ").as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> HeaderSpec {
        HeaderSpec {
            name: name.into(),
            typeflag: typeflag::REG,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            linkname: String::new(),
            devmajor: 0,
            devminor: 0,
            xattrs: vec![],
        }
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"abc"), b"12 path=abc\n");
        // body 98 bytes + "99" would be 100, which needs 3 digits: 101 in total.
        let r = pax_record("path", &[b'a'; 91]);
        assert_eq!(r.len(), 101);
        assert!(r.starts_with(b"101 path=aaa"));
    }

    #[test]
    fn short_name_is_plain_ustar() {
        let b = encode(&spec("etc/passwd"));
        assert_eq!(b.len(), 512);
        assert_eq!(&b[0..10], b"etc/passwd");
        assert_eq!(&b[100..108], b"0000644\0");
        assert_eq!(&b[257..265], b"ustar\x0000");
        assert_eq!(&b[265..329], &[0u8; 64][..], "uname/gname must be empty");
    }

    #[test]
    fn ustar_prefix_split_and_pax_fallback() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(20));
        let b = encode(&spec(&long));
        assert_eq!(b.len(), 512, "fits via prefix");
        assert_eq!(&b[345..465], "d".repeat(120).as_bytes());
        let huge = "x".repeat(150);
        let b = encode(&spec(&huge));
        assert_eq!(b.len(), 512 * 3);
        assert_eq!(b[156], b'x');
        let rec = pax_record("path", huge.as_bytes());
        assert_eq!(rec.len(), 160);
        assert_eq!(&b[512..512 + 160], rec.as_slice());
    }

    #[test]
    fn big_values_go_to_pax_in_key_order() {
        let mut s = spec("big");
        s.size = 9 << 30;
        s.uid = 3_000_000;
        s.mtime = -5;
        s.xattrs = vec![("user.a".into(), b"1".to_vec())];
        let b = encode(&s);
        let hdr = &b[b.len() - 512..];
        assert_eq!(&hdr[124..136], b"00000000000\0");
        assert_eq!(&hdr[108..116], b"0000000\0");
        // The tar crate reads the PAX size (the data itself is not needed to parse it).
        let mut ar = tar::Archive::new(&b[..]);
        let first = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(first.size(), 9 << 30);
        assert_eq!(first.header().entry_type(), tar::EntryType::Regular);
        let recs = String::from_utf8_lossy(&b[512..b.len() - 512]);
        let recs = recs.trim_end_matches('\0');
        assert_eq!(
            recs,
            "25 SCHILY.xattr.user.a=1\n12 mtime=-5\n19 size=9663676416\n15 uid=3000000\n"
        );
    }
}
