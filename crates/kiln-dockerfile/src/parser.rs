//! The Dockerfile parser: text in, [`Dockerfile`] out, with the syntax
//! BuildKit's Dockerfile frontend accepts.
//!
//! It owns, in file order:
//! - parser directives (`# syntax=`, `# escape=`, `# check=`) at the top;
//! - logical lines: continuations with the escape character, comment and
//!   blank lines skipped inside continuations, comments only at line start;
//! - instruction keywords (case-insensitive), `--flag[=value]` words checked
//!   against each instruction's allowed set;
//! - exec (JSON) vs shell form, falling back to shell form for anything that
//!   is not a whole JSON array of strings;
//! - heredoc bodies after RUN / COPY / ADD (and ONBUILD of those);
//! - each instruction's argument rules and messages.
//!
//! No I/O; every error is a [`ParseError`] at the line and column of the
//! fault. Values stay unexpanded (see [`crate::ast`]).

mod args;
mod flags;
pub(crate) mod lexer;

use crate::ast::*;
use crate::error::ParseError;
use crate::mount;
use args::{command, healthcheck, json_or_list, name_values};
use flags::{no_flags, parse_flags, FlagKind};
pub use lexer::{heredoc_opener, parse_go_duration, DurationError, HeredocOpener};
use lexer::{Json, Line, Range, Word};

/// Instruction keywords, upper case.
const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A fault before the file name and source line are attached.
#[derive(Debug)]
struct Fault {
    at: Span,
    message: String,
}

fn fault(at: Span, message: impl Into<String>) -> Fault {
    Fault {
        at,
        message: message.into(),
    }
}

type Res<T> = Result<T, Fault>;

/// Parses a Dockerfile. `file` is the name shown in errors.
pub fn parse(file: &str, text: &str) -> Result<Dockerfile, ParseError> {
    let lines = split_lines(text);
    parse_lines(&lines).map_err(|f| {
        let source_line =
            f.at.line
                .checked_sub(1)
                .and_then(|i| lines.get(i))
                .map(|l| clean(l).to_string())
                .unwrap_or_default();
        ParseError {
            file: file.to_string(),
            line: f.at.line,
            column: f.at.column,
            message: f.message,
            source_line,
        }
    })
}

/// Physical lines, `\n` separated, a leading byte-order mark removed. The
/// `\r` of CRLF endings stays: heredoc bodies keep it, as Docker does;
/// everything else reads the line through [`clean`].
fn split_lines(text: &str) -> Vec<&str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    lines
}

/// Reads the parser directives at the top of the file. Directive parsing
/// stops at the first line that is not a known directive (an instruction,
/// a plain comment, an unknown directive or an empty line).
fn parse_directives(lines: &[&str]) -> Res<Directives> {
    let mut d = Directives::default();
    let mut seen_escape = false;
    for (n, raw) in lines.iter().enumerate() {
        let raw = clean(raw);
        let col = raw.chars().take_while(|c| c.is_whitespace()).count() + 1;
        let trimmed = raw.trim_start();
        let Some((key, value)) = directive(trimmed) else {
            break;
        };
        let at = Span {
            line: n + 1,
            column: col,
        };
        let lower = key.to_ascii_lowercase();
        let dup = || fault(at, format!("only one {lower} parser directive can be used"));
        match lower.as_str() {
            "syntax" => {
                if d.syntax.is_some() {
                    return Err(dup());
                }
                d.syntax = Some(value.to_string());
            }
            "check" => {
                if d.check.is_some() {
                    return Err(dup());
                }
                d.check = Some(value.to_string());
            }
            "escape" => {
                if seen_escape {
                    return Err(dup());
                }
                seen_escape = true;
                d.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(fault(
                            at,
                            format!("invalid escape token '{other}' does not match ` or \\"),
                        ))
                    }
                };
            }
            _ => break,
        }
    }
    Ok(d)
}

/// Matches `#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let key_end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let (key, rest) = rest.split_at(key_end);
    if !key.chars().next()?.is_ascii_alphabetic() {
        return None;
    }
    let value = rest.trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((key, value))
}

/// A line without its trailing carriage returns.
fn clean(raw: &str) -> &str {
    raw.trim_end_matches('\r')
}

fn is_comment(raw: &str) -> bool {
    raw.trim_start().starts_with('#')
}

