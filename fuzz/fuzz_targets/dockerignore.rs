//! Fuzz target: `.dockerignore` text and paths. The bytes before the first
//! NUL are the ignore file, the lines after it are paths to match. Parsing
//! must return `Ok` or an error, never panic; matching must not panic, and
//! must agree with itself:
//!
//! - the normalised patterns (`to_strings`) compile again to a set that
//!   decides every path the same way;
//! - where `may_have_included_children(dir)` says nothing below `dir` can be
//!   included (so a context walk skips it), every path below `dir` is
//!   indeed excluded.
#![no_main]

use kiln_dockerfile::dockerignore::{dockerignore_lines, parse_dockerignore};
use kiln_dockerfile::pattern::PatternSet;
use libfuzzer_sys::fuzz_target;

/// A relative path with only plain components, which its prefixes are the
/// parent directories of.
fn plain(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (ignore, paths) = text.split_once('\0').unwrap_or((&text, ""));
    let _ = dockerignore_lines(ignore);
    let Ok(set) = parse_dockerignore(ignore) else {
        return;
    };
    let strings = set.to_strings();
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    let again = PatternSet::new(&refs).expect("normalised patterns compile again");
    let _ = set.has_exceptions();
    for path in paths.split('\n') {
        let excluded = set.matches(path);
        assert_eq!(
            excluded,
            again.matches(path),
            "normalised patterns {strings:?} decide {path:?} differently"
        );
        let _ = set.may_have_included_children(path);
        if !plain(path) {
            continue;
        }
        for (i, _) in path.match_indices('/') {
            let dir = &path[..i];
            if !set.may_have_included_children(dir) {
                assert!(
                    excluded,
                    "{dir:?} is skipped as wholly excluded but {path:?} is included by {strings:?}"
                );
            }
        }
    }
});
