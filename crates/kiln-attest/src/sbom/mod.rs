//! The software bill of materials of a root filesystem.
//!
//! [`scan`] reads what package managers recorded in a root (read-only, through
//! [`crate::tree`], so symlinks never lead outside it and every read is capped) and
//! returns the packages found; [`spdx::document`] writes them as SPDX 2.3 JSON. The
//! sources, one module each:
//!
//! * [`dpkg`]: Debian/Ubuntu `var/lib/dpkg/status`, the `info/*.list` files each package
//!   owns, and the machine-readable `usr/share/doc/*/copyright` licences;
//! * [`apk`]: Alpine `lib/apk/db/installed`;
//! * [`python`]: `*.dist-info/METADATA` (+ `RECORD`) and `*.egg-info` anywhere in the tree;
//! * [`npm`]: `package-lock.json` / `node_modules/.package-lock.json` and
//!   `node_modules/**/package.json`;
//! * [`cargo`]: `Cargo.lock` files;
//! * [`binary`]: ELF executables with Go build information or cargo-auditable data.
//!
//! Malformed data never aborts a scan: what cannot be read is skipped and said in
//! [`Scan::notes`]. Only a root that cannot be opened is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::tree::{self, Tree, WalkLimits};

pub mod apk;
pub mod binary;
pub mod cargo;
pub mod dpkg;
pub mod license;
pub mod npm;
pub mod python;
pub mod spdx;

/// Why a scan could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("open root {path}: {source}")]
    Root {
        path: String,
        #[source]
        source: kiln_image::root::RootError,
    },
    #[error("serialize SPDX document: {0}")]
    Json(#[from] serde_json::Error),
}

/// The package manager (or build tool) that recorded a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ecosystem {
    Deb,
    Apk,
    Python,
    Npm,
    Cargo,
    Go,
}

impl Ecosystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Python => "python",
            Ecosystem::Npm => "npm",
            Ecosystem::Cargo => "cargo",
            Ecosystem::Go => "go",
        }
    }
}

/// One package found in the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// Package URL (<https://github.com/package-url/purl-spec>).
    pub purl: String,
    /// Declared licence as an SPDX expression (`LicenseRef-` ids for names that are not
    /// on the SPDX list); `None` when the metadata declares none.
    pub license: Option<String>,
    /// Supplier as the metadata names it (maintainer or author), if any.
    pub supplier: Option<String>,
    /// Where the package was recorded (absolute paths in the root), sorted.
    pub found_in: Vec<String>,
    /// Absolute paths of the regular files the package database says it owns.
    pub files: Vec<String>,
}

/// The digests SPDX records of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub sha1: String,
    pub sha256: String,
}

/// Limits on what a scan reads.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Largest package database read (`status`, `installed`, lock files).
    pub max_db_bytes: u64,
    /// Largest small metadata file read (`METADATA`, `package.json`, `*.list`, ...).
    pub max_meta_bytes: u64,
    /// Entries and depth of the walk that finds language packages and binaries.
    pub walk: WalkLimitsOpt,
    /// Look into ELF executables for Go build info and cargo-auditable data.
    pub binaries: bool,
    /// Largest executable looked into.
    pub max_binary_bytes: u64,
    /// Hash the files packages own (SPDX requires a SHA-1 of every file it lists;
    /// without hashing, files are left out of the document).
    pub hash_files: bool,
    /// Largest file hashed.
    pub max_hash_bytes: u64,
}

/// Public form of the walk bounds.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimitsOpt {
    pub max_depth: usize,
    pub max_entries: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            max_db_bytes: 64 << 20,
            max_meta_bytes: 4 << 20,
            walk: WalkLimitsOpt {
                max_depth: 64,
                max_entries: 2_000_000,
            },
            binaries: true,
            max_binary_bytes: 1 << 30,
            hash_files: true,
            max_hash_bytes: 1 << 30,
        }
    }
}

/// The result of a scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Packages, sorted by PURL; one entry per PURL (a package recorded in several
    /// places, such as a lock file and `node_modules`, lists every place).
    pub packages: Vec<Package>,
    /// Digests of the packages' files present in the root (absolute path → digests).
    pub files: BTreeMap<String, FileDigest>,
    /// What was skipped and why (malformed records, files over a limit, unreadable
    /// directories), sorted.
    pub notes: Vec<String>,
}