/// The length of the line once a trailing escape character (and blanks
/// after it) is removed, or `None` when the line does not continue.
fn continuation(chars: &[char], escape: char) -> Option<usize> {
    let mut end = chars.len();
    while end > 0 && matches!(chars.get(end - 1), Some(' ' | '\t')) {
        end -= 1;
    }
    // An escape character escaped by another one does not continue the
    // line (`echo a\\`), as in Docker.
    let k = end.checked_sub(1)?;
    let before = k.checked_sub(1).and_then(|b| chars.get(b));
    (chars.get(k) == Some(&escape) && before != Some(&escape)).then_some(k)
}

fn parse_lines(lines: &[&str]) -> Res<Dockerfile> {
    let directives = parse_directives(lines)?;
    let escape = directives.escape;
    let mut instructions = Vec::new();
    let mut seen_from = false;
    let mut n = 0;
    while n < lines.len() {
        let raw = clean(lines.get(n).copied().unwrap_or_default());
        n += 1;
        let lead = raw.chars().take_while(|c| c.is_whitespace()).count();
        let first: Vec<char> = raw.chars().skip(lead).collect();
        if first.is_empty() || first.first() == Some(&'#') {
            continue;
        }
        // Join the logical line.
        let mut line = Line::default();
        let mut ended = append(&mut line, &first, n, lead + 1, escape);
        while !ended && n < lines.len() {
            let raw = clean(lines.get(n).copied().unwrap_or_default());
            n += 1;
            if is_comment(raw) || raw.trim_start().is_empty() {
                continue;
            }
            let chars: Vec<char> = raw.chars().collect();
            ended = append(&mut line, &chars, n, 1, escape);
        }
        let whole = line.trim(Range {
            start: 0,
            end: line.chars.len(),
        });
        let mut heredocs_read = Vec::new();
        let head = split_instruction(&line, whole)?;
        // Heredoc bodies follow the instruction's last line.
        if let Some(openers) = heredoc_openers(&line, whole, &head) {
            for (opener, at) in openers {
                let mut content = String::new();
                let mut terminated = false;
                while n < lines.len() {
                    let body = lines.get(n).copied().unwrap_or_default();
                    n += 1;
                    let candidate = if opener.strip_tabs {
                        clean(body).trim_start_matches('\t')
                    } else {
                        clean(body)
                    };
                    if candidate == opener.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(if opener.strip_tabs {
                        body.trim_start_matches('\t')
                    } else {
                        body
                    });
                    content.push('\n');
                }
                if !terminated {
                    return Err(fault(
                        line.span(at),
                        format!("unterminated heredoc {}", opener.name),
                    ));
                }
                heredocs_read.push(Heredoc {
                    name: opener.name,
                    content,
                    strip_tabs: opener.strip_tabs,
                    expand: opener.expand,
                });
            }
        }
        let instruction = build(&line, whole, &head, heredocs_read, escape)?;
        match instruction.kind {
            InstructionKind::From(_) => seen_from = true,
            InstructionKind::Arg(_) => {}
            _ if !seen_from => {
                return Err(fault(instruction.span, "no build stage in current context"))
            }
            _ => {}
        }
        instructions.push(instruction);
    }
    let Some(first) = instructions.first() else {
        return Err(fault(
            Span { line: 1, column: 1 },
            "file with no instructions",
        ));
    };
    if !seen_from {
        return Err(fault(first.span, "dockerfile contains no stages to build"));
    }
    Ok(Dockerfile {
        directives,
        instructions,
    })
}

/// Appends one physical line's characters; returns whether the logical
/// line ends here (no trailing escape character).
fn append(line: &mut Line, chars: &[char], lineno: usize, first_col: usize, escape: char) -> bool {
    let (keep, ended) = match continuation(chars, escape) {
        Some(k) => (k, false),
        None => (chars.len(), true),
    };
    for (i, c) in chars.iter().take(keep).enumerate() {
        line.push(
            *c,
            Span {
                line: lineno,
                column: first_col + i,
            },
        );
    }
    if keep == 0 {
        line.end = Span {
            line: lineno,
            column: first_col,
        };
    }
    ended
}

/// An instruction split into keyword, flags and argument range.
struct Head {
    keyword: String,
    at: Span,
    flags: Vec<Word>,
    args: Range,
}

