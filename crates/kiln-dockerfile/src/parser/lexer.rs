//! Low-level lexing of one logical Dockerfile line: the located character
//! buffer, Docker's word splitters (flags, key=value words, whitespace
//! lists), heredoc openers, JSON arrays and Go-style durations.
//!
//! Every function works on character indices into a [`Line`], never on byte
//! slices, so no input can make it slice inside a UTF-8 sequence.

use crate::ast::Span;

/// A logical line (continuations joined) with the source position of every
/// character.
#[derive(Debug)]
pub(crate) struct Line {
    pub chars: Vec<char>,
    pub spans: Vec<Span>,
    /// The position just after the last character.
    pub end: Span,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            chars: Vec::new(),
            spans: Vec::new(),
            end: Span { line: 1, column: 1 },
        }
    }
}

impl Line {
    pub fn push(&mut self, c: char, span: Span) {
        self.chars.push(c);
        self.spans.push(span);
        self.end = Span {
            line: span.line,
            column: span.column + 1,
        };
    }

    pub fn span(&self, i: usize) -> Span {
        self.spans.get(i).copied().unwrap_or(self.end)
    }

    pub fn text(&self, r: Range) -> String {
        self.chars
            .get(r.start..r.end.min(self.chars.len()))
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }

    pub fn at(&self, i: usize) -> Option<char> {
        self.chars.get(i).copied()
    }

    /// `r` with Unicode whitespace removed from both ends (Go's TrimSpace).
    pub fn trim(&self, mut r: Range) -> Range {
        while r.start < r.end && self.at(r.start).is_some_and(char::is_whitespace) {
            r.start += 1;
        }
        while r.end > r.start && self.at(r.end - 1).is_some_and(char::is_whitespace) {
            r.end -= 1;
        }
        r
    }
}

/// A half-open range of character indices into a [`Line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub start: usize,
    pub end: usize,
}

impl Range {
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

/// A word with the index of its first character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub text: String,
    pub at: usize,
}

/// The whitespace Docker splits instruction words on (`[\t\v\f\r ]`).
pub(crate) fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{0B}' | '\u{0C}' | '\r' | ' ')
}

/// Splits `r` on runs of [`is_split_space`], keeping quotes and escapes.
pub(crate) fn split_whitespace(line: &Line, r: Range) -> Vec<Word> {
    let mut words = Vec::new();
    let mut i = r.start;
    while i < r.end {
        while i < r.end && line.at(i).is_some_and(is_split_space) {
            i += 1;
        }
        if i >= r.end {
            break;
        }
        let start = i;
        while i < r.end && !line.at(i).is_some_and(is_split_space) {
            i += 1;
        }
        words.push(Word {
            text: line.text(Range { start, end: i }),
            at: start,
        });
    }
    words
}

/// The `--flag[=value]` words at the start of `r`, unquoted and unescaped,
/// and the index where the arguments begin.
///
/// Flags stop at the first word that does not start with `--`; a lone `--`
/// ends the flags and is dropped. Quotes and backslashes in a flag word are
/// removed (`--chown="a b"` is `--chown=a b`), as Docker does.
pub(crate) fn extract_flags(line: &Line, r: Range) -> (Vec<Word>, usize) {
    let mut flags = Vec::new();
    let mut i = r.start;
    loop {
        while i < r.end && line.at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        if i >= r.end {
            return (flags, r.end);
        }
        if !(line.at(i) == Some('-') && i + 1 < r.end && line.at(i + 1) == Some('-')) {
            return (flags, i);
        }
        let start = i;
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut blank_ok = false;
        while i < r.end {
            let Some(c) = line.at(i) else { break };
            match quote {
                None => {
                    if c.is_whitespace() {
                        break;
                    }
                    if c == '\'' || c == '"' {
                        quote = Some(c);
                        blank_ok = true;
                    } else if c == '\\' {
                        if i + 1 < r.end {
                            i += 1;
                            if let Some(n) = line.at(i) {
                                word.push(n);
                            }
                        }
                    } else {
                        word.push(c);
                    }
                }
                Some(q) => {
                    if c == q {
                        quote = None;
                    } else if c == '\\' {
                        if i + 1 < r.end {
                            i += 1;
                            if let Some(n) = line.at(i) {
                                word.push(n);
                            }
                        } else {
                            quote = None;
                        }
                    } else {
                        word.push(c);
                    }
                }
            }
            i += 1;
        }
        if word == "--" {
            return (flags, i.min(r.end));
        }
        if blank_ok || !word.is_empty() {
            flags.push(Word {
                text: word,
                at: start,
            });
        }
    }
}

