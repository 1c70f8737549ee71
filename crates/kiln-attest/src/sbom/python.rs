//! Python distributions: `<name>-<version>.dist-info/METADATA` with its `RECORD` (wheels,
//! pip), and `*.egg-info` (a `PKG-INFO` in a directory with `installed-files.txt`, or a
//! single file as distutils wrote it). Found anywhere in the tree, so system
//! `dist-packages`, `/usr/local` and `/opt` installs and virtual environments are all
//! covered. The metadata headers are RFC 822 style ([`super::stanzas`]); `RECORD` is
//! CSV whose first column is the only one used, parsed by hand (quoted paths included)
//! rather than with a CSV crate for one column.

use super::{field, join_rel, license, purl, stanzas, Ctx, Ecosystem, Package};

/// `rel`: a `METADATA` or `PKG-INFO` file, or a `*.egg-info` file.
pub(crate) fn read(ctx: &mut Ctx<'_>, rel: &str) -> Option<Package> {
    let text = ctx.read(rel, ctx.opts.max_meta_bytes)?;
    let text = String::from_utf8_lossy(&text);
    // The headers end at the first blank line; the description follows.
    let headers = stanzas(&text).into_iter().next().unwrap_or_default();
    let (Some(name), Some(version)) = (field(&headers, "Name"), field(&headers, "Version")) else {
        ctx.note(format!("/{rel}: no Name or Version: skipped"));
        return None;
    };
    let purl = match purl("pypi", None, name, version, &[]) {
        Ok(p) => p,
        Err(e) => {
            ctx.note(format!("/{rel}: {e}: skipped"));
            return None;
        }
    };
    let license = field(&headers, "License-Expression")
        .and_then(license::normalize)
        .or_else(|| field(&headers, "License").and_then(license::normalize))
        .or_else(|| {
            license::combine_all(
                headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("Classifier"))
                    .filter_map(|(_, v)| v.strip_prefix("License ::"))
                    .map(|v| v.rsplit("::").next().unwrap_or(v).trim())
                    .map(license::normalize),
            )
        });
    let supplier = field(&headers, "Maintainer")
        .or_else(|| field(&headers, "Author"))
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let files = files(ctx, rel);
    Some(Package {
        ecosystem: Ecosystem::Python,
        name: name.to_string(),
        version: version.to_string(),
        purl,
        license,
        supplier,
        found_in: vec![format!("/{rel}")],
        files,
    })
}

/// The files the installer recorded: `RECORD` next to `METADATA` (paths relative to the
/// directory holding the `.dist-info`), or `installed-files.txt` next to `PKG-INFO`
/// (relative to the `.egg-info`).
fn files(ctx: &mut Ctx<'_>, rel: &str) -> Vec<String> {
    let Some((meta_dir, file)) = rel.rsplit_once('/') else {
        return Vec::new();
    };
    let (list, base) = match file {
        "METADATA" => (
            format!("{meta_dir}/RECORD"),
            meta_dir.rsplit_once('/').map(|(p, _)| p).unwrap_or(""),
        ),
        "PKG-INFO" => (format!("{meta_dir}/installed-files.txt"), meta_dir),
        _ => return Vec::new(),
    };
    let Some(text) = ctx.read(&list, ctx.opts.max_meta_bytes) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&text);
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(path) = first_csv_field(line) else {
            continue;
        };
        match join_rel(base, &path) {
            Some(p) if !p.is_empty() => out.push(format!("/{p}")),
            _ => ctx.note(format!("/{list}: {path:?} leads outside the root: ignored")),
        }
    }
    out
}

/// The first field of a CSV line (RFC 4180 quoting).
fn first_csv_field(line: &str) -> Option<String> {
    let line = line.trim_end_matches('\r');
    if line.is_empty() {
        return None;
    }
    if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    out.push('"');
                    chars.next();
                } else {
                    return Some(out);
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        Some(line.split(',').next().unwrap_or(line).to_string())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_first_field() {
        use super::first_csv_field as f;
        assert_eq!(f("six.py,sha256=x,123").as_deref(), Some("six.py"));
        assert_eq!(f("\"a,\"\"b\"\".py\",,").as_deref(), Some("a,\"b\".py"));
        assert_eq!(f("\"unterminated"), None);
        assert_eq!(f(""), None);
    }
}
