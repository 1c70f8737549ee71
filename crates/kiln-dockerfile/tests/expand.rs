//! Golden tables for word expansion (`testdata/expand/*.txt`) plus the API
//! around it.
//!
//! Table format, one item per line (blank lines and `#` comments ignored):
//!
//! - `@env NAME ⟦value⟧` sets a variable, `@unset NAME` removes it; both
//!   hold until the end of the file.
//! - `@escape X` sets the escape character (`\` at the start of a file).
//! - `@mode word|words|heredoc` picks [`expand_word`], [`expand_words`] or
//!   [`expand_heredoc`] (`word` at the start).
//! - `⟦input⟧ = ⟦expected⟧` (in `words` mode any number of `⟦word⟧`,
//!   possibly none), optionally followed by `uses NAME…` (or `uses ∅` for
//!   none) to check [`Expanded::used`].
//! - `⟦input⟧ ! OFFSET ⟦message⟧` expects an error.
//!
//! Inside `⟦…⟧` text is verbatim, except `⏎` stands for a newline and `⇥`
//! for a tab.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use kiln_dockerfile::expand::{
    expand_heredoc, expand_heredoc_used, expand_word, expand_words, expand_words_used, expands,
    expands_arguments, flag_expansion, from_variable_error, ExpandError, FlagExpansion, Vars,
    VarsFn,
};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Word,
    Words,
    Heredoc,
}

/// Splits `⟦a⟧ ⟦b⟧ rest` into the bracketed texts and what follows them.
fn take_bracketed(mut s: &str) -> Result<(Vec<String>, &str), String> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        let Some(rest) = s.strip_prefix('⟦') else {
            return Ok((out, s));
        };
        let end = rest.find('⟧').ok_or("unclosed ⟦")?;
        out.push(rest[..end].replace('⏎', "\n").replace('⇥', "\t"));
        s = &rest[end + '⟧'.len_utf8()..];
    }
}

fn run_file(path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).expect("read table");
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut escape = '\\';
    let mut mode = Mode::Word;
    let mut failures = Vec::new();
    let mut cases = 0;
    for (n, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", n + 1);
        let line = line.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("@env ") {
            let (key, value) = rest.split_once(' ').expect("@env NAME ⟦value⟧");
            let (values, tail) = take_bracketed(value).unwrap();
            assert!(values.len() == 1 && tail.is_empty(), "{at}: bad @env");
            env.insert(key.to_string(), values[0].clone());
            continue;
        }
        if let Some(rest) = line.strip_prefix("@unset ") {
            env.remove(rest.trim());
            continue;
        }
        if let Some(rest) = line.strip_prefix("@escape ") {
            let mut chars = rest.trim().chars();
            escape = chars.next().expect("escape char");
            continue;
        }
        if let Some(rest) = line.strip_prefix("@mode ") {
            mode = match rest.trim() {
                "word" => Mode::Word,
                "words" => Mode::Words,
                "heredoc" => Mode::Heredoc,
                other => panic!("{at}: unknown mode {other}"),
            };
            continue;
        }
        let (inputs, rest) = take_bracketed(line).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(inputs.len(), 1, "{at}: one input expected");
        let input = &inputs[0];
        cases += 1;
        let rest = rest.trim_start();
        if let Some(rest) = rest.strip_prefix('!') {
            let rest = rest.trim_start();
            let (offset, rest) = rest.split_once(' ').expect("offset");
            let offset: usize = offset.parse().expect("numeric offset");
            let (messages, tail) = take_bracketed(rest).unwrap();
            assert!(
                messages.len() == 1 && tail.is_empty(),
                "{at}: bad error line"
            );
            let result: Result<String, ExpandError> = match mode {
                Mode::Word => expand_word(input, &env, escape).map(|e| e.value),
                Mode::Words => expand_words(input, &env, escape).map(|w| format!("{w:?}")),
                Mode::Heredoc => expand_heredoc(input, &env, escape),
            };
            match result {
                Ok(v) => failures.push(format!("{at}: {input:?}: expected error, got {v:?}")),
                Err(e) => {
                    if e.message != messages[0] || e.offset != offset || e.word != *input {
                        failures.push(format!(
                            "{at}: {input:?}: expected error @{offset} {:?}, got @{} {:?}",
                            messages[0], e.offset, e.message
                        ));
                    }
                }
            }
            continue;
        }
        let rest = rest
            .strip_prefix('=')
            .unwrap_or_else(|| panic!("{at}: expected '=' or '!'"));
        let (expected, tail) = take_bracketed(rest).unwrap();
        let tail = tail.trim();
        let want_used: Option<BTreeSet<String>> = if tail.is_empty() {
            None
        } else {
            let names = tail
                .strip_prefix("uses")
                .unwrap_or_else(|| panic!("{at}: trailing {tail:?}"));
            Some(
                names
                    .split_whitespace()
                    .filter(|n| *n != "∅")
                    .map(str::to_string)
                    .collect(),
            )
        };
        let got: Result<(Vec<String>, BTreeSet<String>), ExpandError> = match mode {
            Mode::Word => expand_word(input, &env, escape).map(|e| (vec![e.value], e.used)),
            Mode::Words => expand_words_used(input, &env, escape),
            Mode::Heredoc => {
                expand_heredoc_used(input, &env, escape).map(|e| (vec![e.value], e.used))
            }
        };
        if mode != Mode::Words {
            assert_eq!(expected.len(), 1, "{at}: one expected value");
        }
        match got {
            Err(e) => failures.push(format!("{at}: {input:?}: unexpected error {e}")),
            Ok((values, used)) => {
                if values != expected {
                    failures.push(format!(
                        "{at}: {input:?}: expected {expected:?}, got {values:?}"
                    ));
                }
                if let Some(want) = want_used {
                    if used != want {
                        failures.push(format!(
                            "{at}: {input:?}: expected uses {want:?}, got {used:?}"
                        ));
                    }
                }
            }
        }
        // The single-word and split forms must agree on errors.
        if mode == Mode::Word {
            let words = expand_words(input, &env, escape);
            if let Err(e) = words {
                failures.push(format!("{at}: {input:?}: words form failed: {e}"));
            }
        }
    }
    (cases, failures)
}

