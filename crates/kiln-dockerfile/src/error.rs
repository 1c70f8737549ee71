//! Parse errors that name the file, line and column and show the line.

/// Placeholder until the parser lands.
#[derive(Debug, thiserror::Error)]
#[error("parse error")]
pub struct ParseError;
