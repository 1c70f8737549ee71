//! Rust crates pinned by a `Cargo.lock` (parsed with the `toml` crate). The lock file
//! names no licences; those stay unknown.

use serde::Deserialize;

use super::{purl, Ctx, Ecosystem, Package};

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
}

pub(crate) fn read_lock(ctx: &mut Ctx<'_>, rel: &str) -> Vec<Package> {
    let Some(bytes) = ctx.read(rel, ctx.opts.max_db_bytes) else {
        return Vec::new();
    };
    let lock: Lock = match std::str::from_utf8(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|t| toml::from_str(t).map_err(|e| e.to_string()))
    {
        Ok(l) => l,
        Err(e) => {
            ctx.note(format!("/{rel}: {}: skipped", e.trim_end()));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for p in lock.package {
        match purl("cargo", None, &p.name, &p.version, &[]) {
            Ok(purl) => out.push(Package {
                ecosystem: Ecosystem::Cargo,
                name: p.name,
                version: p.version,
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
