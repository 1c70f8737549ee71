//! Instruction flags (`--name[=value]` words before the arguments): the
//! allowed set per instruction, their kinds, and typed access to their values.

use super::*;

/// The type of an instruction flag.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FlagKind {
    Bool,
    String,
    /// Repeatable string.
    Strings,
}

/// Parsed flag values, by name.
#[derive(Default)]
pub(super) struct Flags {
    pub(super) values: Vec<(&'static str, Option<String>, Span)>,
}

impl Flags {
    pub(super) fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _, _)| *n == name)
            .and_then(|(_, v, _)| v.clone())
    }
    /// A string flag whose empty value means "not set", as Docker treats
    /// `--from=`, `--chown=`, `--platform=`.
    pub(super) fn non_empty(&self, name: &str) -> Option<String> {
        self.string(name).filter(|v| !v.is_empty())
    }
    pub(super) fn strings(&self, name: &str) -> Vec<(String, Span)> {
        self.values
            .iter()
            .filter(|(n, _, _)| *n == name)
            .filter_map(|(_, v, s)| v.clone().map(|v| (v, *s)))
            .collect()
    }
    pub(super) fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
    pub(super) fn span(&self, name: &str) -> Option<Span> {
        self.values
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, s)| *s)
    }
}

/// Checks flag words against the instruction's allowed set, with
/// Docker's messages.
pub(super) fn parse_flags(
    line: &Line,
    words: &[Word],
    allowed: &[(&'static str, FlagKind)],
) -> Res<Flags> {
    let mut flags = Flags::default();
    for w in words {
        let at = line.span(w.at);
        let body = w.text.strip_prefix("--").unwrap_or(&w.text);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some((canon, kind)) = allowed.iter().find(|(n, _)| *n == name).copied() else {
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            let hint = lexer::suggest(name, &names, true)
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            return Err(fault(at, format!("unknown flag: {name}{hint}")));
        };
        if kind != FlagKind::Strings && flags.span(canon).is_some() {
            return Err(fault(at, format!("duplicate flag specified: {name}")));
        }
        let value = match kind {
            FlagKind::Bool => match value {
                Some("") => return Err(fault(at, format!("missing a value on flag: {name}"))),
                None => "true".to_string(),
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true".to_string(),
                    "false" => "false".to_string(),
                    _ => {
                        return Err(fault(
                            at,
                            format!("expecting boolean value for flag {name}, not: {v}"),
                        ))
                    }
                },
            },
            FlagKind::String | FlagKind::Strings => match value {
                None => return Err(fault(at, format!("missing a value on flag: {name}"))),
                Some(v) => v.to_string(),
            },
        };
        flags.values.push((canon, Some(value), at));
    }
    Ok(flags)
}

pub(super) fn no_flags(line: &Line, head: &Head) -> Res<()> {
    parse_flags(line, &head.flags, &[]).map(|_| ())
}
