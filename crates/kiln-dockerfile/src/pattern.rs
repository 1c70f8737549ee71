//! Docker's path patterns, shared by `.dockerignore` and `COPY --exclude`:
//! a [`PatternSet`] answers "is this context path excluded?" and "can a
//! walker skip this excluded directory?".
//!
//! The rules, as Docker applies them:
//!
//! - Each pattern is trimmed and cleaned lexically (`a//b/./c/..` is `a/b`)
//!   and a leading `/` is removed, so `/foo`, `./foo` and `foo` are the same
//!   pattern. A leading `!` makes an exception (re-inclusion); `!` alone is
//!   an error.
//! - `*` matches any run of characters except `/`, `?` one character except
//!   `/`, `[abc]`, `[a-z]`, `[^a-z]` one character of a class (`^` negates;
//!   `!` does not), `\x` the character `x`.
//! - `**` matches any number of directories, including none: `**/*.go`
//!   matches `a.go` and `x/y/a.go`; `a/**/b` matches `a/b` and `a/x/y/b`. A
//!   trailing `**` matches everything (`a/**` is everything below `a`, and
//!   `a**` every path starting with `a`). A leading `**` followed by plain
//!   text is a plain suffix test, so `**.txt` matches `a/b.txt` and `x.txt`.
//! - A pattern that matches a directory matches everything below it: `a`
//!   excludes `a/b/c`.
//! - The last pattern that matches a path decides: excluded if it is a
//!   plain pattern, included if it is an exception.
//! - Patterns are malformed (a [`PatternError`]) when a class is not closed
//!   or empty, or a `\` ends the pattern, as Go's `filepath.Match` decides.
//!
//! Paths given to [`PatternSet::matches`] are slash-separated and relative
//! to the context root; they are cleaned the same way as patterns. The
//! context root itself (`.` or the empty path) is never excluded.
//!
//! Matching is hand-written (an automaton over the pattern's elements)
//! because Docker's semantics — `**` spanning zero or more directories, the
//! parent-directory rule, the leading-`**` suffix quirk — are not what
//! general glob crates implement.

use std::fmt;

/// A pattern that Docker would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PatternError {
    /// The pattern as given (for .dockerignore, the line after trimming).
    pub pattern: String,
    /// What is wrong: `syntax error in pattern` or `illegal exclusion
    /// pattern: "!"`.
    pub message: String,
    /// The 1-based line in a .dockerignore file, when it came from one.
    pub line: Option<usize>,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "line {line}: invalid pattern {:?}: {}",
                self.pattern, self.message
            ),
            None => write!(f, "invalid pattern {:?}: {}", self.pattern, self.message),
        }
    }
}

/// Cleans a slash-separated path lexically, like Go's `path.Clean`: no
/// repeated or trailing slashes, no `.` elements, `..` resolved against the
/// preceding element (and dropped at the root); the empty path is `.`.
///
/// Hand-written because `std::path` components keep `..` unresolved and
/// Docker's pattern semantics depend on this exact normalisation.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Normalises a pattern body (without its `!`): cleaned, leading `/`
/// removed unless the pattern is just `/`.
fn normalize_pattern(body: &str) -> String {
    let cleaned = clean_path(body);
    match cleaned.strip_prefix('/') {
        Some(rest) if !rest.is_empty() => rest.to_string(),
        _ => cleaned,
    }
}

/// Normalises a path to match: cleaned, relative.
fn normalize_path(path: &str) -> String {
    let cleaned = clean_path(path);
    match cleaned.strip_prefix('/') {
        Some("") => ".".to_string(),
        Some(rest) => rest.to_string(),
        None => cleaned,
    }
}

/// One character class `[...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`: any run without `/`.
    Star,
    /// Trailing `**` (or a leading one before plain text): any run at all.
    Any,
    /// `**` elsewhere: nothing, or any run ending in `/`.
    Dirs,
    Class(Class),
}

/// A compiled pattern: tokens and an automaton over them. State `k` means
/// "tokens before `k` matched"; state `n + 1 + k` is the inside of a
/// [`Tok::Dirs`] at `k` after at least one character.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob {
    toks: Vec<Tok>,
}

/// A malformed glob (an unfinished escape or character class), with the
/// message Go's `filepath.Match` gives for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern")]
struct SyntaxError;

fn syntax_error() -> SyntaxError {
    SyntaxError
}

