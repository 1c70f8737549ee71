//! Docker's shell-like word expansion: `$V`, `${V}`, the `${V:-w}` family,
//! `${V#p}`/`${V%p}` trimming and `${V/p/r}` replacement, quote removal and
//! escapes, with BuildKit's exact behaviour (including its quirks), plus the
//! table of which instruction parts are expanded at all ([`expands`],
//! [`flag_expansion`]).
//!
//! This is not a POSIX shell. What it does, precisely:
//!
//! - `$NAME` and `${NAME}`: names are letters, digits and `_`. A name that
//!   starts with a digit is all the digits that follow (`$12a` is `$12` then
//!   `a`). The special parameters `$@ $* $# $? $- $$ $! $0` are looked up as
//!   variables of those names, so they normally expand to nothing. A `$`
//!   followed by anything else stays a literal `$`. Unset variables expand to
//!   the empty string.
//! - `${V:-w}` / `${V-w}`: `w` when `V` is unset (or empty, with `:`).
//!   `${V:+w}` / `${V+w}`: `w` when `V` is set (and non-empty, with `:`).
//!   `${V:?m}` / `${V?m}`: an error `V: m` when unset (or empty, with `:`);
//!   without `m`, `V: is not allowed to be unset` / `V: is not allowed to be
//!   empty`. The word `w` is itself expanded (quotes, escapes, nested `$`).
//! - `${V#p}` `${V##p}` `${V%p}` `${V%%p}`: remove the shortest/longest prefix
//!   or suffix matching the pattern. `${V/p/r}` replaces the leftmost longest
//!   match, `${V//p/r}` every match. Patterns know only `*` (any run of
//!   characters) and `?` (one character), neither matching a newline, with
//!   `\*`, `\?`, `\\` for the literal characters and `\}`, `\/` for a brace or
//!   slash inside the braces; any other `\x` is an `invalid escape` error.
//!   **Bracket expressions (`[a-z]`) are not supported**: like BuildKit, `[`
//!   and `]` are literal characters, so an image builds the same with kiln.
//!   In these patterns and replacements the escape character is kept (so a
//!   replacement `\x` inserts `\x`), exactly as BuildKit does. `${V:#p}` and
//!   `${V:%p}` are `unsupported modifier` errors.
//! - Single quotes: everything literal up to the next `'`. Double quotes:
//!   `$` expansions happen; the escape character escapes only `"`, `$` and
//!   itself, otherwise it stays. Outside quotes the escape character escapes
//!   any character and is removed; a trailing one is dropped.
//! - Errors carry BuildKit's messages (`syntax error: missing '}'`,
//!   `syntax error: bad substitution`, `unsupported modifier (:x) in
//!   substitution`, `unexpected end of statement while looking for matching
//!   double-quote`, …) and the byte offset of the construct that failed. One
//!   deliberate difference: `${NAME` cut off right after the name reports
//!   `missing '}'` where BuildKit prints a garbled `unsupported modifier`.
//! - Replacement text is inserted literally; BuildKit's `${V//p/r}` would
//!   additionally interpret `$1`-style regexp group references that reach
//!   the replacement through a variable's value.
//!
//! The lexer below is hand-written because its behaviour *is* the spec: no
//! shell-parsing crate reproduces Docker's rules (which characters escape in
//! double quotes, when whitespace splits words, raw escapes in patterns).

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A source of variable values: the stage's environment and build args.
pub trait Vars {
    /// The value of `name`, or `None` when it is unset. A variable set to
    /// the empty string is `Some("")`, which `${V-w}` and `${V:-w}` treat
    /// differently.
    fn get(&self, name: &str) -> Option<String>;
}

impl Vars for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Vars for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

/// An ordered environment list; when a name appears twice the last entry
/// wins, as when ENV redefines a variable.
impl Vars for &[(String, String)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

impl Vars for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<String> {
        Vars::get(&self.as_slice(), name)
    }
}

/// No variables at all: everything expands as unset.
impl Vars for () {
    fn get(&self, _name: &str) -> Option<String> {
        None
    }
}

/// Adapts a closure into [`Vars`]: `VarsFn(|name| lookup(name))`.
pub struct VarsFn<F>(pub F);

impl<F: Fn(&str) -> Option<String>> Vars for VarsFn<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }
}

