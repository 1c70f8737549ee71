//! Argument forms shared by instructions: exec vs shell commands, JSON or
//! word lists, `key=value` pairs (ENV, LABEL, ARG), and HEALTHCHECK.

use super::*;

/// RUN / CMD / ENTRYPOINT / SHELL arguments: exec form if they are a JSON
/// array of strings, shell form (the text as written) otherwise.
pub(super) fn command(line: &Line, args: Range) -> Res<Command> {
    let text = line.text(args);
    match lexer::parse_json_array(&text) {
        Json::Strings(v) => Ok(Command::Exec(v)),
        Json::NotStrings => Err(not_strings(line, args)),
        Json::No => Ok(Command::Shell(text)),
    }
}

pub(super) fn not_strings(line: &Line, args: Range) -> Fault {
    fault(
        line.span(args.start),
        "when using JSON array syntax, arrays must be comprised of strings only",
    )
}

pub(super) struct List {
    pub(super) items: Vec<String>,
    pub(super) json: bool,
    /// Index of the last item (shell form only).
    pub(super) last_at: Option<usize>,
}

/// COPY / ADD / VOLUME arguments: a JSON array, or whitespace-separated
/// words kept as written.
pub(super) fn json_or_list(line: &Line, args: Range) -> Res<List> {
    match lexer::parse_json_array(&line.text(args)) {
        Json::Strings(items) => Ok(List {
            items,
            json: true,
            last_at: None,
        }),
        Json::NotStrings => Err(not_strings(line, args)),
        Json::No => {
            let words = lexer::split_whitespace(line, args);
            Ok(List {
                last_at: words.last().map(|w| w.at),
                items: words.into_iter().map(|w| w.text).collect(),
                json: false,
            })
        }
    }
}

/// ENV and LABEL: `key value` (legacy, one pair, the value is the rest of
/// the line) when the first word has no `=`, else `k=v` words, quote-aware.
pub(super) fn name_values(
    line: &Line,
    args: Range,
    keyword: &str,
    escape: char,
) -> Res<Vec<KeyValue>> {
    let words = lexer::parse_words(line, args, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.text.contains('=') {
        let parts = lexer::split_whitespace(line, args);
        let Some(key) = parts.first() else {
            return Ok(Vec::new());
        };
        let Some(second) = parts.get(1) else {
            return Err(fault(
                line.span(args.start),
                format!("{keyword} must have two arguments"),
            ));
        };
        return Ok(vec![KeyValue {
            key: key.text.clone(),
            value: line.text(Range {
                start: second.at,
                end: args.end,
            }),
        }]);
    }
    let mut pairs = Vec::with_capacity(words.len());
    for w in &words {
        let Some((k, v)) = w.text.split_once('=') else {
            return Err(fault(
                line.span(w.at),
                format!(
                    "Syntax error - can't find = in {}. Must be of the form: name=value",
                    lexer::go_quote(&w.text)
                ),
            ));
        };
        if k.is_empty() {
            return Err(fault(
                line.span(w.at),
                format!("{keyword} names can not be blank"),
            ));
        }
        pairs.push(KeyValue {
            key: k.to_string(),
            value: v.to_string(),
        });
    }
    Ok(pairs)
}

pub(super) fn healthcheck(line: &Line, head: &Head) -> Res<InstructionKind> {
    let at = head.at;
    let args = head.args;
    // The type word, then the command (JSON or shell).
    let mut sep = args.start;
    while sep < args.end && !line.at(sep).is_some_and(char::is_whitespace) {
        sep += 1;
    }
    if sep == args.start {
        return Err(fault(at, "HEALTHCHECK requires at least one argument"));
    }
    let typ = line
        .text(Range {
            start: args.start,
            end: sep,
        })
        .to_uppercase();
    let rest = line.trim(Range {
        start: sep,
        end: args.end,
    });
    if typ == "NONE" {
        // Docker does not look at flags for HEALTHCHECK NONE.
        if !rest.is_empty() {
            return Err(fault(
                line.span(rest.start),
                "HEALTHCHECK NONE takes no arguments",
            ));
        }
        return Ok(InstructionKind::Healthcheck(Healthcheck::None));
    }
    use FlagKind::String;
    let flags = parse_flags(
        line,
        &head.flags,
        &[
            ("interval", String),
            ("timeout", String),
            ("start-period", String),
            ("start-interval", String),
            ("retries", String),
        ],
    )?;
    if typ != "CMD" {
        return Err(fault(
            line.span(args.start),
            format!(
                "Unknown type {} in HEALTHCHECK (try CMD)",
                lexer::go_quote(&typ)
            ),
        ));
    }
    let command = command(line, rest)?;
    let empty = match &command {
        Command::Exec(v) => v.is_empty(),
        Command::Shell(s) => s.is_empty(),
    };
    if empty {
        return Err(fault(
            line.span(args.start),
            "Missing command after HEALTHCHECK CMD",
        ));
    }
    let duration = |name: &str| -> Res<Option<std::string::String>> {
        let Some(v) = flags.string(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let span = flags.span(name).unwrap_or(at);
        let nanos = lexer::parse_go_duration(&v).map_err(|e| fault(span, e.to_string()))?;
        if nanos != 0 && nanos < 1_000_000 {
            return Err(fault(
                span,
                format!("Interval {} cannot be less than 1ms", lexer::go_quote(name)),
            ));
        }
        Ok(Some(v))
    };
    let interval = duration("interval")?;
    let timeout = duration("timeout")?;
    let start_period = duration("start-period")?;
    let start_interval = duration("start-interval")?;
    let retries = match flags.string("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => {
            let span = flags.span("retries").unwrap_or(at);
            let digits = v.strip_prefix(['+', '-']).unwrap_or(&v);
            let syntax_ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            let n = v.parse::<i64>().ok().filter(|n| i32::try_from(*n).is_ok());
            let Some(n) = n.filter(|_| syntax_ok) else {
                let why = if syntax_ok {
                    "value out of range"
                } else {
                    "invalid syntax"
                };
                return Err(fault(
                    span,
                    format!("strconv.ParseInt: parsing {}: {why}", lexer::go_quote(&v)),
                ));
            };
            if n < 0 {
                return Err(fault(span, format!("--retries cannot be negative ({n})")));
            }
            u32::try_from(n).ok()
        }
    };
    Ok(InstructionKind::Healthcheck(Healthcheck::Check {
        command,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}