fn split_instruction(line: &Line, r: Range) -> Res<Head> {
    let mut k = r.start;
    while k < r.end && !line.at(k).is_some_and(lexer::is_split_space) {
        k += 1;
    }
    let keyword = line.text(Range {
        start: r.start,
        end: k,
    });
    let (flags, args_start) = lexer::extract_flags(
        line,
        Range {
            start: k,
            end: r.end,
        },
    );
    let args = line.trim(Range {
        start: args_start,
        end: r.end,
    });
    Ok(Head {
        keyword,
        at: line.span(r.start),
        flags,
        args,
    })
}

/// The heredoc openers of an instruction that may carry heredocs (RUN, COPY,
/// ADD, or ONBUILD of one of those, in shell form), with the index of each
/// opener's `<<`.
fn heredoc_openers(line: &Line, whole: Range, head: &Head) -> Option<Vec<(HeredocOpener, usize)>> {
    let upper = head.keyword.to_ascii_uppercase();
    let (args, whole) = if upper == "ONBUILD" {
        let inner = split_instruction(line, head.args).ok()?;
        let inner_upper = inner.keyword.to_ascii_uppercase();
        if !matches!(inner_upper.as_str(), "RUN" | "COPY" | "ADD") {
            return None;
        }
        (inner.args, head.args)
    } else if matches!(upper.as_str(), "RUN" | "COPY" | "ADD") {
        (head.args, whole)
    } else {
        return None;
    };
    if !matches!(lexer::parse_json_array(&line.text(args)), Json::No) {
        return None;
    }
    if !line.text(whole).contains("<<") {
        return None;
    }
    let openers: Vec<_> = lexer::shell_words(line, whole)
        .into_iter()
        .filter_map(|w| {
            let lt = w.text.find("<<").map(|b| w.text[..b].chars().count())?;
            heredoc_opener(&w.text).map(|o| (o, w.at + lt))
        })
        .collect();
    Some(openers)
}