/// The result of expanding one word.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expanded {
    /// The expanded word, quotes removed.
    pub value: String,
    /// Every variable name the word looked up, set or not (for cache keys
    /// and for the "undefined variable" warning).
    pub used: BTreeSet<String>,
}

/// An expansion failure with BuildKit's message and where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {message}")]
pub struct ExpandError {
    /// What went wrong, e.g. `syntax error: missing '}'` or `V: is not
    /// allowed to be unset`.
    pub message: String,
    /// Byte offset in the word of the construct that failed: the `$` of the
    /// expansion, or the opening quote of an unterminated string.
    pub offset: usize,
    /// The word that was being expanded.
    pub word: String,
}

/// Expands one word (ENV value, WORKDIR, a COPY source, a flag value…):
/// variables substituted, quotes removed, escapes applied. Whitespace is
/// kept.
pub fn expand_word(word: &str, vars: &dyn Vars, escape: char) -> Result<Expanded, ExpandError> {
    let mut lexer = Lexer::new(word, vars, escape, false);
    let (value, _) = lexer.run(word)?;
    Ok(Expanded {
        value,
        used: lexer.used,
    })
}

/// Expands and splits into words on whitespace that is neither quoted nor
/// escaped, the way EXPOSE, and the shell form of COPY/ADD/VOLUME, see their
/// arguments. Whitespace coming from a variable's value splits too; empty
/// words (`''`) vanish.
pub fn expand_words(word: &str, vars: &dyn Vars, escape: char) -> Result<Vec<String>, ExpandError> {
    let mut lexer = Lexer::new(word, vars, escape, false);
    let (_, words) = lexer.run(word)?;
    Ok(words)
}

/// [`expand_words`] that also reports the variables used.
pub fn expand_words_used(
    word: &str,
    vars: &dyn Vars,
    escape: char,
) -> Result<(Vec<String>, BTreeSet<String>), ExpandError> {
    let mut lexer = Lexer::new(word, vars, escape, false);
    let (_, words) = lexer.run(word)?;
    Ok((words, lexer.used))
}

/// Expands a COPY/ADD heredoc body whose delimiter was not quoted. Quotes
/// are ordinary characters here, but `$` expansions happen and the escape
/// character still escapes the next character and is removed (BuildKit
/// turns `printf "a\nb"` into `printf "anb"`). BuildKit always uses `\` for
/// heredoc bodies whatever the `# escape=` directive says, so pass `'\\'`
/// to build the same image. RUN heredocs are not expanded by the builder at
/// all: the shell does it.
pub fn expand_heredoc(body: &str, vars: &dyn Vars, escape: char) -> Result<String, ExpandError> {
    expand_heredoc_used(body, vars, escape).map(|e| e.value)
}

/// [`expand_heredoc`] that also reports the variables used.
pub fn expand_heredoc_used(
    body: &str,
    vars: &dyn Vars,
    escape: char,
) -> Result<Expanded, ExpandError> {
    let mut lexer = Lexer::new(body, vars, escape, true);
    let (value, _) = lexer.run(body)?;
    Ok(Expanded {
        value,
        used: lexer.used,
    })
}

/// Whether BuildKit expands variables in an instruction's arguments
/// (keyword in any case).
///
/// | instruction | what is expanded |
/// |---|---|
/// | `FROM` | the image and `--platform`, against the global ARGs only |
/// | `ARG` | the default value, only when no build arg overrides it |
/// | `ENV`, `LABEL` | keys and values |
/// | `WORKDIR`, `USER`, `STOPSIGNAL`, `VOLUME` | the argument(s) |
/// | `EXPOSE` | the words, which are then split again on whitespace |
/// | `COPY`, `ADD` | sources, destination, `--chown`, `--chmod`, ADD's `--checksum`, heredoc bodies with an unquoted delimiter (see [`expand_heredoc`]) |
/// | `RUN` | only the `--mount` option values (never the command) |
/// | not at all | `CMD`, `ENTRYPOINT`, `SHELL`, `HEALTHCHECK`, `MAINTAINER`, `ONBUILD` (the trigger is stored as written and expanded when it fires in a child build) |
///
/// `RUN` answers true because of its `--mount` flag; use
/// [`flag_expansion`] for the flags and never expand the command itself.
pub fn expands(keyword: &str) -> bool {
    matches!(
        keyword.to_ascii_uppercase().as_str(),
        "FROM"
            | "ARG"
            | "ENV"
            | "LABEL"
            | "WORKDIR"
            | "USER"
            | "STOPSIGNAL"
            | "VOLUME"
            | "EXPOSE"
            | "COPY"
            | "ADD"
            | "RUN"
    )
}

