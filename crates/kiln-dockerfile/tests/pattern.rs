//! Path pattern tables (`testdata/dockerignore/patterns/*.txt`, format in
//! the header of `01-docs-examples.txt`) and direct API checks.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use kiln_dockerfile::pattern::{clean_path, PatternSet};

struct Section {
    start_line: usize,
    patterns: Vec<String>,
    checks: Vec<(usize, String, String)>,
}

fn sections(text: &str) -> Vec<Section> {
    let mut out = vec![Section {
        start_line: 1,
        patterns: Vec::new(),
        checks: Vec::new(),
    }];
    for (n, line) in text.lines().enumerate() {
        let number = n + 1;
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line == "===" {
            out.push(Section {
                start_line: number + 1,
                patterns: Vec::new(),
                checks: Vec::new(),
            });
            continue;
        }
        let (kind, arg) = line.split_once(' ').unwrap_or((line, ""));
        let section = out.last_mut().expect("a section");
        match kind {
            "p" => section.patterns.push(arg.to_string()),
            "x" | "i" | "skip" | "walk" | "err" | "msg" => {
                section
                    .checks
                    .push((number, kind.to_string(), arg.to_string()))
            }
            other => panic!("line {number}: unknown directive {other:?}"),
        }
    }
    out
}

fn run_file(path: &Path) -> (usize, Vec<String>) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let text = std::fs::read_to_string(path).unwrap();
    let mut failures = Vec::new();
    let mut count = 0;
    for section in sections(&text) {
        let refs: Vec<&str> = section.patterns.iter().map(String::as_str).collect();
        let mut pending_err: Option<(usize, String)> = None;
        let set = match PatternSet::new(&refs) {
            Ok(set) => Some(set),
            Err(e) => {
                if !section.checks.iter().any(|(_, k, _)| k == "err") {
                    failures.push(format!(
                        "{name}:{}: patterns rejected: {e}",
                        section.start_line
                    ));
                }
                None
            }
        };
        for (line, kind, arg) in &section.checks {
            let at = format!("{name}:{line}");
            count += 1;
            match kind.as_str() {
                "err" => pending_err = Some((*line, arg.clone())),
                "msg" => {
                    let (_, pattern) = pending_err.take().expect("msg after err");
                    match PatternSet::new(&[pattern.as_str()]) {
                        Ok(_) => failures.push(format!("{at}: {pattern:?} accepted")),
                        Err(e) => {
                            if e.message != *arg || e.pattern != pattern || e.line.is_some() {
                                failures.push(format!("{at}: {pattern:?}: got {e:?}"));
                            }
                        }
                    }
                }
                _ => {
                    let Some(set) = &set else { continue };
                    let (got, want) = match kind.as_str() {
                        "x" => (set.matches(arg), true),
                        "i" => (set.matches(arg), false),
                        "skip" => (set.may_have_included_children(arg), false),
                        "walk" => (set.may_have_included_children(arg), true),
                        _ => unreachable!(),
                    };
                    if got != want {
                        failures.push(format!(
                            "{at}: {kind} {arg:?} with {:?}: got {got}",
                            section.patterns
                        ));
                    }
                }
            }
        }
    }
    (count, failures)
}

#[test]
fn pattern_tables() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dockerignore/patterns");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "tables missing: {files:?}");
    let mut total = 0;
    let mut failures = Vec::new();
    for file in &files {
        let (count, mut f) = run_file(file);
        assert!(count >= 10, "{} has only {count} checks", file.display());
        total += count;
        failures.append(&mut f);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(total >= 200, "only {total} checks");
}

#[test]
fn clean_path_matches_go_path_clean() {
    let cases = [
        ("", "."),
        (".", "."),
        ("./", "."),
        ("a", "a"),
        ("a/", "a"),
        ("a//b", "a/b"),
        ("a/./b", "a/b"),
        ("a/b/..", "a"),
        ("a/b/../..", "."),
        ("a/b/../../..", ".."),
        ("../a", "../a"),
        ("../../a/../b", "../../b"),
        ("/", "/"),
        ("//", "/"),
        ("/..", "/"),
        ("/../a", "/a"),
        ("/a/b/", "/a/b"),
        ("abc/def/../../ghi", "ghi"),
    ];
    for (input, want) in cases {
        assert_eq!(clean_path(input), want, "clean({input:?})");
    }
}

#[test]
fn patterns_are_listed_normalised() {
    let set = PatternSet::new(&["/a/b/", "!./c", "  d/../e  ", "", "**/*.go"]).unwrap();
    assert_eq!(set.to_strings(), ["a/b", "!c", "e", "**/*.go"]);
    assert!(set.has_exceptions());
    let plain: Vec<bool> = set.patterns().iter().map(|p| p.is_exception()).collect();
    assert_eq!(plain, [false, true, false, false]);
    assert_eq!(set.patterns()[1].as_str(), "c");
}

#[test]
fn empty_set_excludes_nothing() {
    let set = PatternSet::new(&[]).unwrap();
    assert!(set.is_empty());
    assert!(!set.has_exceptions());
    assert!(!set.matches("anything"));
    assert!(set.may_have_included_children("anything"));
}

#[test]
fn error_display() {
    let err = PatternSet::new(&["ok", "bad["]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid pattern "bad[": syntax error in pattern"#
    );
}

#[test]
fn long_paths_and_many_stars_stay_fast() {
    let set = PatternSet::new(&["**/a*a*a*a*a*a*a*a*b", "!**/x/**/y/**/z"]).unwrap();
    let long = "a".repeat(5000);
    let start = std::time::Instant::now();
    assert!(!set.matches(&long));
    let deep = vec!["d"; 500].join("/");
    assert!(!set.matches(&deep));
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}