#[test]
fn golden_tables() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/expand");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata/expand")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the expansion tables, found {files:?}"
    );
    let mut total = 0;
    let mut failures = Vec::new();
    for file in &files {
        let (cases, mut f) = run_file(file);
        assert!(cases >= 10, "{} has only {cases} cases", file.display());
        total += cases;
        failures.append(&mut f);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(total >= 250, "only {total} cases");
}

#[test]
fn error_display_names_word_and_message() {
    let err = expand_word("x${N:?set it}", &(), '\\').unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"failed to process "x${N:?set it}": N: set it"#
    );
    assert_eq!(err.offset, 1);
}

#[test]
fn vars_implementations_agree() {
    let mut hash = HashMap::new();
    hash.insert("A".to_string(), "h".to_string());
    assert_eq!(expand_word("$A-$B", &hash, '\\').unwrap().value, "h-");

    let mut tree = BTreeMap::new();
    tree.insert("B".to_string(), "t".to_string());
    assert_eq!(expand_word("$A-$B", &tree, '\\').unwrap().value, "-t");

    // An ordered list: the last definition wins, as with repeated ENV.
    let list = vec![
        ("A".to_string(), "first".to_string()),
        ("A".to_string(), "second".to_string()),
        ("E".to_string(), String::new()),
    ];
    assert_eq!(expand_word("$A", &list, '\\').unwrap().value, "second");
    let slice: &[(String, String)] = &list;
    assert_eq!(
        expand_word("${E-unset}${E:-empty}", &slice, '\\')
            .unwrap()
            .value,
        "empty"
    );

    let closure = VarsFn(|name: &str| (name == "X").then(|| "from-fn".to_string()));
    assert_eq!(
        expand_word("${X}/${Y:-d}", &closure, '\\').unwrap().value,
        "from-fn/d"
    );
    assert_eq!(closure.get("Y"), None);
}