/// Whether the positional arguments (not the flags) of an instruction are
/// expanded: [`expands`] minus `RUN`, whose command goes to the shell
/// untouched.
pub fn expands_arguments(keyword: &str) -> bool {
    expands(keyword) && !keyword.eq_ignore_ascii_case("RUN")
}

/// How an instruction flag's value is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagExpansion {
    /// Expanded with [`expand_word`] before use.
    Expanded,
    /// Used exactly as written.
    Literal,
    /// Must not contain variables: BuildKit fails the build if it sees a
    /// `$` (`COPY --from`, and `from=` inside `RUN --mount`). The message
    /// is in [`from_variable_error`].
    NoVariables,
}

/// The treatment of `--flag` (given without dashes, e.g. `"chown"`) on an
/// instruction, as BuildKit does it.
pub fn flag_expansion(keyword: &str, flag: &str) -> FlagExpansion {
    let keyword = keyword.to_ascii_uppercase();
    let flag = flag.trim_start_matches('-');
    match (keyword.as_str(), flag) {
        ("FROM", "platform") => FlagExpansion::Expanded,
        ("COPY" | "ADD", "chown" | "chmod") => FlagExpansion::Expanded,
        ("ADD", "checksum") => FlagExpansion::Expanded,
        ("COPY" | "ADD", "from") => FlagExpansion::NoVariables,
        // Each option value of a mount is expanded except `from=`, which
        // the mount parser must check with `FlagExpansion::NoVariables`.
        ("RUN", "mount") => FlagExpansion::Expanded,
        _ => FlagExpansion::Literal,
    }
}

/// BuildKit's error for a variable in a `--from` value.
pub fn from_variable_error(keyword: &str) -> String {
    if keyword.eq_ignore_ascii_case("RUN") {
        "'from' doesn't support variable expansion, define alias stage instead".to_string()
    } else {
        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround".to_string()
    }
}

/// An error before it is tied to the word.
struct LexError {
    message: String,
    offset: usize,
}

fn lex_err(message: impl Into<String>, offset: usize) -> LexError {
    LexError {
        message: message.into(),
        offset,
    }
}

/// Word splitting state, mirroring how BuildKit accumulates words: quoted
/// and escaped text never splits, expanded text splits on whitespace, and
/// an empty quoted string does not make a word.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct Lexer<'a> {
    chars: Vec<(usize, char)>,
    len: usize,
    pos: usize,
    vars: &'a dyn Vars,
    escape: char,
    /// Heredoc mode: quotes are ordinary characters.
    skip_quotes: bool,
    /// Keep escape characters in the output (inside `${V#…}` patterns and
    /// `${V/…/…}`).
    raw_escapes: bool,
    used: BTreeSet<String>,
}

impl<'a> Lexer<'a> {
    fn new(word: &str, vars: &'a dyn Vars, escape: char, skip_quotes: bool) -> Self {
        Lexer {
            chars: word.char_indices().collect(),
            len: word.len(),
            pos: 0,
            vars,
            escape,
            skip_quotes,
            raw_escapes: false,
            used: BTreeSet::new(),
        }
    }