/// Builds the typed instruction once its heredoc bodies are known.
fn build(
    line: &Line,
    whole: Range,
    head: &Head,
    heredocs: Vec<Heredoc>,
    escape: char,
) -> Res<Instruction> {
    let upper = head.keyword.to_ascii_uppercase();
    let at = head.at;
    let args_text = line.text(head.args);
    use FlagKind::*;
    let kind = match upper.as_str() {
        "FROM" => {
            let flags = parse_flags(line, &head.flags, &[("platform", String)])?;
            let words = lexer::split_whitespace(line, head.args);
            let name = match words.as_slice() {
                [_] => None,
                [_, as_kw, name] if as_kw.text.eq_ignore_ascii_case("as") => {
                    let lower = name.text.to_lowercase();
                    if !valid_stage_name(&lower) {
                        return Err(fault(
                            line.span(name.at),
                            format!(
                                "invalid name for build stage: {}, name can't start with a number or contain symbols",
                                lexer::go_quote(&name.text)
                            ),
                        ));
                    }
                    Some(lower)
                }
                _ => {
                    return Err(fault(at, "FROM requires either one or three arguments"));
                }
            };
            InstructionKind::From(From {
                image: words.first().map(|w| w.text.clone()).unwrap_or_default(),
                name,
                platform: flags.non_empty("platform"),
            })
        }
        "RUN" => {
            let flags = parse_flags(
                line,
                &head.flags,
                &[
                    ("mount", Strings),
                    ("network", String),
                    ("security", String),
                ],
            )?;
            let mounts = flags.strings("mount");
            for (m, span) in &mounts {
                if !m.contains('$') {
                    mount::parse_mount(m).map_err(|e| fault(*span, e.to_string()))?;
                }
            }
            let network = flags.string("network");
            if let Some(v) = &network {
                if !v.contains('$') && !matches!(v.as_str(), "default" | "none" | "host") {
                    return Err(fault(
                        flags.span("network").unwrap_or(at),
                        format!("unsupported network mode {}", lexer::go_quote(v)),
                    ));
                }
            }
            let security = flags.string("security");
            if let Some(v) = &security {
                if !v.contains('$') && !matches!(v.as_str(), "sandbox" | "insecure") {
                    return Err(fault(
                        flags.span("security").unwrap_or(at),
                        format!("unsupported security mode {}", lexer::go_quote(v)),
                    ));
                }
            }
            let command = command(line, head.args)?;
            InstructionKind::Run(Run {
                heredocs: if matches!(command, Command::Shell(_)) {
                    heredocs
                } else {
                    Vec::new()
                },
                command,
                mounts: mounts.into_iter().map(|(m, _)| m).collect(),
                network,
                security,
            })
        }
        "CMD" => {
            no_flags(line, head)?;
            InstructionKind::Cmd(command(line, head.args)?)
        }
        "ENTRYPOINT" => {
            no_flags(line, head)?;
            InstructionKind::Entrypoint(command(line, head.args)?)
        }
        "SHELL" => {
            no_flags(line, head)?;
            match command(line, head.args)? {
                Command::Exec(v) if v.is_empty() => {
                    return Err(fault(at, "SHELL requires at least one argument"))
                }
                Command::Exec(v) => InstructionKind::Shell(v),
                Command::Shell(s) if s.is_empty() => {
                    return Err(fault(at, "SHELL requires at least one argument"))
                }
                Command::Shell(_) => {
                    return Err(fault(
                        line.span(head.args.start),
                        "SHELL requires the arguments to be in JSON form",
                    ))
                }
            }
        }
        "LABEL" | "ENV" => {
            let pairs = name_values(line, head.args, &upper, escape)?;
            no_flags(line, head)?;
            if pairs.is_empty() {
                return Err(fault(at, format!("{upper} requires at least one argument")));
            }
            if upper == "ENV" {
                InstructionKind::Env(pairs)
            } else {
                InstructionKind::Label(pairs)
            }
        }
        "ARG" => {
            let words = lexer::parse_words(line, head.args, escape);
            if words.is_empty() {
                return Err(fault(at, "ARG requires at least one argument"));
            }
            no_flags(line, head)?;
            let mut decls = Vec::with_capacity(words.len());
            for w in words {
                let decl = match w.text.split_once('=') {
                    Some(("", _)) => {
                        return Err(fault(line.span(w.at), "ARG names can not be blank"))
                    }
                    Some((k, v)) => ArgDecl {
                        name: k.to_string(),
                        default: Some(v.to_string()),
                    },
                    None => ArgDecl {
                        name: w.text,
                        default: None,
                    },
                };
                decls.push(decl);
            }
            InstructionKind::Arg(decls)
        }
        "MAINTAINER" | "USER" | "WORKDIR" | "STOPSIGNAL" => {
            if head.args.is_empty() {
                return Err(fault(at, format!("{upper} requires exactly one argument")));
            }
            // STOPSIGNAL never looks at its flags in Docker.
            if upper != "STOPSIGNAL" {
                no_flags(line, head)?;
            }
            match upper.as_str() {
                "MAINTAINER" => InstructionKind::Maintainer(args_text),
                "USER" => InstructionKind::User(args_text),
                "WORKDIR" => InstructionKind::Workdir(args_text),
                _ => InstructionKind::Stopsignal(args_text),
            }
        }
        "EXPOSE" => {
            let words = lexer::split_whitespace(line, head.args);
            if words.is_empty() {
                return Err(fault(at, "EXPOSE requires at least one argument"));
            }
            no_flags(line, head)?;
            InstructionKind::Expose(words.into_iter().map(|w| w.text).collect())
        }
        "VOLUME" => {
            let list = json_or_list(line, head.args)?;
            if list.items.is_empty() {
                return Err(fault(at, "VOLUME requires at least one argument"));
            }
            no_flags(line, head)?;
            let mut volumes = Vec::with_capacity(list.items.len());
            for v in list.items {
                let v = v.trim();
                if v.is_empty() {
                    return Err(fault(
                        line.span(head.args.start),
                        "VOLUME specified can not be an empty string",
                    ));
                }
                volumes.push(v.to_string());
            }
            InstructionKind::Volume(volumes)
        }
        "COPY" | "ADD" => {
            let list = json_or_list(line, head.args)?;
            if list.items.len() < 2 {
                return Err(fault(
                    at,
                    format!(
                        "{upper} requires at least two arguments, but only one was provided. Destination could not be determined"
                    ),
                ));
            }
            let flags = if upper == "COPY" {
                parse_flags(
                    line,
                    &head.flags,
                    &[
                        ("from", String),
                        ("chown", String),
                        ("chmod", String),
                        ("link", Bool),
                        ("parents", Bool),
                        ("exclude", Strings),
                    ],
                )?
            } else {
                parse_flags(
                    line,
                    &head.flags,
                    &[
                        ("chown", String),
                        ("chmod", String),
                        ("link", Bool),
                        ("exclude", Strings),
                        ("keep-git-dir", Bool),
                        ("checksum", String),
                        ("unpack", Bool),
                    ],
                )?
            };
            let mut items = list.items;
            let dest = items.pop().unwrap_or_default();
            if !list.json && heredoc_opener(&dest).is_some() {
                return Err(fault(
                    list.last_at.map(|i| line.span(i)).unwrap_or(at),
                    format!("{upper} cannot accept a heredoc as a destination"),
                ));
            }
            let c = CopyAdd {
                sources: items,
                dest,
                json_form: list.json,
                from: flags.non_empty("from"),
                chown: flags.non_empty("chown"),
                chmod: flags.non_empty("chmod"),
                link: flags.bool("link").unwrap_or(false),
                parents: flags.bool("parents").unwrap_or(false),
                exclude: flags
                    .strings("exclude")
                    .into_iter()
                    .map(|(v, _)| v)
                    .collect(),
                checksum: flags.non_empty("checksum"),
                keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
                unpack: flags.bool("unpack"),
                heredocs: if list.json { Vec::new() } else { heredocs },
            };
            if upper == "COPY" {
                InstructionKind::Copy(c)
            } else {
                InstructionKind::Add(c)
            }
        }
        "HEALTHCHECK" => healthcheck(line, head)?,
        "ONBUILD" => {
            if head.args.is_empty() {
                return Err(fault(at, "ONBUILD requires at least one argument"));
            }
            no_flags(line, head)?;
            let inner_head = split_instruction(line, head.args)?;
            let trigger = inner_head.keyword.to_ascii_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err(fault(
                        inner_head.at,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ))
                }
                "MAINTAINER" | "FROM" => {
                    return Err(fault(
                        inner_head.at,
                        format!("{trigger} isn't allowed as an ONBUILD trigger"),
                    ))
                }
                _ => {}
            }
            let mut inner = build(line, head.args, &inner_head, heredocs.clone(), escape)?;
            // The trigger stored in the image config carries its heredocs.
            for h in &heredocs {
                inner.original.push('\n');
                inner.original.push_str(&h.content);
                inner.original.push_str(&h.name);
            }
            InstructionKind::Onbuild(Box::new(inner))
        }
        _ => {
            let hint = lexer::suggest(&head.keyword, KEYWORDS, false)
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            return Err(fault(
                at,
                format!("unknown instruction: {}{hint}", head.keyword),
            ));
        }
    };
    Ok(Instruction {
        span: at,
        original: line.text(whole),
        kind,
    })
}