/// Splits the arguments of ENV, LABEL and ARG into words, keeping quotes and
/// escape characters (Docker's `parseWords`): whitespace inside quotes does
/// not split, the escape character protects the next character outside
/// single quotes, and a trailing escape character is dropped.
pub(crate) fn parse_words(line: &Line, r: Range, escape: char) -> Vec<Word> {
    let mut words = Vec::new();
    let mut i = r.start;
    let mut word = String::new();
    let mut start = 0;
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    while i < r.end {
        let Some(c) = line.at(i) else { break };
        if !in_word {
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            in_word = true;
            start = i;
        }
        match quote {
            None => {
                if c.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(Word {
                            text: std::mem::take(&mut word),
                            at: start,
                        });
                    }
                    word.clear();
                    blank_ok = false;
                    in_word = false;
                    i += 1;
                    continue;
                }
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
                if c == escape {
                    if i + 1 >= r.end {
                        i += 1;
                        continue;
                    }
                    word.push(c);
                    i += 1;
                    if let Some(n) = line.at(i) {
                        word.push(n);
                    }
                    i += 1;
                    continue;
                }
                word.push(c);
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
                if c == escape && q != '\'' {
                    if i + 1 >= r.end {
                        quote = None;
                        i += 1;
                        continue;
                    }
                    word.push(c);
                    i += 1;
                    if let Some(n) = line.at(i) {
                        word.push(n);
                    }
                    i += 1;
                    continue;
                }
                word.push(c);
            }
        }
        i += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(Word {
            text: word,
            at: start,
        });
    }
    words
}

/// Splits a line into shell words the way Docker looks for heredoc openers:
/// whitespace separates words, quotes and backslash escapes are kept as
/// written. An unterminated quote yields no words at all (Docker then finds
/// no heredoc on the line).
pub(crate) fn shell_words(line: &Line, r: Range) -> Vec<Word> {
    let mut words = Vec::new();
    let mut i = r.start;
    while i < r.end {
        while i < r.end && line.at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        if i >= r.end {
            break;
        }
        let start = i;
        let mut word = String::new();
        while i < r.end {
            let Some(c) = line.at(i) else { break };
            if c.is_whitespace() {
                break;
            }
            word.push(c);
            i += 1;
            match c {
                '\\' => {
                    if let Some(n) = line.at(i).filter(|_| i < r.end) {
                        word.push(n);
                        i += 1;
                    }
                }
                '\'' | '"' => {
                    let mut closed = false;
                    while i < r.end {
                        let Some(n) = line.at(i) else { break };
                        word.push(n);
                        i += 1;
                        if n == c {
                            closed = true;
                            break;
                        }
                        if c == '"' && n == '\\' {
                            if let Some(m) = line.at(i).filter(|_| i < r.end) {
                                word.push(m);
                                i += 1;
                            }
                        }
                    }
                    if !closed {
                        return Vec::new();
                    }
                }
                _ => {}
            }
        }
        words.push(Word {
            text: word,
            at: start,
        });
    }
    words
}

/// A heredoc opener word such as `<<EOF`, `<<-"EOF"` or `3<<'END'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocOpener {
    /// The delimiter with quotes and escapes removed.
    pub name: String,
    /// `<<-`: strip leading tabs.
    pub strip_tabs: bool,
    /// False when any part of the delimiter was quoted.
    pub expand: bool,
    /// The file descriptor written before `<<` (0 when none).
    pub fd: u32,
}

/// Recognises a heredoc opener word (`^(\d*)<<(-?)([^<]*)$` with a
/// non-empty delimiter); `None` for any other word.
pub fn heredoc_opener(word: &str) -> Option<HeredocOpener> {
    let digits_end = word
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map(|(i, _)| i)
        .unwrap_or(word.len());
    let (digits, rest) = word.split_at(digits_end);
    let rest = rest.strip_prefix("<<")?;
    let (strip_tabs, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let fd = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let name = unquote_word(rest)?;
    if name.is_empty() {
        return None;
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Some(HeredocOpener {
        expand: quotes(&name) == quotes(rest),
        name,
        strip_tabs,
        fd,
    })
}

/// Removes shell quoting from one word (`'a'b"c\"d"` → `abc"d`); `None` if
/// it has an unterminated quote or splits into several words.
fn unquote_word(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    n => out.push(n),
                }
            },
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        n @ ('"' | '\\' | '$') => out.push(n),
                        n => {
                            out.push('\\');
                            out.push(n);
                        }
                    },
                    n => out.push(n),
                }
            },
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c if c.is_whitespace() => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The outcome of reading arguments as a JSON array.
pub(crate) enum Json {
    /// A JSON array of strings.
    Strings(Vec<String>),
    /// Valid JSON array with a non-string element: an error in Docker.
    NotStrings,
    /// Not a JSON array: the arguments are in shell form.
    No,
}

