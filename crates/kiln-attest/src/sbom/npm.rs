//! npm packages: lock files (`package-lock.json` and npm 7+'s hidden
//! `node_modules/.package-lock.json`; lockfileVersion 1's nested `dependencies` and
//! 2/3's flat `packages`) and installed manifests (`node_modules/<name>/package.json`,
//! `node_modules/@scope/<name>/package.json`, at any depth).

use serde_json::Value;

use super::{license, purl, Ctx, Ecosystem, Package};

/// Whether `rel` (a `package.json`) is an installed package's manifest.
pub(crate) fn is_installed_manifest(rel: &str) -> bool {
    let parts: Vec<&str> = rel.rsplit('/').collect();
    // parts[0] = package.json, parts[1] = name, parts[2] = node_modules or @scope.
    match parts.as_slice() {
        [_, _, nm, ..] if *nm == "node_modules" => true,
        [_, _, scope, nm, ..] if scope.starts_with('@') && *nm == "node_modules" => true,
        _ => false,
    }
}

fn parse(ctx: &mut Ctx<'_>, rel: &str, limit: u64) -> Option<Value> {
    let text = ctx.read(rel, limit)?;
    match serde_json::from_slice(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.note(format!("/{rel}: {e}: skipped"));
            None
        }
    }
}

/// `(namespace, name)` of an npm package name (`@scope/name` or `name`).
fn split_name(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((scope, n)) if scope.starts_with('@') => (Some(scope), n),
        _ => (None, name),
    }
}

/// The licence of a manifest or lock entry: `license` as a string or `{type}`, or the
/// legacy `licenses: [{type}]`.
fn license_of(v: &Value) -> Option<String> {
    let one = |l: &Value| match l {
        Value::String(s) => license::normalize(s),
        Value::Object(o) => o
            .get("type")
            .and_then(Value::as_str)
            .and_then(license::normalize),
        _ => None,
    };
    if let Some(l) = v.get("license") {
        return one(l);
    }
    match v.get("licenses") {
        Some(Value::Array(a)) => license::combine_all(a.iter().map(one)),
        _ => None,
    }
}

fn package(
    ctx: &mut Ctx<'_>,
    rel: &str,
    name: &str,
    version: &str,
    meta: &Value,
) -> Option<Package> {
    if name.is_empty() || version.is_empty() {
        return None;
    }
    let (ns, short) = split_name(name);
    let purl = match purl("npm", ns, short, version, &[]) {
        Ok(p) => p,
        Err(e) => {
            ctx.note(format!("/{rel}: {e}: skipped"));
            return None;
        }
    };
    let supplier = match meta.get("author") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Object(o)) => o.get("name").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    Some(Package {
        ecosystem: Ecosystem::Npm,
        name: name.to_string(),
        version: version.to_string(),
        purl,
        license: license_of(meta),
        supplier,
        found_in: vec![format!("/{rel}")],
        files: Vec::new(),
    })
}

/// An installed package's `package.json`.
pub(crate) fn read_manifest(ctx: &mut Ctx<'_>, rel: &str) -> Option<Package> {
    let v = parse(ctx, rel, ctx.opts.max_meta_bytes)?;
    let name = v.get("name").and_then(Value::as_str).unwrap_or("");
    let version = v.get("version").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() || version.is_empty() {
        ctx.note(format!("/{rel}: no name or version: skipped"));
        return None;
    }
    package(ctx, rel, name, version, &v)
}

/// Every package a lock file pins (linked workspace entries excluded).
pub(crate) fn read_lock(ctx: &mut Ctx<'_>, rel: &str) -> Vec<Package> {
    let Some(v) = parse(ctx, rel, ctx.opts.max_db_bytes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(Value::Object(pkgs)) = v.get("packages") {
        for (key, meta) in pkgs {
            if meta.get("link").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let name = match meta.get("name").and_then(Value::as_str) {
                Some(n) => n.to_string(),
                None => match key.rsplit_once("node_modules/") {
                    Some((_, n)) => n.to_string(),
                    // The root project ("") without a name.
                    None => continue,
                },
            };
            let version = meta.get("version").and_then(Value::as_str).unwrap_or("");
            out.extend(package(ctx, rel, &name, version, meta));
        }
    } else if let Some(deps) = v.get("dependencies") {
        lock_v1(ctx, rel, deps, &mut out);
    }
    out
}

/// lockfileVersion 1: `dependencies: {name: {version, dependencies: {...}}}`, nested
/// (serde_json's recursion limit bounds the depth).
fn lock_v1(ctx: &mut Ctx<'_>, rel: &str, deps: &Value, out: &mut Vec<Package>) {
    let Value::Object(deps) = deps else {
        return;
    };
    for (name, meta) in deps {
        let version = meta.get("version").and_then(Value::as_str).unwrap_or("");
        // `file:` and git versions are not registry versions but still what was used.
        out.extend(package(ctx, rel, name, version, meta));
        if let Some(nested) = meta.get("dependencies") {
            lock_v1(ctx, rel, nested, out);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn installed_manifests() {
        use super::is_installed_manifest as m;
        assert!(m("app/node_modules/left-pad/package.json"));
        assert!(m("app/node_modules/@types/node/package.json"));
        assert!(m("node_modules/a/node_modules/b/package.json"));
        assert!(!m("app/package.json"));
        assert!(!m("app/node_modules/a/lib/package.json"));
    }
}