/// Shared state of one scan: the root, the options and the notes collected.
pub(crate) struct Ctx<'a> {
    pub tree: &'a Tree,
    pub opts: &'a ScanOptions,
    pub notes: Vec<String>,
}

impl Ctx<'_> {
    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// Reads a file, turning every failure but absence into a note.
    pub fn read(&mut self, path: &str, limit: u64) -> Option<Vec<u8>> {
        match self.tree.read(path, limit) {
            Ok(v) => v,
            Err(e) => {
                self.note(e.to_string());
                None
            }
        }
    }
}

/// Scans the root filesystem at `root`.
pub fn scan(root: &Path, opts: &ScanOptions) -> Result<Scan, SbomError> {
    let tree = Tree::open(root).map_err(|source| SbomError::Root {
        path: root.display().to_string(),
        source,
    })?;
    let mut ctx = Ctx {
        tree: &tree,
        opts,
        notes: Vec::new(),
    };
    let distro = dpkg::OsRelease::read(&mut ctx);
    let mut packages = Vec::new();
    packages.extend(dpkg::scan(&mut ctx, &distro));
    packages.extend(apk::scan(&mut ctx, &distro));

    let walk = match tree.walk(WalkLimits {
        max_depth: opts.walk.max_depth,
        max_entries: opts.walk.max_entries,
    }) {
        Ok(w) => w,
        Err(e) => {
            ctx.note(format!("walk: {e}"));
            Default::default()
        }
    };
    ctx.notes.extend(walk.skipped.iter().cloned());
    for f in &walk.files {
        let name = f.rel.rsplit('/').next().unwrap_or(&f.rel);
        let parent = f.rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        let parent_name = parent.rsplit('/').next().unwrap_or(parent);
        if (name == "METADATA" && parent_name.ends_with(".dist-info"))
            || (name == "PKG-INFO" && parent_name.ends_with(".egg-info"))
            || (name.ends_with(".egg-info") && is_site_dir(parent_name))
        {
            packages.extend(python::read(&mut ctx, &f.rel));
        } else if name == "package-lock.json" || name == ".package-lock.json" {
            packages.extend(npm::read_lock(&mut ctx, &f.rel));
        } else if name == "package.json" && npm::is_installed_manifest(&f.rel) {
            packages.extend(npm::read_manifest(&mut ctx, &f.rel));
        } else if name == "Cargo.lock" {
            packages.extend(cargo::read_lock(&mut ctx, &f.rel));
        } else if opts.binaries && f.mode & 0o111 != 0 && f.size >= 64 {
            packages.extend(binary::read(&mut ctx, &f.rel, f.size));
        }
    }
    let mut scan = finish(packages, std::mem::take(&mut ctx.notes));
    if opts.hash_files {
        let paths: BTreeSet<&String> = scan.packages.iter().flat_map(|p| &p.files).collect();
        for path in paths {
            if let Some(d) = hash_file(&mut ctx, path) {
                scan.files.insert(path.clone(), d);
            }
        }
    }
    ctx.notes.sort();
    ctx.notes.dedup();
    scan.notes.extend(ctx.notes);
    scan.notes.sort();
    Ok(scan)
}

/// SHA-1 and SHA-256 of the regular file at `path`; `None` when it is absent (a
/// package's file removed later), not a regular file, or over the limit.
fn hash_file(ctx: &mut Ctx<'_>, path: &str) -> Option<FileDigest> {
    use sha1::Digest as _;
    use std::io::Read as _;
    let (file, rel, size) = match ctx.tree.open_file(path) {
        Ok(Some(f)) => f,
        Ok(None) | Err(tree::ReadError::NotAFile { .. }) => return None,
        Err(e) => {
            ctx.note(e.to_string());
            return None;
        }
    };
    if size > ctx.opts.max_hash_bytes {
        ctx.note(format!("/{rel}: {size} bytes: not hashed"));
        return None;
    }
    let mut s1 = sha1::Sha1::new();
    let mut s256 = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut r = file.take(ctx.opts.max_hash_bytes);
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                s1.update(&buf[..n]);
                s256.update(&buf[..n]);
            }
            Err(e) => {
                ctx.note(format!("/{rel}: {e}"));
                return None;
            }
        }
    }
    Some(FileDigest {
        sha1: hex::encode(s1.finalize()),
        sha256: hex::encode(s256.finalize()),
    })
}