    fn run(&mut self, word: &str) -> Result<(String, Vec<String>), ExpandError> {
        self.process_stop_on(None, false).map_err(|e| ExpandError {
            message: e.message,
            offset: e.offset,
            word: word.to_string(),
        })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Byte offset of the next character (the word length at the end).
    fn offset(&self) -> usize {
        self.chars.get(self.pos).map_or(self.len, |&(o, _)| o)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        self.used.insert(name.to_string());
        self.vars.get(name)
    }

    /// Processes until `stop` (consumed) or the end of the word. Returns the
    /// text and its split words.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), LexError> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let result = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), LexError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            if ch == '$' {
                let value = self.process_dollar()?;
                result.push_str(&value);
                words.add_string(&value);
                continue;
            }
            if !self.skip_quotes && (ch == '\'' || ch == '"') {
                let value = if ch == '\'' {
                    self.process_single_quote()?
                } else {
                    self.process_double_quote()?
                };
                result.push_str(&value);
                words.add_raw_string(&value);
                continue;
            }
            self.next();
            if ch == self.escape {
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                match self.next() {
                    // A trailing escape character is dropped.
                    None => break,
                    Some(escaped) => {
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    }
                }
            } else {
                words.add_char(ch);
                result.push(ch);
            }
        }
        match stop {
            Some(s) => Err(lex_err(
                format!("unexpected end of statement while looking for matching {s}"),
                self.len,
            )),
            None => Ok((result, words.finish())),
        }
    }

    fn process_single_quote(&mut self) -> Result<String, LexError> {
        let start = self.offset();
        self.next();
        let mut result = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(lex_err(
                        "unexpected end of statement while looking for matching single-quote",
                        start,
                    ))
                }
                Some('\'') => return Ok(result),
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, LexError> {
        let start = self.offset();
        self.next();
        let mut result = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(lex_err(
                        "unexpected end of statement while looking for matching double-quote",
                        start,
                    ))
                }
                Some('"') => {
                    self.next();
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(ch) => {
                    self.next();
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // Nothing to escape: the next turn reports the
                            // missing closing quote.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.next();
                                result.push(next);
                            }
                            // Not an escape: the escape character stays
                            // (twice in raw mode, as in BuildKit, which
                            // inside a pattern means a literal backslash).
                            Some(_) => result.push(ch),
                        }
                    } else {
                        result.push(ch);
                    }
                }
            }
        }
    }

    /// Reads a variable name: a run of digits, one special parameter
    /// character, or letters/digits/underscores.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                name.push(ch);
                return name;
            }
            if !(ch.is_alphanumeric() || ch == '_') {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, LexError> {
        let start = self.offset();
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.next();
        match self.peek() {
            None => return Err(lex_err("syntax error: missing '}'", start)),
            Some('{' | '}' | ':') => return Err(lex_err("syntax error: bad substitution", start)),
            Some(_) => {}
        }
        let name = self.process_name();
        match self.next() {
            None => Err(lex_err("syntax error: missing '}'", start)),
            Some('}') => Ok(self.lookup(&name).unwrap_or_default()),
            Some(':') => {
                let modifier = self.next();
                self.process_modifier(&name, modifier, true, start)
            }
            Some(c @ ('+' | '-' | '?' | '#' | '%')) => {
                self.process_modifier(&name, Some(c), false, start)
            }
            Some('/') => self.process_replace(&name, start),
            Some(c) => Err(lex_err(
                format!("unsupported modifier ({c}) in substitution"),
                start,
            )),
        }
    }

    /// Reads the word of a `${…}` up to `stop`; a failure at the end of
    /// input becomes `missing_message` at the `$`.
    fn read_part(
        &mut self,
        stop: char,
        raw: bool,
        missing_message: &str,
        start: usize,
    ) -> Result<String, LexError> {
        match self.process_stop_on(Some(stop), raw) {
            Ok((text, _)) => Ok(text),
            Err(_) if self.at_end() => Err(lex_err(missing_message, start)),
            Err(e) => Err(e),
        }
    }

    fn process_modifier(
        &mut self,
        name: &str,
        modifier: Option<char>,
        null_is_unset: bool,
        start: usize,
    ) -> Result<String, LexError> {
        let Some(ch) = modifier else {
            return Err(lex_err("syntax error: missing '}'", start));
        };
        let shown = if null_is_unset {
            format!(":{ch}")
        } else {
            ch.to_string()
        };
        let raw = ch == '#' || ch == '%';
        if null_is_unset && raw {
            return Err(lex_err(
                format!("unsupported modifier ({shown}) in substitution"),
                start,
            ));
        }
        let word = self.read_part('}', raw, "syntax error: missing '}'", start)?;
        let value = self.lookup(name);
        let unset_or_null = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match ch {
            '-' => Ok(if unset_or_null {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if unset_or_null { String::new() } else { word }),
            '?' => match value {
                None => {
                    let message = if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        word.as_str()
                    };
                    Err(lex_err(format!("{name}: {message}"), start))
                }
                Some(v) if null_is_unset && v.is_empty() => {
                    let message = if word.is_empty() {
                        "is not allowed to be empty"
                    } else {
                        word.as_str()
                    };
                    Err(lex_err(format!("{name}: {message}"), start))
                }
                Some(v) => Ok(v),
            },
            '#' | '%' => {
                let (greedy, pattern) = match word.strip_prefix(ch) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let glob =
                    ShellGlob::compile(pattern).map_err(|e| invalid_pattern(pattern, &e, start))?;
                let value: Vec<char> = value.unwrap_or_default().chars().collect();
                Ok(if ch == '#' {
                    glob.trim_prefix(&value, greedy)
                } else {
                    glob.trim_suffix(&value, greedy)
                })
            }
            _ => Err(lex_err(
                format!("unsupported modifier ({shown}) in substitution"),
                start,
            )),
        }
    }

    fn process_replace(&mut self, name: &str, start: usize) -> Result<String, LexError> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.next();
        }
        let pattern = self.read_part('/', true, "syntax error: missing '/' in ${}", start)?;
        let replacement = self.read_part('}', true, "syntax error: missing '}'", start)?;
        let value: Vec<char> = self.lookup(name).unwrap_or_default().chars().collect();
        let glob =
            ShellGlob::compile(&pattern).map_err(|e| invalid_pattern(&pattern, &e, start))?;
        Ok(glob.replace(&value, &replacement, replace_all))
    }
}

