//! Image names as the exporter reads them: every name is checked to be an image
//! reference before anything is built or written, and the result files spell
//! destinations the way Kaniko does (`repository@digest`,
//! `repository:tag@digest`).

use kiln_registry::Reference;

use crate::ExportError;

/// Parses `name` as an image reference, saying which name was invalid.
pub fn parse_name(name: &str) -> Result<Reference, ExportError> {
    name.parse::<Reference>()
        .map_err(|source| ExportError::InvalidName {
            name: name.to_string(),
            source: Box::new(source),
        })
}

/// `host/repo:tag` → `host/repo` (a digest suffix is dropped too).
pub fn repository_of(name: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[slash..].rfind(':') {
        Some(i) => name[..slash + i].to_string(),
        None => name.to_string(),
    }
}

/// The name with its tag, `latest` when none is written.
pub fn with_tag(name: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    if name[slash..].contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_file_names() {
        assert_eq!(repository_of("localhost:5000/a/b:v1"), "localhost:5000/a/b");
        assert_eq!(repository_of("localhost:5000/a/b"), "localhost:5000/a/b");
        assert_eq!(with_tag("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_eq!(with_tag("reg.io/x:1"), "reg.io/x:1");
    }

    #[test]
    fn digests_and_ports_are_not_tags() {
        let digest = "sha256:".to_string() + &"a".repeat(64);
        assert_eq!(repository_of(&format!("reg.io/x:1@{digest}")), "reg.io/x");
        assert_eq!(repository_of(&format!("reg.io/x@{digest}")), "reg.io/x");
        assert_eq!(with_tag(&format!("reg.io/x@{digest}")), "reg.io/x:latest");
        assert_eq!(repository_of("localhost:5000/x"), "localhost:5000/x");
        assert_eq!(with_tag("localhost:5000/x"), "localhost:5000/x:latest");
    }

    #[test]
    fn invalid_names_are_named() {
        let err = parse_name("Bad Name").err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("invalid image name \"Bad Name\""));
        assert!(parse_name("localhost:5000/a/b:v1").is_ok());
    }
}
