//! Finding what a COPY/ADD source names in its source root: one path or
//! the matches of a wildcard, symlinks followed inside the root.

use std::path::{Path, PathBuf};

use super::*;

/// A source entry found on disk.
pub(super) struct Source {
    /// Host path, symlinks followed inside the source root.
    pub(super) host: PathBuf,
    /// Path relative to the source root after resolution (for the filter).
    pub(super) rel: String,
    /// The name it was matched under (destination name inside a directory).
    pub(super) name: String,
    /// Path relative to the wildcard base, for `--exclude` of a match.
    pub(super) match_rel: Option<String>,
}

/// Finds the entries a source names: one path, or the matches of a
/// wildcard (sorted). Named paths must exist.
pub(super) fn resolve_sources_in(
    root: &Path,
    src_filter: Option<&PatternSet>,
    src: &str,
) -> Result<Vec<Source>, CopyError> {
    let filtered = |rel: &str| match src_filter {
        Some(f) => !rel.is_empty() && f.matches(rel),
        None => false,
    };
    let comps = clean_components(src).ok_or_else(|| CopyError::OutsideContext {
        src: src.to_string(),
    })?;
    let Some(first_wild) = comps.iter().position(|c| has_wildcards(c)) else {
        let path = comps.join("/");
        let r = resolve_in_root(root, &path, true, Escape::Reject)
            .map_err(|e| src_resolve_err(e, src))?;
        let host = r.host(root);
        let rel = r.rel_string();
        if std::fs::symlink_metadata(&host).is_err() || filtered(&rel) || filtered(&path) {
            return Err(CopyError::NotFound {
                src: src.to_string(),
            });
        }
        let name = comps.last().cloned().unwrap_or_default();
        return Ok(vec![Source {
            host,
            rel,
            name,
            match_rel: None,
        }]);
    };
    let base = comps.get(..first_wild).unwrap_or(&[]).join("/");
    let base_r =
        resolve_in_root(root, &base, true, Escape::Reject).map_err(|e| src_resolve_err(e, src))?;
    let pattern = comps.get(first_wild..).unwrap_or(&[]);
    let mut found = Vec::new();
    walk_matches(&base_r.host(root), pattern, &mut Vec::new(), &mut found);
    let mut out = Vec::new();
    for m in found {
        let written = if base.is_empty() {
            m.join("/")
        } else {
            format!("{}/{}", base_r.rel_string(), m.join("/"))
        };
        let r = resolve_in_root(root, &written, true, Escape::Reject)
            .map_err(|e| src_resolve_err(e, src))?;
        let host = r.host(root);
        let rel = r.rel_string();
        if std::fs::symlink_metadata(&host).is_err() || filtered(&written) {
            continue;
        }
        out.push(Source {
            host,
            rel,
            name: m.last().cloned().unwrap_or_default(),
            match_rel: Some(m.join("/")),
        });
    }
    Ok(out)
}

/// The context paths (relative, `/`-separated, symlinks resolved inside
/// the root) that a COPY/ADD source names, for cache keys: what
/// [`copy`] would read, after `.dockerignore`. URL sources name none.
pub fn source_paths(
    root: &Path,
    src_filter: Option<&PatternSet>,
    src: &str,
) -> Result<Vec<String>, CopyError> {
    if is_http(src) || is_git(src) {
        return Ok(Vec::new());
    }
    Ok(resolve_sources_in(root, src_filter, src)?
        .into_iter()
        .map(|s| s.rel)
        .collect())
}

/// Whether a source is a URL (ADD fetches it; its content is known only
/// after the fetch).
pub fn is_remote_source(src: &str) -> bool {
    is_http(src) || is_git(src)
}

/// Walks `dir` for entries whose path below it matches `pattern` component
/// by component; a matching directory is not descended into. Symlinked
/// directories are not descended either.
pub(super) fn walk_matches(
    dir: &Path,
    pattern: &[String],
    prefix: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    let Some((first, rest)) = pattern.split_first() else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(String, bool)> = rd
        .filter_map(|e| e.ok())
        .map(|e| {
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            (e.file_name().to_string_lossy().into_owned(), is_dir)
        })
        .collect();
    entries.sort();
    for (name, is_dir) in entries {
        let matched = if has_wildcards(first) {
            match_component(first, &name)
        } else {
            glob::unescape(first) == name
        };
        if !matched {
            continue;
        }
        prefix.push(name.clone());
        if rest.is_empty() {
            out.push(prefix.clone());
        } else if is_dir {
            walk_matches(&dir.join(&name), rest, prefix, out);
        }
        prefix.pop();
    }
}

pub(super) fn resolve_err(e: ResolveError, path: &str) -> CopyError {
    match e {
        ResolveError::Escapes => CopyError::OutsideContext {
            src: path.to_string(),
        },
        ResolveError::TooManyLinks => CopyError::TooManyLinks {
            src: path.to_string(),
        },
        ResolveError::Io(error) => CopyError::Io {
            path: path.to_string(),
            error,
        },
    }
}

pub(super) fn src_resolve_err(e: ResolveError, src: &str) -> CopyError {
    resolve_err(e, src)
}
