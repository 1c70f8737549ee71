//! Lint checks on a parsed Dockerfile, after BuildKit's Dockerfile linter:
//! the [`Rule`]s kiln knows, and the [`Warning`]s they raise. Pure: no I/O,
//! no build state; the caller chooses which stages are checked (a build
//! checks the stages it builds, as BuildKit does) and prints the warnings.
//!
//! Rules implemented:
//!
//! - `SecretsUsedInArgOrEnv`: an `ARG` or `ENV` name that looks like it
//!   holds a secret. A name looks like one when one of its `_`-separated
//!   words is `apikey`, `auth`, `credential`, `credentials`, `key`,
//!   `password`, `pword`, `passwd`, `secret` or `token`, and none is
//!   `public`, `file` or `version` (case-insensitive, with Go's simple case
//!   folding). Only the name is looked at; a value never reaches a warning.
//!
//! Adding a rule: a [`Rule`] constant, listed in [`RULES`], and a check
//! called from [`lint_stages`]. `# check=` (skipping rules, turning
//! warnings into errors) would filter the result of [`lint_stages`].

use std::fmt;

use crate::ast::{Dockerfile, InstructionKind, Span};

/// A lint rule: its BuildKit name, what it checks and where it is documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The name `# check=skip=` and `--check` output use.
    pub name: &'static str,
    pub description: &'static str,
    pub url: &'static str,
}

/// Warns when an `ARG` or `ENV` name looks like a secret.
pub const SECRETS_USED_IN_ARG_OR_ENV: Rule = Rule {
    name: "SecretsUsedInArgOrEnv",
    description: "Sensitive data should not be used in the ARG or ENV commands",
    url: "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/",
};

/// Every rule this module implements.
pub const RULES: &[&Rule] = &[&SECRETS_USED_IN_ARG_OR_ENV];

/// One finding: which rule, the message, and the 1-based position of the
/// instruction it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub rule: &'static Rule,
    pub message: String,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Warning {
    /// BuildKit's short form: `Rule: message (line N)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (line {})",
            self.rule.name, self.message, self.line
        )
    }
}

impl Warning {
    fn new(rule: &'static Rule, message: String, span: Span) -> Self {
        Warning {
            rule,
            message,
            line: span.line,
            col: span.column,
        }
    }
}

/// Lints every stage of `df` (what `docker build --check` looks at).
pub fn lint(df: &Dockerfile) -> Vec<Warning> {
    lint_stages(df, |_| true)
}

/// Lints the stages for which `checked(stage index)` holds, in file order.
/// Global `ARG`s (before the first `FROM`) are not checked: BuildKit checks
/// `ARG` and `ENV` as a stage runs them.
pub fn lint_stages(df: &Dockerfile, checked: impl Fn(usize) -> bool) -> Vec<Warning> {
    let mut out = Vec::new();
    for stage in df.stages() {
        if !checked(stage.index) {
            continue;
        }
        for ins in stage.instructions {
            secrets_used_in_arg_or_env(&ins.kind, ins.span, &mut out);
        }
    }
    out
}

/// `SecretsUsedInArgOrEnv` on one instruction: one warning per name, in
/// the order written.
fn secrets_used_in_arg_or_env(kind: &InstructionKind, span: Span, out: &mut Vec<Warning>) {
    let names: Vec<&str> = match kind {
        InstructionKind::Arg(decls) => decls.iter().map(|d| d.name.as_str()).collect(),
        InstructionKind::Env(pairs) => pairs.iter().map(|kv| kv.key.as_str()).collect(),
        _ => return,
    };
    let keyword = kind.keyword();
    for name in names {
        if looks_like_secret(name) {
            out.push(Warning::new(
                &SECRETS_USED_IN_ARG_OR_ENV,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({keyword} {})",
                    go_quote(name)
                ),
                span,
            ));
        }
    }
}

/// Words that make a name look like a secret.
const SECRET_WORDS: &[&str] = &[
    "apikey",
    "auth",
    "credential",
    "credentials",
    "key",
    "password",
    "pword",
    "passwd",
    "secret",
    "token",
];

/// Words that clear a name that would otherwise look like a secret.
const ALLOWED_WORDS: &[&str] = &["public", "file", "version"];

/// Whether an `ARG` / `ENV` name looks like it holds a secret: some
/// `_`-separated word of it is a secret word and none is an allowed word.
pub fn looks_like_secret(name: &str) -> bool {
    has_word(name, SECRET_WORDS) && !has_word(name, ALLOWED_WORDS)
}

/// Whether one of `name`'s `_`-separated words equals one of `words`
/// (which are lowercase ASCII) under Go's `(?i)` simple case folding.
fn has_word(name: &str, words: &[&str]) -> bool {
    name.split('_').any(|part| {
        words.iter().any(|w| {
            let mut chars = part.chars();
            w.chars()
                .all(|wc| chars.next().is_some_and(|c| fold(c) == wc))
                && chars.next().is_none()
        })
    })
}

/// A character as Go's case-insensitive regexp sees it when compared with
/// a lowercase ASCII letter: besides the ASCII pairs, `K` (KELVIN SIGN)
/// folds to `k` and `ſ` (LONG S) to `s`.
fn fold(c: char) -> char {
    match c {
        '\u{212A}' => 'k',
        '\u{017F}' => 's',
        c => c.to_ascii_lowercase(),
    }
}

