//! The typed Dockerfile syntax tree: what the parser produces and every later
//! stage consumes.
//!
//! Values are kept *unexpanded*: `$VAR` references, quotes and escapes stay as
//! written, because expansion needs the build-time environment (build args,
//! ENV of the stage) and Docker expands each instruction with its own rules.
//! [`crate::expand`] does that work when the build reaches the instruction.
//!
//! Every instruction carries the [`Span`] of its first line so errors found
//! later (a missing COPY source, a failing RUN) can still point at the file,
//! line and column.

use serde::Serialize;

/// A position in the Dockerfile: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Span {
    pub line: usize,
    pub column: usize,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    pub directives: Directives,
    /// Every instruction in file order, including the global `ARG`s that come
    /// before the first `FROM`. Use [`Dockerfile::stages`] for the stage view.
    pub instructions: Vec<Instruction>,
}

/// Parser directives (`# syntax=…`, `# escape=…`, `# check=…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    pub syntax: Option<String>,
    /// The escape character: `\` by default, or `` ` ``.
    pub escape: char,
    /// The raw value of `# check=`, e.g. `skip=JSONArgsRecommended;error=true`.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// One instruction with its location and the text it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    pub span: Span,
    /// The instruction as written, continuation lines joined (heredoc bodies
    /// excluded), for history entries and progress output.
    pub original: String,
    pub kind: InstructionKind,
}

/// A command in exec (JSON array) form or shell form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Command {
    /// `["executable", "arg"]`: already unquoted, never expanded.
    Exec(Vec<String>),
    /// `executable arg`: run through the stage's SHELL.
    Shell(String),
}

/// A heredoc attached to an instruction (`<<EOF … EOF`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// The body, one `\n` after each line (tabs already stripped for `<<-`).
    pub content: String,
    /// `<<-`: leading tabs were stripped from the body and the terminator.
    pub strip_tabs: bool,
    /// Whether variables in the body are expanded: false when the
    /// delimiter was quoted (`<<'EOF'` or `<<"EOF"`).
    pub expand: bool,
}

/// A `--name[=value]` flag as written before an instruction's arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    pub name: String,
    /// `None` for a bare boolean flag (`--link`).
    pub value: Option<String>,
    pub span: Span,
}

/// `key=value` pairs of ENV, LABEL; values unexpanded, quotes kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// One `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    /// The default value, unexpanded, quotes kept.
    pub default: Option<String>,
}

/// `FROM [--platform=…] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// The image reference or stage name, unexpanded (global ARGs apply).
    pub image: String,
    /// The stage name after `AS`, lowercased as BuildKit does.
    pub name: Option<String>,
    pub platform: Option<String>,
}

/// `RUN [--mount=…] [--network=…] [--security=…] command`.
///
/// Heredocs (the parser's convention, which reproduces BuildKit):
/// `heredocs` is non-empty only for the shell form, and `command` is then
/// `Command::Shell` holding the instruction text after the flags, heredoc
/// openers included but bodies excluded (`<<EOF`, `cat <<EOF > /x`). Each
/// body is already tab-stripped when `strip_tabs`. An executor does (and
/// `crate::parser::run_script` computes exactly this):
///
/// 1. If the whole shell text is one heredoc opener
///    (`crate::parser::heredoc_opener(text.trim())` is `Some`) — e.g.
///    `RUN <<EOF` — the first heredoc's body is the script:
///    - if the body starts with `#!`, it is written with mode 0755 to a
///      read-only file `/dev/pipes/<name>` and the shell form
///      `/dev/pipes/<name>` runs (`SHELL` + that path), so the shebang's
///      interpreter runs it;
///    - otherwise the body itself is the shell-form command
///      (`SHELL` + body as one argument, e.g. `/bin/sh -c "<body>"`).
/// 2. Otherwise (`RUN cat <<EOF > /x`, several heredocs, …) the script
///    passed to the shell is the text followed, for each heredoc in order,
///    by `"\n" + content + name` — a real shell heredoc the shell reads.
///
/// Variables in bodies are never expanded by kiln for RUN: the shell does
/// it (or not, for quoted delimiters in case 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub command: Command,
    /// Raw `--mount` values, unexpanded; see [`crate::mount`].
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
    /// Heredocs in the order they appear on the instruction line.
    pub heredocs: Vec<Heredoc>,
}