/// Reads `s` as Docker does for exec form: it must start with `[` and be a
/// whole valid JSON array.
pub(crate) fn parse_json_array(s: &str) -> Json {
    let s = s.trim_start();
    if !s.starts_with('[') {
        return Json::No;
    }
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NotStrings,
                }
            }
            Json::Strings(out)
        }
        _ => Json::No,
    }
}

/// A Go duration that does not parse; `Display` is Go's `time.ParseDuration`
/// message for the same input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a duration at all, or out of range.
    #[error("time: invalid duration {}", go_quote(.input))]
    Invalid { input: String },
    /// A number without a unit (`5`).
    #[error("time: missing unit in duration {}", go_quote(.input))]
    MissingUnit { input: String },
    /// A unit other than `ns`, `us`, `ms`, `s`, `m` and `h`.
    #[error("time: unknown unit {} in duration {}", go_quote(.unit), go_quote(.input))]
    UnknownUnit { unit: String, input: String },
}

/// Parses a Go duration (`300ms`, `1.5h`, `2h45m`, `-1s`) into nanoseconds,
/// with Go's error messages. Hand-written because the format (and its
/// messages) are Go's own, which no Rust crate reproduces exactly.
pub fn parse_go_duration(orig: &str) -> Result<i128, DurationError> {
    let invalid = || DurationError::Invalid {
        input: orig.to_string(),
    };
    let mut s = orig;
    let mut neg = false;
    if let Some(r) = s.strip_prefix('-') {
        neg = true;
        s = r;
    } else if let Some(r) = s.strip_prefix('+') {
        s = r;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !s.is_empty() {
        let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (int_part, rest) = s.split_at(int_end);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let e = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                r.split_at(e)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_end = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_end);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit {
                input: orig.to_string(),
            });
        }
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_string(),
                    input: orig.to_string(),
                })
            }
        };
        let mut value: i128 = 0;
        for d in int_part.bytes() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(i128::from(d - b'0')))
                .filter(|v| *v <= i128::from(i64::MAX))
                .ok_or_else(invalid)?;
        }
        let mut nanos = value.checked_mul(scale).ok_or_else(invalid)?;
        let mut frac_scale = scale;
        for d in frac_part.bytes() {
            frac_scale /= 10;
            nanos += i128::from(d - b'0') * frac_scale;
        }
        total = total.checked_add(nanos).ok_or_else(invalid)?;
        if total > i128::from(i64::MAX) {
            return Err(invalid());
        }
        s = rest;
    }
    Ok(if neg { -total } else { total })
}

/// Quotes a string the way Go's `%q` does for the characters that matter
/// in messages.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Levenshtein distance, for "did you mean" hints. Hand-written: a dozen
/// lines are not worth a dependency.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    // Indices below stay within `prev`/`cur`, which hold `b.len() + 1`
    // entries by construction.
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let best = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            cur[j + 1] = best;
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// The closest of `candidates` to `word` (case-sensitive), for "did you
/// mean" hints in parser and `--mount` errors.
pub(crate) fn suggest_word(word: &str, candidates: &[&str]) -> Option<String> {
    suggest(word, candidates, true)
}