fn invalid_pattern(pattern: &str, err: &GlobEscapeError, start: usize) -> LexError {
    lex_err(
        format!("invalid pattern ({pattern}) in substitution: {err}"),
        start,
    )
}

/// One element of a `${V#…}` pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobTok {
    Lit(char),
    /// `?`: any one character but a newline.
    One,
    /// `*`: any run of characters without a newline.
    Star,
}

/// A `${V#…}`/`${V/…}` pattern with a backslash that escapes nothing the
/// pattern language knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum GlobEscapeError {
    /// `\c` where `c` is not `*`, `?`, a backslash, `}` or `/`.
    #[error("invalid escape '\\{0}'")]
    Unknown(char),
    /// A lone `\` ending the pattern.
    #[error("invalid escape '\\' at end of pattern")]
    AtEnd,
}

/// A compiled `${V#…}`/`${V/…}` pattern, matched by simulating its
/// automaton so no input can make matching exponential.
struct ShellGlob {
    toks: Vec<GlobTok>,
}

impl ShellGlob {
    fn compile(pattern: &str) -> Result<ShellGlob, GlobEscapeError> {
        let mut toks = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(ch) = chars.next() {
            match ch {
                '*' => toks.push(GlobTok::Star),
                '?' => toks.push(GlobTok::One),
                '\\' => match chars.peek().copied() {
                    // `\}` and `\/` only protect the character from ending
                    // the `${…}`; the backslash is not part of the pattern.
                    Some('}' | '/') => {}
                    Some(c @ ('*' | '?' | '\\')) => {
                        chars.next();
                        toks.push(GlobTok::Lit(c));
                    }
                    Some(c) => return Err(GlobEscapeError::Unknown(c)),
                    None => return Err(GlobEscapeError::AtEnd),
                },
                c => toks.push(GlobTok::Lit(c)),
            }
        }
        Ok(ShellGlob { toks })
    }

    fn reversed(&self) -> ShellGlob {
        ShellGlob {
            toks: self.toks.iter().rev().copied().collect(),
        }
    }

    /// Adds state `k` and what it reaches without input.
    fn add_state(&self, set: &mut [bool], mut k: usize) {
        loop {
            let Some(slot) = set.get_mut(k) else { return };
            *slot = true;
            match self.toks.get(k) {
                Some(GlobTok::Star) => k += 1,
                _ => return,
            }
        }
    }

    /// The ends `e` (indices into `text`) such that `text[start..e]`
    /// matches the whole pattern, in increasing order.
    fn match_ends(&self, text: &[char], start: usize) -> Vec<usize> {
        let n = self.toks.len();
        let mut ends = Vec::new();
        let mut current = vec![false; n + 1];
        self.add_state(&mut current, 0);
        let mut pos = start;
        loop {
            if current.get(n).copied().unwrap_or(false) {
                ends.push(pos);
            }
            let Some(&c) = text.get(pos) else { break };
            let mut next = vec![false; n + 1];
            let mut alive = false;
            for (k, tok) in self.toks.iter().enumerate() {
                if !current.get(k).copied().unwrap_or(false) {
                    continue;
                }
                match *tok {
                    GlobTok::Lit(l) if l == c => {
                        self.add_state(&mut next, k + 1);
                        alive = true;
                    }
                    GlobTok::One if c != '\n' => {
                        self.add_state(&mut next, k + 1);
                        alive = true;
                    }
                    GlobTok::Star if c != '\n' => {
                        self.add_state(&mut next, k);
                        alive = true;
                    }
                    _ => {}
                }
            }
            if !alive {
                break;
            }
            current = next;
            pos += 1;
        }
        ends
    }

