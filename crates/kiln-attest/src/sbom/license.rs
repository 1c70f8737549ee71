//! Licence names as package metadata writes them → SPDX licence expressions.
//!
//! Identifiers and expressions are parsed and canonicalised by the `spdx` crate (the
//! SPDX licence list, `GPL-2.0+`-style suffixes, imprecise names such as
//! `Apache 2`). What it does not know becomes a `LicenseRef-<name>` (the SPDX form for a
//! licence off the list); the document declares each such reference in
//! `hasExtractedLicensingInfos`. Debian's DEP-5 short names (`GPL-2+`, `Expat`,
//! `BSD-3-clause`, lower-case `or`/`and`) are mapped by hand below: no crate carries
//! that table.

use std::collections::BTreeSet;

use spdx::Expression;

/// The longest licence "name" taken as a name: longer values are licence texts.
const MAX_NAME: usize = 200;

/// An SPDX expression for a licence name or expression written by package metadata;
/// `None` for an empty or `UNKNOWN` value.
pub fn normalize(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty()
        || raw.len() > MAX_NAME
        || raw.contains('\n')
        || matches!(
            raw.to_ascii_uppercase().as_str(),
            "UNKNOWN" | "NONE" | "NOASSERTION" | "UNLICENSED" | "SEE LICENSE"
        )
    {
        return None;
    }
    if Expression::parse(raw).is_ok() {
        return Some(raw.to_string());
    }
    if let Ok(Some(canon)) = Expression::canonicalize(raw) {
        if Expression::parse(&canon).is_ok() {
            return Some(canon);
        }
    }
    Some(license_ref(raw))
}

/// `LicenseRef-` followed by `raw` with every character SPDX ids do not allow turned
/// into `-`.
pub fn license_ref(raw: &str) -> String {
    let mut id: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while id.contains("--") {
        id = id.replace("--", "-");
    }
    let id = id.trim_matches('-');
    if id.is_empty() {
        "LicenseRef-unnamed".to_string()
    } else {
        format!("LicenseRef-{id}")
    }
}

/// A DEP-5 `License:` short name or expression (`GPL-2+ or Artistic`) as SPDX.
pub fn from_debian(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_NAME {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    let mut atom: Vec<&str> = Vec::new();
    for word in raw.split_whitespace() {
        let w = word.trim_end_matches(',');
        let op = match w.to_ascii_lowercase().as_str() {
            "or" => Some("OR"),
            "and" => Some("AND"),
            _ => None,
        };
        match op {
            Some(op) if !atom.is_empty() => {
                parts.push(debian_atom(&atom.join(" ")));
                parts.push(op.to_string());
                atom.clear();
            }
            _ => atom.push(w),
        }
    }
    if !atom.is_empty() {
        parts.push(debian_atom(&atom.join(" ")));
    }
    let expr = parts.join(" ");
    if Expression::parse(&expr).is_ok() {
        Some(expr)
    } else {
        Some(license_ref(raw))
    }
}

/// One DEP-5 licence name (no operators).
fn debian_atom(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.contains(" with ") {
        // Exceptions in DEP-5 are free text ("with OpenSSL exception").
        return license_ref(name);
    }
    let fixed = match lower.as_str() {
        "expat" => Some("MIT".to_string()),
        "artistic" | "artistic-1" | "artistic-1.0" => Some("Artistic-1.0-Perl".to_string()),
        "public-domain" | "public domain" => None,
        _ => None,
    };
    if let Some(f) = fixed {
        return f;
    }
    // GNU families: GPL-2, GPL-2+, LGPL-2.1+, AGPL-3, GFDL-1.3+.
    for family in ["AGPL", "LGPL", "GPL", "GFDL"] {
        if let Some(rest) = name.strip_prefix(family).and_then(|r| r.strip_prefix('-')) {
            let (ver, later) = match rest.strip_suffix('+') {
                Some(v) => (v, true),
                None => (rest, false),
            };
            if !ver.is_empty() && ver.chars().all(|c| c.is_ascii_digit() || c == '.') {
                let ver = if ver.contains('.') {
                    ver.to_string()
                } else {
                    format!("{ver}.0")
                };
                let id = format!("{family}-{ver}-{}", if later { "or-later" } else { "only" });
                if spdx::license_id(&id).is_some() {
                    return id;
                }
            }
        }
    }
    // BSD-3-clause → BSD-3-Clause and other case differences.
    let recased = name.replace("-clause", "-Clause");
    if spdx::license_id(&recased).is_some() {
        return recased;
    }
    match normalize(name) {
        Some(n) if !n.contains(' ') => n,
        _ => license_ref(name),
    }
}

/// Combines licence expressions with AND (each distinct one once, sorted, compound
/// ones in parentheses); `None` when there are none.
pub fn combine_all(exprs: impl IntoIterator<Item = Option<String>>) -> Option<String> {
    let set: BTreeSet<String> = exprs.into_iter().flatten().collect();
    match set.len() {
        0 => None,
        1 => set.into_iter().next(),
        _ => Some(
            set.into_iter()
                .map(|e| if e.contains(' ') { format!("({e})") } else { e })
                .collect::<Vec<_>>()
                .join(" AND "),
        ),
    }
}

/// The `LicenseRef-` ids an expression uses.
pub fn license_refs(expr: &str) -> Vec<String> {
    expr.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|t| t.starts_with("LicenseRef-"))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_names() {
        assert_eq!(from_debian("GPL-2+").as_deref(), Some("GPL-2.0-or-later"));
        assert_eq!(from_debian("LGPL-2.1").as_deref(), Some("LGPL-2.1-only"));
        assert_eq!(from_debian("Expat").as_deref(), Some("MIT"));
        assert_eq!(from_debian("BSD-3-clause").as_deref(), Some("BSD-3-Clause"));
        assert_eq!(
            from_debian("GPL-1+ or Artistic").as_deref(),
            Some("GPL-1.0-or-later OR Artistic-1.0-Perl")
        );
        assert_eq!(
            from_debian("public-domain").as_deref(),
            Some("LicenseRef-public-domain")
        );
        assert_eq!(
            from_debian("GPL-2+ with OpenSSL exception").as_deref(),
            Some("LicenseRef-GPL-2-with-OpenSSL-exception")
        );
    }

    #[test]
    fn generic_names() {
        assert_eq!(normalize("MIT").as_deref(), Some("MIT"));
        assert_eq!(
            normalize("MIT OR Apache-2.0").as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(
            normalize("MIT/Apache-2.0").as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(normalize("UNKNOWN"), None);
        assert_eq!(
            normalize("My (odd) licence").as_deref(),
            Some("LicenseRef-My-odd-licence")
        );
        assert_eq!(normalize(&"x".repeat(500)), None);
    }

    #[test]
    fn combines_and_lists_refs() {
        let c = combine_all([
            Some("MIT".into()),
            Some("GPL-2.0-only OR MIT".into()),
            None,
            Some("MIT".into()),
            Some("LicenseRef-x".into()),
        ]);
        assert_eq!(
            c.as_deref(),
            Some("(GPL-2.0-only OR MIT) AND LicenseRef-x AND MIT")
        );
        assert_eq!(
            license_refs(c.as_deref().unwrap_or("")),
            vec!["LicenseRef-x"]
        );
    }
}