impl Glob {
    fn compile(pattern: &str) -> Result<Glob, SyntaxError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        // Set once anything but plain text follows a leading `**`, which
        // then stops being a plain suffix test.
        let mut leading_any: Option<usize> = None;
        let mut wild_after_leading = false;
        while let Some(&ch) = chars.get(i) {
            let first = i == 0;
            i += 1;
            match ch {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    let slash = chars.get(i) == Some(&'/');
                    if slash {
                        i += 1;
                    }
                    if i >= chars.len() {
                        toks.push(Tok::Any);
                    } else {
                        if first && !slash {
                            leading_any = Some(toks.len());
                        }
                        toks.push(Tok::Dirs);
                    }
                    if !first {
                        wild_after_leading = true;
                    }
                }
                '*' => {
                    toks.push(Tok::Star);
                    wild_after_leading = true;
                }
                '?' => {
                    toks.push(Tok::One);
                    wild_after_leading = true;
                }
                '\\' => match chars.get(i) {
                    Some(&c) => {
                        i += 1;
                        toks.push(Tok::Lit(c));
                        wild_after_leading = true;
                    }
                    None => return Err(syntax_error()),
                },
                '[' => {
                    let (class, next) = parse_class(&chars, i)?;
                    i = next;
                    toks.push(Tok::Class(class));
                    wild_after_leading = true;
                }
                ']' => {
                    // Docker hands a lone `]` to its regexp engine, which
                    // reads it literally but no longer as plain text.
                    toks.push(Tok::Lit(']'));
                    wild_after_leading = true;
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        if let Some(k) = leading_any {
            if !wild_after_leading {
                if let Some(tok) = toks.get_mut(k) {
                    *tok = Tok::Any;
                }
            }
        }
        Ok(Glob { toks })
    }

    fn states(&self) -> usize {
        2 * (self.toks.len() + 1)
    }

    fn add_state(&self, set: &mut [bool], mut k: usize) {
        loop {
            let Some(slot) = set.get_mut(k) else { return };
            if *slot {
                return;
            }
            *slot = true;
            match self.toks.get(k) {
                Some(Tok::Star | Tok::Any | Tok::Dirs) => k += 1,
                _ => return,
            }
        }
    }

    fn start(&self) -> Vec<bool> {
        let mut set = vec![false; self.states()];
        self.add_state(&mut set, 0);
        set
    }

    fn step(&self, current: &[bool], c: char) -> Vec<bool> {
        let n = self.toks.len();
        let mut next = vec![false; self.states()];
        for (k, tok) in self.toks.iter().enumerate() {
            if current.get(k).copied().unwrap_or(false) {
                match tok {
                    Tok::Lit(l) if *l == c => self.add_state(&mut next, k + 1),
                    Tok::One if c != '/' => self.add_state(&mut next, k + 1),
                    Tok::Star if c != '/' => self.add_state(&mut next, k),
                    Tok::Any => self.add_state(&mut next, k),
                    Tok::Class(class) if class.matches(c) => self.add_state(&mut next, k + 1),
                    Tok::Dirs => {
                        if let Some(slot) = next.get_mut(n + 1 + k) {
                            *slot = true;
                        }
                        if c == '/' {
                            self.add_state(&mut next, k + 1);
                        }
                    }
                    _ => {}
                }
            }
            // Inside a `**`: keep consuming; a `/` may end it.
            if current.get(n + 1 + k).copied().unwrap_or(false) {
                if let Some(slot) = next.get_mut(n + 1 + k) {
                    *slot = true;
                }
                if c == '/' {
                    self.add_state(&mut next, k + 1);
                }
            }
        }
        next
    }

    fn run(&self, text: &str) -> Vec<bool> {
        let mut set = self.start();
        for c in text.chars() {
            set = self.step(&set, c);
            if !set.iter().any(|&s| s) {
                break;
            }
        }
        set
    }

    fn matches(&self, text: &str) -> bool {
        self.run(text)
            .get(self.toks.len())
            .copied()
            .unwrap_or(false)
    }

    /// Whether some continuation of `prefix` could still match.
    fn alive_after(&self, prefix: &str) -> bool {
        self.run(prefix).iter().any(|&s| s)
    }
}

/// Parses a class body starting after `[`, with `filepath.Match`'s syntax:
/// an optional `^`, then at least one character or `lo-hi` range (`\`
/// escapes; an unescaped `-` or `]` cannot start a range), then `]`.
fn parse_class(chars: &[char], mut i: usize) -> Result<(Class, usize), SyntaxError> {
    let mut class = Class {
        negated: false,
        ranges: Vec::new(),
    };
    if chars.get(i) == Some(&'^') {
        class.negated = true;
        i += 1;
    }
    loop {
        if chars.get(i) == Some(&']') && !class.ranges.is_empty() {
            return Ok((class, i + 1));
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            let (h, next) = class_char(chars, i + 1)?;
            hi = h;
            i = next;
        }
        class.ranges.push((lo, hi));
    }
}

fn class_char(chars: &[char], mut i: usize) -> Result<(char, usize), SyntaxError> {
    let c = match chars.get(i) {
        None | Some('-' | ']') => return Err(syntax_error()),
        Some('\\') => {
            i += 1;
            *chars.get(i).ok_or_else(syntax_error)?
        }
        Some(&c) => c,
    };
    i += 1;
    // Go also rejects a class character that ends the pattern.
    if i >= chars.len() {
        return Err(syntax_error());
    }
    Ok((c, i))
}

/// One pattern of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    exception: bool,
    glob: Glob,
}

