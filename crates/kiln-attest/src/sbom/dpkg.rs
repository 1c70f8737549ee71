//! Debian and Ubuntu packages: `var/lib/dpkg/status` (and distroless images'
//! `var/lib/dpkg/status.d/*`), the files each package owns (`var/lib/dpkg/info/*.list`),
//! and the licences of machine-readable (DEP-5) `usr/share/doc/<package>/copyright`
//! files. Also the distribution's `os-release`, which the PURLs of every OS package
//! name.

use std::collections::BTreeSet;

use super::{field, license, purl, stanzas, Ctx, Ecosystem, Package};

/// `ID` and `VERSION_ID` of `etc/os-release` (or `usr/lib/os-release`).
#[derive(Debug, Clone, Default)]
pub struct OsRelease {
    pub id: String,
    pub version_id: String,
}

impl OsRelease {
    pub(crate) fn read(ctx: &mut Ctx<'_>) -> OsRelease {
        let limit = ctx.opts.max_meta_bytes;
        let text = ctx
            .read("etc/os-release", limit)
            .or_else(|| ctx.read("usr/lib/os-release", limit));
        let mut out = OsRelease::default();
        for line in String::from_utf8_lossy(&text.unwrap_or_default()).lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
            match k.trim() {
                "ID" => out.id = v,
                "VERSION_ID" => out.version_id = v,
                _ => {}
            }
        }
        out
    }

    /// `debian-12` (the PURL `distro` qualifier), or `""` when unknown.
    pub fn distro(&self) -> String {
        match (self.id.is_empty(), self.version_id.is_empty()) {
            (true, _) => String::new(),
            (false, true) => self.id.clone(),
            (false, false) => format!("{}-{}", self.id, self.version_id),
        }
    }
}

/// Package states in which a package's files are on disk (`not-installed` and
/// `config-files` leave none but configuration).
fn has_files(status: &str) -> bool {
    let state = status.split_whitespace().nth(2).unwrap_or("");
    !matches!(state, "not-installed" | "config-files" | "")
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, os: &OsRelease) -> Vec<Package> {
    let mut out = Vec::new();
    let db_limit = ctx.opts.max_db_bytes;
    let mut dbs: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(text) = ctx.read("var/lib/dpkg/status", db_limit) {
        dbs.push(("var/lib/dpkg/status".into(), text));
    }
    let names = match ctx.tree.names("var/lib/dpkg/status.d") {
        Ok(n) => n,
        Err(e) => {
            ctx.note(e.to_string());
            Vec::new()
        }
    };
    for n in names {
        // distroless also keeps `<pkg>.md5sums` files here.
        if n.contains('.') {
            continue;
        }
        let path = format!("var/lib/dpkg/status.d/{n}");
        if let Some(text) = ctx.read(&path, ctx.opts.max_meta_bytes) {
            dbs.push((path, text));
        }
    }
    let namespace = if os.id.is_empty() {
        "debian".to_string()
    } else {
        os.id.clone()
    };
    let distro = os.distro();
    for (db, text) in dbs {
        let text = String::from_utf8_lossy(&text);
        for stanza in stanzas(&text) {
            let Some(name) = field(&stanza, "Package") else {
                ctx.note(format!("/{db}: a stanza without Package: skipped"));
                continue;
            };
            // Status is absent in distroless status.d files: those list installed ones.
            if let Some(status) = field(&stanza, "Status") {
                if !has_files(status) {
                    continue;
                }
            }
            let Some(version) = field(&stanza, "Version") else {
                ctx.note(format!("/{db}: {name} has no Version: skipped"));
                continue;
            };
            let arch = field(&stanza, "Architecture").unwrap_or("");
            let purl = match purl(
                "deb",
                Some(&namespace),
                name,
                version,
                &[("arch", arch), ("distro", &distro)],
            ) {
                Ok(p) => p,
                Err(e) => {
                    ctx.note(format!("/{db}: {e}: skipped"));
                    continue;
                }
            };
            let files = owned_files(ctx, name, arch);
            let license = copyright_license(ctx, name);
            out.push(Package {
                ecosystem: Ecosystem::Deb,
                name: name.to_string(),
                version: version.to_string(),
                purl,
                license,
                supplier: field(&stanza, "Maintainer").map(str::to_string),
                found_in: vec![format!("/{db}")],
                files,
            });
        }
    }
    out
}

/// The regular files of `info/<name>[:<arch>].list`: the list also names every
/// directory the package has entries in, and a directory is an entry that another
/// entry lies below.
fn owned_files(ctx: &mut Ctx<'_>, name: &str, arch: &str) -> Vec<String> {
    let limit = ctx.opts.max_meta_bytes;
    let text = ctx
        .read(&format!("var/lib/dpkg/info/{name}:{arch}.list"), limit)
        .or_else(|| ctx.read(&format!("var/lib/dpkg/info/{name}.list"), limit));
    let Some(text) = text else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&text);
    let entries: BTreeSet<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('/'))
        .filter(|l| l.starts_with('/') && *l != "/." && l.len() > 1)
        .collect();
    let sorted: Vec<&str> = entries.into_iter().collect();
    let mut out = Vec::new();
    for (i, e) in sorted.iter().enumerate() {
        let is_dir = sorted.get(i + 1).is_some_and(|next| {
            next.len() > e.len() && next.starts_with(e) && next.as_bytes()[e.len()] == b'/'
        });
        if !is_dir {
            out.push((*e).to_string());
        }
    }
    out
}

/// The licences of `usr/share/doc/<name>/copyright` when it is machine-readable
/// (DEP-5: a `Format:` header naming the copyright-format spec), each `License:` field's
/// first line, combined with AND (the package holds files under each of them).
fn copyright_license(ctx: &mut Ctx<'_>, name: &str) -> Option<String> {
    let text = ctx.read(
        &format!("usr/share/doc/{name}/copyright"),
        ctx.opts.max_meta_bytes,
    )?;
    let text = String::from_utf8_lossy(&text);
    let paragraphs = stanzas(&text);
    let header = paragraphs.first()?;
    if !field(header, "Format").is_some_and(|f| f.contains("copyright-format")) {
        return None;
    }
    let mut names: Vec<String> = Vec::new();
    for p in &paragraphs {
        // A stand-alone License paragraph only carries the text of a licence that a
        // Files paragraph names.
        if field(p, "Files").is_none() {
            continue;
        }
        if let Some(l) = field(p, "License") {
            let first = l.lines().next().unwrap_or("").trim();
            if !first.is_empty() {
                names.push(first.to_string());
            }
        }
    }
    license::combine_all(names.iter().map(|n| license::from_debian(n)))
}