    fn trim_prefix(&self, value: &[char], greedy: bool) -> String {
        let ends = self.match_ends(value, 0);
        let cut = if greedy { ends.last() } else { ends.first() };
        let cut = cut.copied().unwrap_or(0);
        value.get(cut..).unwrap_or_default().iter().collect()
    }

    fn trim_suffix(&self, value: &[char], greedy: bool) -> String {
        let reversed: Vec<char> = value.iter().rev().copied().collect();
        let mut kept: Vec<char> = self
            .reversed()
            .trim_prefix(&reversed, greedy)
            .chars()
            .collect();
        kept.reverse();
        kept.into_iter().collect()
    }

    /// Marks state `k` (and what it reaches without input) as reached by
    /// a match attempt that started at `start`, keeping the leftmost start.
    fn add_thread(&self, set: &mut [Option<usize>], mut k: usize, start: usize) {
        loop {
            let Some(slot) = set.get_mut(k) else { return };
            match slot {
                Some(existing) if *existing <= start => return,
                _ => *slot = Some(start),
            }
            match self.toks.get(k) {
                Some(GlobTok::Star) => k += 1,
                _ => return,
            }
        }
    }

    /// The leftmost match at or after `from`, longest at that start, in
    /// one pass: every state remembers the leftmost start reaching it
    /// (the state alone decides the future, so a later start in the same
    /// state can never do better).
    fn find(&self, text: &[char], from: usize) -> Option<(usize, usize)> {
        let n = self.toks.len();
        let mut best: Option<(usize, usize)> = None;
        let mut current: Vec<Option<usize>> = vec![None; n + 1];
        let mut pos = from;
        loop {
            if best.is_none() && pos <= text.len() {
                self.add_thread(&mut current, 0, pos);
            }
            if let Some(Some(s)) = current.get(n) {
                if best.is_none_or(|(bs, _)| *s <= bs) {
                    best = Some((*s, pos));
                }
            }
            if let Some((bs, _)) = best {
                for slot in current.iter_mut() {
                    if slot.is_some_and(|s| s > bs) {
                        *slot = None;
                    }
                }
            }
            let Some(&c) = text.get(pos) else { break };
            let mut next: Vec<Option<usize>> = vec![None; n + 1];
            for (k, tok) in self.toks.iter().enumerate() {
                let Some(Some(start)) = current.get(k).copied() else {
                    continue;
                };
                match *tok {
                    GlobTok::Lit(l) if l == c => self.add_thread(&mut next, k + 1, start),
                    GlobTok::One if c != '\n' => self.add_thread(&mut next, k + 1, start),
                    GlobTok::Star if c != '\n' => self.add_thread(&mut next, k, start),
                    _ => {}
                }
            }
            current = next;
            pos += 1;
            if best.is_some() && current.iter().all(Option::is_none) {
                break;
            }
        }
        best
    }

    /// `${V/p/r}` and `${V//p/r}`. Replace-all follows Go's regexp rules:
    /// matches do not overlap, and an empty match right after a previous
    /// match is not replaced.
    fn replace(&self, value: &[char], replacement: &str, all: bool) -> String {
        let mut out = String::new();
        if !all {
            return match self.find(value, 0) {
                Some((s, e)) => {
                    out.extend(value.get(..s).unwrap_or_default());
                    out.push_str(replacement);
                    out.extend(value.get(e..).unwrap_or_default());
                    out
                }
                None => value.iter().collect(),
            };
        }
        let mut last_end = 0;
        let mut search = 0;
        while search <= value.len() {
            let Some((s, e)) = self.find(value, search) else {
                break;
            };
            out.extend(value.get(last_end..s).unwrap_or_default());
            if e > last_end || s == 0 {
                out.push_str(replacement);
            }
            last_end = e;
            search = if search + 1 > e { search + 1 } else { e };
        }
        out.extend(value.get(last_end..).unwrap_or_default());
        out
    }
}
