//! The crate's parse error: a message located at a file, line and column,
//! displayed like a compiler diagnostic with the offending line and a caret.

use std::fmt;

/// A Dockerfile that cannot be parsed.
///
/// `Display` prints `file:line:col: message`, then the source line and a
/// caret under the column, e.g.
///
/// ```text
/// Dockerfile:2:1: unknown instruction: RUUN (did you mean RUN?)
///   |
/// 2 | RUUN echo hi
///   | ^
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// The display name of the Dockerfile, as given to [`crate::parse`].
    pub file: String,
    /// 1-based line of the fault.
    pub line: usize,
    /// 1-based column (in characters) of the fault.
    pub column: usize,
    /// What is wrong, without the location.
    pub message: String,
    /// The text of line `line` (empty when the fault is past the end of the
    /// file).
    pub source_line: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        let number = self.line.to_string();
        let pad = " ".repeat(number.len());
        // Keep tabs under tabs so the caret lines up in a terminal.
        let caret_pad: String = self
            .source_line
            .chars()
            .take(self.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(
            f,
            "\n{pad} |\n{number} | {}\n{pad} | {caret_pad}^",
            self.source_line
        )
    }
}

/// A `RUN --mount` specification that cannot be used; the message is the
/// one Docker prints for the same mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MountError {
    pub message: String,
}

impl MountError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        MountError {
            message: message.into(),
        }
    }
}