/// `name` quoted as Go's `%q` does it (BuildKit formats the name so):
/// `"` and `\` escaped, control characters as escapes.
fn go_quote(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('"');
    for c in name.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            '\u{7}' => s.push_str("\\a"),
            '\u{8}' => s.push_str("\\b"),
            '\u{c}' => s.push_str("\\f"),
            '\u{b}' => s.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => s.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(text: &str) -> Vec<String> {
        let df = crate::parse("Dockerfile", text).expect("parses");
        lint(&df).iter().map(ToString::to_string).collect()
    }

    /// The Dockerfile of BuildKit's `testSecretsUsedInArgOrEnv`
    /// (frontend/dockerfile/dockerfile_check_test.go), without its
    /// `# check=` lines, which kiln does not read yet: the same names warn
    /// on the same lines, and the allow-listed ones do not.
    #[test]
    fn buildkit_secrets_test_names() {
        let text = "\
FROM scratch
ARG SECRET_PASSPHRASE
ENV SUPER_Secret=foo
ENV password=bar secret=baz
ARG super_duper_secret_token=foo auth=bar
ENV apikey=bar sunflower=foo
ENV git_key=
ENV PUBLIC_KEY=
ARG public_token
ARG SECRET_PASSPHRASE_FILE
ENV password_file=bar secret_File=baz
ARG AUTH_MODULE_VERSION
";
        let d = "Do not use ARG or ENV instructions for sensitive data";
        assert_eq!(
            warnings(text),
            vec![
                format!("SecretsUsedInArgOrEnv: {d} (ARG \"SECRET_PASSPHRASE\") (line 2)"),
                format!("SecretsUsedInArgOrEnv: {d} (ENV \"SUPER_Secret\") (line 3)"),
                format!("SecretsUsedInArgOrEnv: {d} (ENV \"password\") (line 4)"),
                format!("SecretsUsedInArgOrEnv: {d} (ENV \"secret\") (line 4)"),
                format!("SecretsUsedInArgOrEnv: {d} (ARG \"super_duper_secret_token\") (line 5)"),
                format!("SecretsUsedInArgOrEnv: {d} (ARG \"auth\") (line 5)"),
                format!("SecretsUsedInArgOrEnv: {d} (ENV \"apikey\") (line 6)"),
                format!("SecretsUsedInArgOrEnv: {d} (ENV \"git_key\") (line 7)"),
            ]
        );
    }

    #[test]
    fn words_are_whole_underscore_separated_parts() {
        for name in [
            "API_TOKEN",
            "token",
            "Key",
            "AWS_SECRET_ACCESS_KEY",
            "_auth_",
            "db__password",
            "NPM_AUTH",
            "CREDENTIALS",
            "my_pword",
            "PASSWD",
            "x_apikey_y",
        ] {
            assert!(looks_like_secret(name), "{name}");
        }
        for name in [
            "TOKENS",
            "keys",
            "MONKEY",
            "API-TOKEN",
            "apiKey2",
            "authorization",
            "passphrase",
            "",
            "_",
            "SSH_AUTH_SOCK_FILE",
            "KEY_VERSION",
            "public_key",
            "GPG_KEY_FILE_PUBLIC",
        ] {
            assert!(!looks_like_secret(name), "{name}");
        }
    }

    #[test]
    fn case_folds_as_go_does() {
        // KELVIN SIGN folds to k and LONG S to s in Go's (?i).
        assert!(looks_like_secret("API_\u{212A}EY"));
        assert!(looks_like_secret("\u{017F}ecret"));
        assert!(!looks_like_secret("\u{017F}ecret_ver\u{017F}ion"));
        // Other look-alikes do not fold.
        assert!(!looks_like_secret("\u{0131}oken"));
        assert!(!looks_like_secret("TOKEN\u{0301}"));
    }

    #[test]
    fn values_never_appear_and_names_are_quoted() {
        let w =
            warnings("FROM scratch\nENV API_TOKEN=hunter2-value\nARG DB_PASSWORD=s3cr3t-value\n");
        assert_eq!(w.len(), 2);
        for line in &w {
            assert!(
                !line.contains("hunter2") && !line.contains("s3cr3t"),
                "{line}"
            );
        }
        assert_eq!(
            go_quote("a\"b\\c\u{1}\u{85}é"),
            "\"a\\\"b\\\\c\\x01\\u0085é\""
        );
    }

    #[test]
    fn other_instructions_and_global_args_are_not_checked() {
        let text = "\
ARG GLOBAL_TOKEN=x
FROM scratch
LABEL API_TOKEN=x
RUN API_TOKEN=x true
ENV LEGACY_TOKEN value
";
        assert_eq!(
            warnings(text),
            vec!["SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ENV \"LEGACY_TOKEN\") (line 5)"]
        );
    }

    #[test]
    fn only_chosen_stages_are_checked() {
        let text = "\
FROM scratch AS a
ARG A_TOKEN
FROM scratch AS b
ENV B_SECRET=1
";
        let df = crate::parse("Dockerfile", text).expect("parses");
        let got = lint_stages(&df, |i| i == 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].rule, &SECRETS_USED_IN_ARG_OR_ENV);
        assert_eq!((got[0].line, got[0].col), (4, 1));
        assert!(got[0].message.ends_with("(ENV \"B_SECRET\")"));
        assert_eq!(lint(&df).len(), 2);
        assert!(RULES.contains(&&SECRETS_USED_IN_ARG_OR_ENV));
    }
}
