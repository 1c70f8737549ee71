//! Alpine packages: `lib/apk/db/installed`, one record per package separated by blank
//! lines, each line `K:value` (`P` name, `V` version, `A` architecture, `L` licence,
//! `m` maintainer, `F` a directory, `R` a file in the last `F`). Parsed by hand: the
//! format is one line of grammar and no maintained crate reads it.

use super::{license, purl, Ctx, Ecosystem, Package};
use crate::sbom::dpkg::OsRelease;

const DB: &str = "lib/apk/db/installed";

pub(crate) fn scan(ctx: &mut Ctx<'_>, os: &OsRelease) -> Vec<Package> {
    let Some(text) = ctx.read(DB, ctx.opts.max_db_bytes) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&text);
    let namespace = if os.id.is_empty() { "alpine" } else { &os.id };
    let distro = os.distro();
    let mut out = Vec::new();
    for record in text.split("\n\n") {
        let mut name = "";
        let mut version = "";
        let mut arch = "";
        let mut lic = "";
        let mut maint = "";
        let mut dir = String::new();
        let mut files = Vec::new();
        for line in record.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k {
                "P" => name = v,
                "V" => version = v,
                "A" => arch = v,
                "L" => lic = v,
                "m" => maint = v,
                "F" => dir = v.trim_matches('/').to_string(),
                "R" => match super::join_rel(&dir, v) {
                    Some(p) if !v.contains('/') => files.push(format!("/{p}")),
                    _ => ctx.note(format!("/{DB}: file {v:?} of {name} ignored")),
                },
                _ => {}
            }
        }
        if record.trim().is_empty() {
            continue;
        }
        if name.is_empty() || version.is_empty() {
            ctx.note(format!("/{DB}: a record without P: or V: skipped"));
            continue;
        }
        let purl = match purl(
            "apk",
            Some(namespace),
            name,
            version,
            &[("arch", arch), ("distro", &distro)],
        ) {
            Ok(p) => p,
            Err(e) => {
                ctx.note(format!("/{DB}: {e}: skipped"));
                continue;
            }
        };
        out.push(Package {
            ecosystem: Ecosystem::Apk,
            name: name.to_string(),
            version: version.to_string(),
            purl,
            license: apk_license(lic),
            supplier: (!maint.is_empty()).then(|| maint.to_string()),
            found_in: vec![format!("/{DB}")],
            files,
        });
    }
    out
}

/// apk licences are SPDX expressions, or SPDX ids separated by spaces (all of which
/// apply).
fn apk_license(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if spdx::Expression::parse(raw).is_ok() {
        return Some(raw.to_string());
    }
    license::combine_all(raw.split_whitespace().map(license::normalize))
}