#[test]
fn used_lists_set_and_unset_names_once() {
    let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
    let e = expand_word("$A ${A} ${B:-$C} '$D' \"$E\" \\$F", &env, '\\').unwrap();
    let want: BTreeSet<String> = ["A", "B", "C", "E"].iter().map(|s| s.to_string()).collect();
    assert_eq!(e.used, want);
    assert_eq!(e.value, "1 1  $D  $F");
}

#[test]
fn words_and_word_agree_on_content() {
    let env: BTreeMap<String, String> = [("P".to_string(), "80/tcp  443".to_string())].into();
    assert_eq!(
        expand_words("$P 8080", &env, '\\').unwrap(),
        ["80/tcp", "443", "8080"]
    );
    assert_eq!(
        expand_word("$P 8080", &env, '\\').unwrap().value,
        "80/tcp  443 8080"
    );
}

#[test]
fn heredoc_keeps_quotes_but_honours_escapes() {
    let env: BTreeMap<String, String> = [("NAME".to_string(), "kiln".to_string())].into();
    let body = "#!/bin/sh\necho \"hello $NAME\" '$NAME'\nprintf 'a\\tb'\necho \\$HOME\n";
    assert_eq!(
        expand_heredoc(body, &env, '\\').unwrap(),
        "#!/bin/sh\necho \"hello kiln\" 'kiln'\nprintf 'atb'\necho $HOME\n"
    );
}

#[test]
fn instruction_expansion_table() {
    for kw in [
        "FROM",
        "ARG",
        "ENV",
        "LABEL",
        "WORKDIR",
        "USER",
        "STOPSIGNAL",
        "VOLUME",
        "EXPOSE",
        "COPY",
        "ADD",
        "RUN",
        "copy",
        "Env",
    ] {
        assert!(expands(kw), "{kw} expands");
    }
    for kw in [
        "CMD",
        "ENTRYPOINT",
        "SHELL",
        "HEALTHCHECK",
        "MAINTAINER",
        "ONBUILD",
        "cmd",
        "BOGUS",
    ] {
        assert!(!expands(kw), "{kw} does not expand");
    }
    assert!(!expands_arguments("RUN"));
    assert!(expands_arguments("copy"));
    assert!(!expands_arguments("CMD"));

    use FlagExpansion::*;
    let cases = [
        ("COPY", "chown", Expanded),
        ("COPY", "--chmod", Expanded),
        ("ADD", "chown", Expanded),
        ("ADD", "checksum", Expanded),
        ("COPY", "checksum", Literal),
        ("COPY", "from", NoVariables),
        ("ADD", "from", NoVariables),
        ("COPY", "exclude", Literal),
        ("COPY", "link", Literal),
        ("COPY", "parents", Literal),
        ("FROM", "platform", Expanded),
        ("RUN", "mount", Expanded),
        ("RUN", "network", Literal),
        ("RUN", "security", Literal),
        ("HEALTHCHECK", "interval", Literal),
    ];
    for (kw, flag, want) in cases {
        assert_eq!(flag_expansion(kw, flag), want, "{kw} --{flag}");
    }
    assert!(
        from_variable_error("COPY").starts_with("variable expansion is not supported for --from")
    );
    assert!(from_variable_error("run").starts_with("'from' doesn't support variable expansion"));
}

#[test]
fn long_values_stay_fast() {
    let long = "b".repeat(20_000);
    let env: BTreeMap<String, String> = [("V".to_string(), long.clone())].into();
    let start = std::time::Instant::now();
    // Patterns that never match force a scan of every start position.
    assert_eq!(expand_word("${V//*a/x}", &env, '\\').unwrap().value, long);
    assert_eq!(expand_word("${V/b*a/x}", &env, '\\').unwrap().value, long);
    assert_eq!(expand_word("${V##*a}", &env, '\\').unwrap().value, long);
    assert_eq!(expand_word("${V%%a*}", &env, '\\').unwrap().value, long);
    // And ones that match everywhere.
    assert_eq!(
        expand_word("${V//b/c}", &env, '\\').unwrap().value,
        "c".repeat(20_000)
    );
    assert_eq!(expand_word("${V/*/x}", &env, '\\').unwrap().value, "x");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
