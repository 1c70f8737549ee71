//! (to be written)

/// Placeholder until the parser lands.
pub fn parse(_file: &str, _text: &str) -> Result<crate::ast::Dockerfile, crate::ParseError> {
    Err(crate::ParseError)
}
