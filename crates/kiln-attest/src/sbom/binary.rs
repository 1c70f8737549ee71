//! Packages compiled into ELF executables:
//!
//! * Go build information (`.go.buildinfo`, starting `\xff Go buildinf:`): the Go
//!   version (as `stdlib`), the main module and every `dep` line with its replacement,
//!   in the inline form Go 1.18+ writes. The older pointer form is noted and skipped.
//! * cargo-auditable data (`.dep-v0`): zlib-compressed JSON listing every crate.
//!
//! The ELF is read with the `object` crate through a read cache, so only the headers
//! and the one section are read, never the whole binary; section sizes are capped. The
//! build-info layout is decoded by hand following Go's `debug/buildinfo` (no Rust crate
//! reads it).

use std::io::Read;

use object::{Object, ObjectSection};
use serde::Deserialize;

use super::{purl, Ctx, Ecosystem, Package};

const GO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// Largest `.go.buildinfo` section read (real ones are a few KiB).
const MAX_GO_SECTION: u64 = 4 << 20;
/// Largest compressed and decompressed cargo-auditable data.
const MAX_AUDIT_ZLIB: u64 = 8 << 20;
const MAX_AUDIT_JSON: u64 = 64 << 20;

pub(crate) fn read(ctx: &mut Ctx<'_>, rel: &str, size: u64) -> Vec<Package> {
    if size > ctx.opts.max_binary_bytes {
        ctx.note(format!("/{rel}: {size} bytes: too large to look into"));
        return Vec::new();
    }
    let mut file = match ctx.tree.open_file(rel) {
        Ok(Some((f, _, _))) => f,
        Ok(None) => return Vec::new(),
        Err(e) => {
            ctx.note(e.to_string());
            return Vec::new();
        }
    };
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
        return Vec::new();
    }
    let cache = object::ReadCache::new(file);
    let elf = match object::File::parse(&cache) {
        Ok(f) => f,
        Err(e) => {
            ctx.note(format!("/{rel}: ELF: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    if let Some(sec) = elf.section_by_name(".go.buildinfo") {
        match section(&sec, MAX_GO_SECTION) {
            Some(data) => match go_buildinfo(data) {
                Ok(info) => out.extend(go_packages(ctx, rel, &info)),
                Err(e) => ctx.note(format!("/{rel}: Go build info: {e}")),
            },
            None => ctx.note(format!("/{rel}: .go.buildinfo unreadable or too large")),
        }
    }
    if let Some(sec) = elf.section_by_name(".dep-v0") {
        match section(&sec, MAX_AUDIT_ZLIB) {
            Some(data) => match auditable(data) {
                Ok(pkgs) => out.extend(auditable_packages(ctx, rel, pkgs)),
                Err(e) => ctx.note(format!("/{rel}: cargo-auditable data: {e}")),
            },
            None => ctx.note(format!("/{rel}: .dep-v0 unreadable or too large")),
        }
    }
    out
}

fn section<'d, S: ObjectSection<'d>>(sec: &S, max: u64) -> Option<&'d [u8]> {
    if sec.size() > max {
        return None;
    }
    sec.data().ok()
}

/// What Go's build info says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GoInfo {
    /// `go1.22.1`.
    pub go_version: String,
    /// The main module (path, version).
    pub main: Option<(String, String)>,
    /// Dependencies (path, version) after replacements.
    pub deps: Vec<(String, String)>,
}

