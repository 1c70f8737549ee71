//! `.dockerignore`: parsing the file into a [`PatternSet`] and finding which
//! file applies to a build.
//!
//! Docker's rules for the file:
//!
//! - A UTF-8 byte-order mark at the start is ignored.
//! - A line whose very first character is `#` is a comment. Only then: a
//!   line `  # x` (indented) is the pattern `# x`, as in Docker.
//! - Lines are trimmed of surrounding whitespace; blank lines are skipped.
//! - A leading `!` makes an exception (whitespace after it is trimmed too).
//! - The pattern is cleaned (`a/./b/../c` is `a/c`) and a leading `/` is
//!   removed, so `/foo`, `./foo` and `foo` mean the same.
//!
//! The Dockerfile and the `.dockerignore` file may be excluded by the
//! patterns; that only keeps them out of the context that COPY/ADD see.
//! The builder still reads both (from the Dockerfile's own location and the
//! path [`dockerignore_path_for`] found): that is the caller's job.

use std::path::{Path, PathBuf};

use crate::pattern::{PatternError, PatternSet};

/// Parses the text of a `.dockerignore` file. Errors name the line.
pub fn parse_dockerignore(text: &str) -> Result<PatternSet, PatternError> {
    let mut set = PatternSet::default();
    for (number, pattern) in dockerignore_lines(text) {
        set.push(&pattern, Some(number))?;
    }
    Ok(set)
}

/// The normalised patterns of a `.dockerignore` file with their 1-based
/// line numbers, exceptions keeping their `!`, before compilation.
pub fn dockerignore_lines(text: &str) -> Vec<(usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (invert, body) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let mut pattern = String::new();
        if !body.is_empty() {
            pattern = crate::pattern::clean_path(body);
            if pattern.len() > 1 {
                if let Some(rest) = pattern.strip_prefix('/') {
                    pattern = rest.to_string();
                }
            }
        }
        if invert {
            pattern.insert(0, '!');
        }
        out.push((index + 1, pattern));
    }
    out
}

/// Where to look for the ignore file, in order; the first that exists
/// applies and the others are ignored. First `<name>.dockerignore` beside
/// the Dockerfile (`build/app.Dockerfile` → `build/app.Dockerfile.dockerignore`),
/// then `.dockerignore` at the context root.
pub fn dockerignore_path_for(dockerfile: &Path, context: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::with_capacity(2);
    if let Some(name) = dockerfile.file_name() {
        let mut file = name.to_os_string();
        file.push(".dockerignore");
        paths.push(dockerfile.with_file_name(file));
    }
    let root = context.join(".dockerignore");
    if !paths.contains(&root) {
        paths.push(root);
    }
    paths
}