/// `COPY` and `ADD` share their shape; ADD-only flags are `None` for COPY.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyAdd {
    /// Sources, unexpanded. A source that names a heredoc (`<<EOF`) refers
    /// to the entry in `heredocs` with that name.
    pub sources: Vec<String>,
    pub dest: String,
    /// The sources were written in exec (JSON) form: no word splitting
    /// happened on them.
    pub json_form: bool,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    /// ADD only: `--checksum=sha256:…`.
    pub checksum: Option<String>,
    /// ADD only: `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// ADD only: `--unpack=true|false` (None: auto).
    pub unpack: Option<bool>,
    pub heredocs: Vec<Heredoc>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Healthcheck {
    None,
    Check {
        command: Command,
        /// Durations as written (`30s`, `1m30s`), validated by the parser.
        interval: Option<String>,
        timeout: Option<String>,
        start_period: Option<String>,
        start_interval: Option<String>,
        retries: Option<u32>,
    },
}

/// Every Dockerfile instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum InstructionKind {
    From(From),
    Run(Run),
    Cmd(Command),
    Entrypoint(Command),
    Label(Vec<KeyValue>),
    Maintainer(String),
    Expose(Vec<String>),
    Env(Vec<KeyValue>),
    Add(CopyAdd),
    Copy(CopyAdd),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Arg(Vec<ArgDecl>),
    /// The trigger instruction, parsed (ONBUILD cannot nest FROM, ONBUILD or
    /// MAINTAINER). `original` of the inner instruction is the trigger text
    /// stored in the image config.
    Onbuild(Box<Instruction>),
    Stopsignal(String),
    Healthcheck(Healthcheck),
    Shell(Vec<String>),
}

impl InstructionKind {
    /// The instruction keyword in upper case (`COPY`).
    pub fn keyword(&self) -> &'static str {
        match self {
            InstructionKind::From(_) => "FROM",
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::Label(_) => "LABEL",
            InstructionKind::Maintainer(_) => "MAINTAINER",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Add(_) => "ADD",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::User(_) => "USER",
            InstructionKind::Workdir(_) => "WORKDIR",
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Onbuild(_) => "ONBUILD",
            InstructionKind::Stopsignal(_) => "STOPSIGNAL",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Shell(_) => "SHELL",
        }
    }
}

/// A stage: one `FROM` and the instructions up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage<'a> {
    /// Position among the stages, for `COPY --from=0`.
    pub index: usize,
    pub from: &'a From,
    pub from_instruction: &'a Instruction,
    pub instructions: &'a [Instruction],
}

impl Dockerfile {
    /// The `ARG`s declared before the first `FROM`.
    pub fn global_args(&self) -> impl Iterator<Item = &Instruction> {
        self.instructions
            .iter()
            .take_while(|i| !matches!(i.kind, InstructionKind::From(_)))
    }

    /// The stages in file order. The parser guarantees that only ARG
    /// instructions precede the first FROM and that there is at least one.
    pub fn stages(&self) -> Vec<Stage<'_>> {
        let starts: Vec<usize> = self
            .instructions
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(i.kind, InstructionKind::From(_)))
            .map(|(n, _)| n)
            .collect();
        let mut stages = Vec::with_capacity(starts.len());
        for (index, &start) in starts.iter().enumerate() {
            let end = starts
                .get(index + 1)
                .copied()
                .unwrap_or(self.instructions.len());
            let from_instruction = &self.instructions[start];
            if let InstructionKind::From(from) = &from_instruction.kind {
                stages.push(Stage {
                    index,
                    from,
                    from_instruction,
                    instructions: &self.instructions[start + 1..end],
                });
            }
        }
        stages
    }
}
