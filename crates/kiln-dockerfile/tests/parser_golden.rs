//! Golden tests for the parser: every `testdata/parser/<case>.Dockerfile`
//! parses to the AST in `<case>.json` (pretty JSON) or fails with the error
//! display in `<case>.err`. `KILN_BLESS=1` rewrites the expected files; each
//! blessed file must then be read and checked against BuildKit's behaviour.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/parser");
    let bless = std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1");
    let mut cases: Vec<_> = fs::read_dir(&dir)
        .expect("testdata/parser exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 100, "only {} golden cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let text = fs::read_to_string(case).unwrap();
        let (actual, ext, other) = match kiln_dockerfile::parse(&name, &text) {
            Ok(df) => (
                serde_json::to_string_pretty(&df).unwrap() + "\n",
                "json",
                "err",
            ),
            Err(e) => (e.to_string() + "\n", "err", "json"),
        };
        let expected_path = case.with_extension(ext);
        let other_path = case.with_extension(other);
        if bless {
            fs::write(&expected_path, &actual).unwrap();
            let _ = fs::remove_file(&other_path);
            continue;
        }
        match fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: output differs\n--- expected\n{expected}\n--- actual\n{actual}"
            )),
            Err(_) => failures.push(format!(
                "{name}: no {ext} golden (the other outcome was expected?)\n--- actual\n{actual}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