impl Pattern {
    /// The normalised pattern, without its `!`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is a `!` exception (re-inclusion).
    pub fn is_exception(&self) -> bool {
        self.exception
    }

    /// Whether the pattern matches the normalised path itself (no parent
    /// rule).
    fn matches_exact(&self, path: &str) -> bool {
        self.glob.matches(path)
    }

    /// Whether the pattern matches the normalised path or one of its
    /// parent directories.
    fn matches_with_parents(&self, path: &str) -> bool {
        if self.matches_exact(path) {
            return true;
        }
        path.match_indices('/').any(|(i, _)| {
            path.get(..i)
                .is_some_and(|parent| self.matches_exact(parent))
        })
    }
}

/// An ordered list of path patterns with `!` exceptions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatternSet {
    patterns: Vec<Pattern>,
}

impl PatternSet {
    /// Compiles patterns in order. Blank patterns are skipped; a leading
    /// `!` marks an exception.
    pub fn new(patterns: &[&str]) -> Result<Self, PatternError> {
        let mut set = PatternSet::default();
        for pattern in patterns {
            set.push(pattern, None)?;
        }
        Ok(set)
    }

    /// Appends one pattern; `line` is recorded in the error.
    pub(crate) fn push(&mut self, pattern: &str, line: Option<usize>) -> Result<(), PatternError> {
        let error = |message: String| PatternError {
            pattern: pattern.to_string(),
            message,
            line,
        };
        let trimmed = pattern.trim();
        if trimmed.is_empty() {
            return Ok(());
        }
        let (exception, body) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        if exception && body.is_empty() {
            return Err(error("illegal exclusion pattern: \"!\"".to_string()));
        }
        let text = normalize_pattern(body);
        let glob = Glob::compile(&text).map_err(|e| error(e.to_string()))?;
        self.patterns.push(Pattern {
            text,
            exception,
            glob,
        });
        Ok(())
    }

    /// The patterns in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// No patterns at all: nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is a `!` exception.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(Pattern::is_exception)
    }

    /// The patterns as Docker lists them: normalised, exceptions with
    /// their `!` (for cache keys and for passing on).
    pub fn to_strings(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exception {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }

    /// Whether `path` (slash-separated, relative to the context) is
    /// excluded: the last pattern matching it or one of its parent
    /// directories decides.
    pub fn matches(&self, path: &str) -> bool {
        let path = normalize_path(path);
        if path == "." {
            return false;
        }
        self.last_match(&path)
            .is_some_and(|i| self.patterns.get(i).is_some_and(|p| !p.exception))
    }

    /// Index of the last pattern matching `path` or a parent of it.
    fn last_match(&self, path: &str) -> Option<usize> {
        self.patterns
            .iter()
            .rposition(|p| p.matches_with_parents(path))
    }

    /// Whether something below directory `dir` may be included even
    /// though `dir` itself is excluded — that is, whether a walker must
    /// still descend into it. False means everything below `dir` is
    /// excluded and the walk can skip it. Always true when `dir` is not
    /// excluded.
    ///
    /// Every pattern that matches `dir` (or a parent) also matches all its
    /// descendants, so only exceptions after the last such pattern can
    /// re-include anything; each is asked whether it could match some path
    /// that starts with `dir/`.
    pub fn may_have_included_children(&self, dir: &str) -> bool {
        let dir = normalize_path(dir);
        if dir == "." {
            return true;
        }
        let Some(last) = self.last_match(&dir) else {
            return true;
        };
        if self.patterns.get(last).is_some_and(|p| p.exception) {
            return true;
        }
        let prefix = format!("{dir}/");
        self.patterns
            .iter()
            .skip(last + 1)
            .filter(|p| p.exception)
            .any(|p| p.glob.alive_after(&prefix))
    }
}