/// `site-packages` or `dist-packages`.
fn is_site_dir(name: &str) -> bool {
    name == "site-packages" || name == "dist-packages"
}

/// Sorts, merges the records of one package (same PURL), sorts files and notes.
fn finish(packages: Vec<Package>, mut notes: Vec<String>) -> Scan {
    let mut by_key: BTreeMap<String, Package> = BTreeMap::new();
    for mut p in packages {
        p.files.sort();
        p.files.dedup();
        p.found_in.sort();
        let key = p.purl.clone();
        match by_key.get_mut(&key) {
            Some(have) => {
                have.files.extend(p.files);
                have.files.sort();
                have.files.dedup();
                have.found_in.extend(p.found_in);
                have.found_in.sort();
                have.found_in.dedup();
                // Records are merged in a fixed order (the walk's), so which licence
                // and supplier win is deterministic.
                if have.license.is_none() {
                    have.license = p.license;
                }
                if have.supplier.is_none() {
                    have.supplier = p.supplier;
                }
            }
            None => {
                by_key.insert(key, p);
            }
        }
    }
    notes.sort();
    notes.dedup();
    Scan {
        packages: by_key.into_values().collect(),
        files: BTreeMap::new(),
        notes,
    }
}

/// Parses RFC 822-style stanzas (dpkg status, Python metadata headers, DEP-5 copyright):
/// `Field: value` lines, continuation lines starting with a space or tab, stanzas
/// separated by blank lines. Field names keep their case; values are trimmed, and
/// continuation lines are joined with `\n`. Hand-written: the formats are a few lines
/// of grammar, and the crates that parse them (debian-control, rfc822-like) pull in far
/// more than they save.
pub(crate) fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, v)) = cur.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_string(), v.trim().to_string()));
        }
        // A line that is neither a field nor a continuation is ignored.
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The first value of `field` in a stanza (case-insensitive name).
pub(crate) fn field<'a>(stanza: &'a [(String, String)], field: &str) -> Option<&'a str> {
    stanza
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(field))
        .map(|(_, v)| v.as_str())
}

/// Parts that do not make a package URL: the PURL as far as it was built,
/// and the `packageurl` crate's reason.
#[derive(Debug, thiserror::Error)]
#[error("{purl}: {reason}")]
pub(crate) struct PurlError {
    purl: String,
    reason: packageurl::Error,
}

/// Builds a PURL string; an error (with the reason) when the parts do not make one.
pub(crate) fn purl(
    ty: &str,
    namespace: Option<&str>,
    name: &str,
    version: &str,
    qualifiers: &[(&str, &str)],
) -> Result<String, PurlError> {
    let bad = |purl: String| move |reason| PurlError { purl, reason };
    let mut p = packageurl::PackageUrl::new(ty.to_string(), name.to_string())
        .map_err(bad(format!("pkg:{ty}/{name}")))?;
    if let Some(ns) = namespace.filter(|n| !n.is_empty()) {
        p.with_namespace(ns.to_string())
            .map_err(bad(format!("pkg:{ty}/{ns}/{name}")))?;
    }
    if !version.is_empty() {
        p.with_version(version.to_string())
            .map_err(bad(format!("pkg:{ty}/{name}@{version}")))?;
    }
    for (k, v) in qualifiers {
        if !v.is_empty() {
            p.add_qualifier(k.to_string(), v.to_string())
                .map_err(bad(format!("pkg:{ty}/{name}")))?;
        }
    }
    Ok(p.to_string())
}

/// Joins `rel` (relative to the directory `base`, both below the root) lexically;
/// `None` when it climbs above the root.
pub(crate) fn join_rel(base: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = if rel.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|s| !s.is_empty()).collect()
    };
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}