/// `^[a-z][a-z0-9-_.]*$`, checked on the lowercased name.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// What a RUN instruction executes once its heredocs are applied the way
/// BuildKit applies them (Linux images).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunScript {
    /// Exec form: run these arguments as they are.
    Exec(Vec<String>),
    /// Shell form: run the stage's `SHELL` followed by this one argument.
    Shell(String),
    /// `RUN <<EOF` whose body starts with `#!`: write `content` to a
    /// read-only file at `path` (`/dev/pipes/<name>`, mode 0755) and run the
    /// shell form `path`, so the kernel honours the shebang.
    ShebangFile { path: String, content: String },
}

/// Applies the heredoc convention documented on [`Run`]:
/// - no heredocs: the command as written;
/// - the command is only a heredoc opener: its body is the script (or a
///   `#!` file);
/// - otherwise the command text followed by `"\n" + body + name` for each
///   heredoc, handed to the shell, which reads them as real heredocs.
pub fn run_script(run: &Run) -> RunScript {
    let text = match &run.command {
        Command::Exec(v) => return RunScript::Exec(v.clone()),
        Command::Shell(s) => s,
    };
    let Some(first) = run.heredocs.first() else {
        return RunScript::Shell(text.clone());
    };
    if heredoc_opener(text.trim()).is_some() {
        if first.content.starts_with("#!") {
            return RunScript::ShebangFile {
                path: format!("/dev/pipes/{}", first.name),
                content: first.content.clone(),
            };
        }
        return RunScript::Shell(first.content.clone());
    }
    let mut full = text.clone();
    for h in &run.heredocs {
        full.push('\n');
        full.push_str(&h.content);
        full.push_str(&h.name);
    }
    RunScript::Shell(full)
}