/// Docker's "did you mean" rule: the first candidate at edit distance 1
/// or 2 with no closer one after it; none when `word` is itself a
/// candidate. Case-insensitive matching answers in the case of `word`
/// (all lower, all upper, else lower).
pub(crate) fn suggest(word: &str, candidates: &[&str], case_sensitive: bool) -> Option<String> {
    let fold = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let val = fold(word);
    // Words much longer than every candidate are never within distance 2.
    let longest = candidates.iter().map(|c| c.chars().count()).max()?;
    if val.chars().count() > longest + 2 {
        return None;
    }
    let mut best: Option<String> = None;
    let mut min = 3;
    for c in candidates {
        let opt = fold(c);
        if opt == val {
            return None;
        }
        let d = edit_distance(&val, &opt);
        if d < min {
            min = d;
            best = Some(opt);
        }
    }
    let best = best?;
    if case_sensitive {
        return Some(best);
    }
    Some(
        if word == word.to_uppercase() && word != word.to_lowercase() {
            best.to_uppercase()
        } else {
            best
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Line {
        let mut l = Line::default();
        for (i, c) in s.chars().enumerate() {
            l.push(
                c,
                Span {
                    line: 1,
                    column: i + 1,
                },
            );
        }
        l
    }

    fn all(l: &Line) -> Range {
        Range {
            start: 0,
            end: l.chars.len(),
        }
    }

    #[test]
    fn durations_follow_go() {
        let ns = 1_000_000_000i128;
        for (s, want) in [
            ("30s", 30 * ns),
            ("1m30s", 90 * ns),
            ("1.5h", 5400 * ns),
            ("300ms", 300_000_000),
            ("0", 0),
            ("-1s", -ns),
            ("2h45m", (2 * 3600 + 45 * 60) * ns),
            (".5s", ns / 2),
            ("1us", 1000),
            ("1\u{b5}s", 1000),
        ] {
            assert_eq!(parse_go_duration(s), Ok(want), "{s}");
        }
        assert_eq!(
            parse_go_duration("5").unwrap_err().to_string(),
            "time: missing unit in duration \"5\""
        );
        assert_eq!(
            parse_go_duration("5x").unwrap_err().to_string(),
            "time: unknown unit \"x\" in duration \"5x\""
        );
        assert_eq!(
            parse_go_duration("abc").unwrap_err().to_string(),
            "time: invalid duration \"abc\""
        );
        assert_eq!(
            parse_go_duration("").unwrap_err().to_string(),
            "time: invalid duration \"\""
        );
        assert!(parse_go_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn heredoc_openers() {
        let h = heredoc_opener("<<EOF").unwrap();
        assert_eq!(
            (h.name.as_str(), h.strip_tabs, h.expand),
            ("EOF", false, true)
        );
        let h = heredoc_opener("<<-'EOT'").unwrap();
        assert_eq!(
            (h.name.as_str(), h.strip_tabs, h.expand),
            ("EOT", true, false)
        );
        let h = heredoc_opener("<<\"E\"OF").unwrap();
        assert_eq!((h.name.as_str(), h.expand), ("EOF", false));
        let h = heredoc_opener("3<<END").unwrap();
        assert_eq!((h.name.as_str(), h.fd), ("END", 3));
        for not in [
            "<<", "<<-", "<<<EOF", "cat<<EOF", "EOF", "<<''", "<<'EOF", "x<<EOF",
        ] {
            assert_eq!(heredoc_opener(not), None, "{not}");
        }
    }

    #[test]
    fn flags_are_unquoted_and_stop_at_arguments() {
        let l = line("--from=a --chown=\"x y\" --link -- --not-a-flag b");
        let (flags, at) = extract_flags(&l, all(&l));
        let texts: Vec<&str> = flags.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, ["--from=a", "--chown=x y", "--link"]);
        assert_eq!(flags[1].at, 9);
        assert_eq!(
            l.text(Range {
                start: at,
                end: l.chars.len()
            })
            .trim(),
            "--not-a-flag b"
        );
        let l = line("  src dst");
        let (flags, at) = extract_flags(&l, all(&l));
        assert!(flags.is_empty());
        assert_eq!(at, 2);
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        let l = line(r#"a="x y" b=c\ d 'e f'=g"#);
        let w: Vec<String> = parse_words(&l, all(&l), '\\')
            .into_iter()
            .map(|w| w.text)
            .collect();
        assert_eq!(w, [r#"a="x y""#, r"b=c\ d", "'e f'=g"]);
        let l = line(r#"a="it's" b='say "hi"'"#);
        let w: Vec<String> = parse_words(&l, all(&l), '\\')
            .into_iter()
            .map(|w| w.text)
            .collect();
        assert_eq!(w, [r#"a="it's""#, r#"b='say "hi"'"#]);
    }

    #[test]
    fn shell_words_find_openers_only_as_whole_words() {
        let l = line(r#"RUN cat <<EOF "<<NOT" 'a b' x\ y"#);
        let w: Vec<String> = shell_words(&l, all(&l))
            .into_iter()
            .map(|w| w.text)
            .collect();
        assert_eq!(w, ["RUN", "cat", "<<EOF", "\"<<NOT\"", "'a b'", "x\\ y"]);
        let l = line("RUN echo 'open <<EOF");
        assert!(shell_words(&l, all(&l)).is_empty());
    }

    #[test]
    fn json_arrays() {
        assert!(matches!(parse_json_array(r#"["a", "b"]"#), Json::Strings(v) if v == ["a", "b"]));
        assert!(matches!(parse_json_array(r#"["a", 1]"#), Json::NotStrings));
        assert!(matches!(parse_json_array(r#"["a"] # c"#), Json::No));
        assert!(matches!(parse_json_array("echo [a]"), Json::No));
        assert!(matches!(parse_json_array("[]"), Json::Strings(v) if v.is_empty()));
    }

    #[test]
    fn suggestions() {
        let kw = ["RUN", "FROM"];
        assert_eq!(suggest("RUUN", &kw, false).as_deref(), Some("RUN"));
        assert_eq!(suggest("frmo", &kw, false).as_deref(), Some("from"));
        assert_eq!(suggest("Frmo", &kw, false).as_deref(), Some("from"));
        assert_eq!(suggest("XYZZY", &kw, false), None);
        assert_eq!(suggest("run", &kw, false), None);
        assert_eq!(
            suggest("chwon", &["chown", "chmod"], true).as_deref(),
            Some("chown")
        );
        assert_eq!(suggest("CHOWN", &["chown"], true), None);
    }
}
