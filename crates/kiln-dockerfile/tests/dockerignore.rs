//! `.dockerignore` parsing against the files in
//! `testdata/dockerignore/files`: each `NAME.dockerignore` with a
//! `NAME.expect` lists the normalised patterns (`line N: PATTERN`) and
//! paths that must be excluded (`x PATH`) or included (`i PATH`), and
//! directories a walker may skip (`skip DIR`) or must enter (`walk DIR`).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use kiln_dockerfile::dockerignore::{
    dockerignore_lines, dockerignore_path_for, parse_dockerignore,
};

fn files_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dockerignore/files")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(files_dir().join(name)).unwrap()
}

#[test]
fn expected_files() {
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(files_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".expect"))
        .collect();
    names.sort();
    assert!(names.len() >= 3, "expect files missing: {names:?}");
    for expect_name in names {
        let stem = expect_name.trim_end_matches(".expect");
        let text = read(&format!("{stem}.dockerignore"));
        let set = parse_dockerignore(&text).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let expect = read(&expect_name);
        let mut want_lines = Vec::new();
        for (n, line) in expect.lines().enumerate() {
            let at = format!("{expect_name}:{}", n + 1);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("line ") {
                let (number, pattern) = rest.split_once(": ").expect("line N: PATTERN");
                want_lines.push((number.parse::<usize>().unwrap(), pattern.to_string()));
                continue;
            }
            let (kind, path) = line.split_once(' ').expect("KIND PATH");
            checked += 1;
            let (got, want) = match kind {
                "x" => (set.matches(path), true),
                "i" => (set.matches(path), false),
                "skip" => (set.may_have_included_children(path), false),
                "walk" => (set.may_have_included_children(path), true),
                other => panic!("{at}: unknown {other}"),
            };
            if got != want {
                failures.push(format!("{at}: {kind} {path:?}: got {got}"));
            }
        }
        let got_lines = dockerignore_lines(&text);
        if got_lines != want_lines {
            failures.push(format!(
                "{stem}: patterns {got_lines:?}, want {want_lines:?}"
            ));
        }
        let strings: Vec<String> = want_lines.into_iter().map(|(_, p)| p).collect();
        if set.to_strings() != strings {
            failures.push(format!("{stem}: set lists {:?}", set.to_strings()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 40, "only {checked} path checks");
}

#[test]
fn errors_name_the_line() {
    let err = parse_dockerignore(&read("bad-class.dockerignore")).unwrap_err();
    assert_eq!(err.line, Some(3));
    assert_eq!(err.pattern, "[abc");
    assert_eq!(err.message, "syntax error in pattern");
    assert_eq!(
        err.to_string(),
        r#"line 3: invalid pattern "[abc": syntax error in pattern"#
    );

    let err = parse_dockerignore(&read("bad-bang.dockerignore")).unwrap_err();
    assert_eq!(err.line, Some(2));
    assert_eq!(err.message, r#"illegal exclusion pattern: "!""#);
}

#[test]
fn empty_and_comment_only_files_exclude_nothing() {
    for name in ["empty.dockerignore", "comments-only.dockerignore"] {
        let set = parse_dockerignore(&read(name)).unwrap();
        assert!(set.is_empty(), "{name}");
        assert!(!set.matches("Dockerfile"));
    }
}

#[test]
fn bom_only_stripped_at_the_start() {
    let set = parse_dockerignore("\u{feff}a\n\u{feff}b\n").unwrap();
    assert_eq!(set.to_strings(), ["a", "\u{feff}b"]);
}

#[test]
fn lookup_order() {
    let paths = dockerignore_path_for(Path::new("/src/build/app.Dockerfile"), Path::new("/src"));
    assert_eq!(
        paths,
        [
            PathBuf::from("/src/build/app.Dockerfile.dockerignore"),
            PathBuf::from("/src/.dockerignore"),
        ]
    );
    let paths = dockerignore_path_for(Path::new("ctx/Dockerfile"), Path::new("ctx"));
    assert_eq!(
        paths,
        [
            PathBuf::from("ctx/Dockerfile.dockerignore"),
            PathBuf::from("ctx/.dockerignore")
        ]
    );
    // A Dockerfile named `.` has no name: only the context's file applies.
    let paths = dockerignore_path_for(Path::new("/"), Path::new("/ctx"));
    assert_eq!(paths, [PathBuf::from("/ctx/.dockerignore")]);
}