/// Why embedded build data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("no build info header")]
    NoHeader,
    #[error("pre-Go 1.18 pointer form: not read")]
    PointerForm,
    #[error("truncated Go version")]
    TruncatedVersion,
    #[error("truncated module info")]
    TruncatedModules,
    #[error("{0}")]
    Inflate(#[from] std::io::Error),
    #[error("decompressed data over the limit")]
    TooLarge,
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes a `.go.buildinfo` section (or any buffer starting with its header).
pub fn go_buildinfo(data: &[u8]) -> Result<GoInfo, EmbeddedError> {
    if data.len() < 32 || !data.starts_with(GO_MAGIC) {
        return Err(EmbeddedError::NoHeader);
    }
    let flags = data[15];
    if flags & 2 == 0 {
        return Err(EmbeddedError::PointerForm);
    }
    let mut rest = &data[32..];
    let version = varint_string(&mut rest).ok_or(EmbeddedError::TruncatedVersion)?;
    let modinfo = varint_string(&mut rest).ok_or(EmbeddedError::TruncatedModules)?;
    let mut info = GoInfo {
        go_version: String::from_utf8_lossy(version).into_owned(),
        ..Default::default()
    };
    // The module info is framed by 16-byte sentinels.
    let modinfo = if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        &modinfo[16..modinfo.len() - 16]
    } else {
        modinfo
    };
    for line in String::from_utf8_lossy(modinfo).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["mod", path, version, ..] => info.main = Some((path.to_string(), version.to_string())),
            ["dep", path, version, ..] => info.deps.push((path.to_string(), version.to_string())),
            // A replacement with a version is the module used; a local
            // directory replacement ("=> ../x (devel)") keeps the original.
            ["=>", path, version, ..] if !version.is_empty() && *version != "(devel)" => {
                if let Some(last) = info.deps.last_mut() {
                    *last = (path.to_string(), version.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// A uvarint length followed by that many bytes.
fn varint_string<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut n: u64 = 0;
    let mut shift = 0u32;
    let mut i = 0;
    loop {
        let b = *buf.get(i)?;
        i += 1;
        n |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let n = usize::try_from(n).ok()?;
    let end = i.checked_add(n)?;
    let s = buf.get(i..end)?;
    *buf = &buf[end..];
    Some(s)
}

fn go_package(ctx: &mut Ctx<'_>, rel: &str, path: &str, version: &str) -> Option<Package> {
    let (ns, name) = match path.rsplit_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, path),
    };
    match purl("golang", ns, name, version, &[]) {
        Ok(purl) => Some(Package {
            ecosystem: Ecosystem::Go,
            name: path.to_string(),
            version: version.to_string(),
            purl,
            license: None,
            supplier: None,
            found_in: vec![format!("/{rel}")],
            files: Vec::new(),
        }),
        Err(e) => {
            ctx.note(format!("/{rel}: {e}: skipped"));
            None
        }
    }
}

fn go_packages(ctx: &mut Ctx<'_>, rel: &str, info: &GoInfo) -> Vec<Package> {
    let mut out = Vec::new();
    if !info.go_version.is_empty() {
        out.extend(go_package(ctx, rel, "stdlib", &info.go_version));
    }
    if let Some((path, version)) = &info.main {
        if let Some(mut p) = go_package(ctx, rel, path, version) {
            p.files = vec![format!("/{rel}")];
            out.push(p);
        }
    }
    for (path, version) in &info.deps {
        out.extend(go_package(ctx, rel, path, version));
    }
    out
}

#[derive(Deserialize)]
struct AuditData {
    packages: Vec<AuditPackage>,
}

#[derive(Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
}

/// Decodes cargo-auditable's zlib-compressed JSON.
fn auditable(data: &[u8]) -> Result<Vec<(String, String)>, EmbeddedError> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_AUDIT_JSON + 1)
        .read_to_end(&mut json)?;
    if json.len() as u64 > MAX_AUDIT_JSON {
        return Err(EmbeddedError::TooLarge);
    }
    let d: AuditData = serde_json::from_slice(&json)?;
    Ok(d.packages
        .into_iter()
        .map(|p| (p.name, p.version))
        .collect())
}

fn auditable_packages(ctx: &mut Ctx<'_>, rel: &str, pkgs: Vec<(String, String)>) -> Vec<Package> {
    let mut out = Vec::new();
    for (name, version) in pkgs {
        match purl("cargo", None, &name, &version, &[]) {
            Ok(purl) => out.push(Package {
                ecosystem: Ecosystem::Cargo,
                name,
                version,
                purl,
                license: None,
                supplier: None,
                found_in: vec![format!("/{rel}")],
                files: Vec::new(),
            }),
            Err(e) => ctx.note(format!("/{rel}: {e}: skipped")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = GO_MAGIC.to_vec();
        b.push(8); // pointer size
        b.push(2); // flags: inline strings
        b.resize(32, 0);
        for s in [version.as_bytes(), modinfo.as_bytes()] {
            let mut n = s.len();
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    b.push(byte);
                    break;
                }
                b.push(byte | 0x80);
            }
            b.extend_from_slice(s);
        }
        b
    }

    #[test]
    fn decodes_inline_build_info() {
        let sentinel = "0123456789abcdef";
        let modinfo = format!(
            "{sentinel}path\texample.com/cmd\nmod\texample.com\tv1.2.3\th1:x=\ndep\tgolang.org/x/sys\tv0.1.0\th1:y=\ndep\tgithub.com/a/b\tv1.0.0\th1:z=\n=>\tgithub.com/fork/b\tv1.0.1\th1:w=\nbuild\t-compiler=gc\n{sentinel}"
        );
        let info = go_buildinfo(&blob("go1.22.1", &modinfo)).expect("decodes");
        assert_eq!(info.go_version, "go1.22.1");
        assert_eq!(info.main, Some(("example.com".into(), "v1.2.3".into())));
        assert_eq!(
            info.deps,
            vec![
                ("golang.org/x/sys".into(), "v0.1.0".into()),
                ("github.com/fork/b".into(), "v1.0.1".into())
            ]
        );
    }

    #[test]
    fn malformed_build_info_is_an_error_not_a_panic() {
        let good = blob("go1.22.1", "x");
        for cut in 0..good.len() {
            let _ = go_buildinfo(&good[..cut]);
        }
        let mut huge = GO_MAGIC.to_vec();
        huge.extend_from_slice(&[8, 2]);
        huge.resize(32, 0);
        huge.extend_from_slice(&[0xff; 12]);
        assert!(go_buildinfo(&huge).is_err());
        let mut old = blob("go1.16", "x");
        old[15] = 0;
        assert!(go_buildinfo(&old).is_err());
    }
}
