//! `--secret` sources: parsing `id=ID,src=PATH|env=VAR` and reading a value
//! for the one step that mounts it. The value is never stored by kiln.

use std::path::PathBuf;

use crate::BuildError;

/// Where a `--secret` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// Parses `--secret id=ID,src=PATH` / `id=ID,env=VAR` (also `source=`,
    /// `type=file|env`); returns the id and the source.
    pub fn parse(spec: &str) -> Result<(String, SecretSource), BuildError> {
        let bad = |m: &str| BuildError::BadSecret {
            spec: spec.to_string(),
            reason: m.to_string(),
        };
        let mut id = None;
        let mut src = None;
        let mut env = None;
        let mut kind = None;
        for field in spec.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| bad("expected id=ID,src=PATH or id=ID,env=VAR"))?;
            match k {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" => kind = Some(v.to_string()),
                other => return Err(bad(&format!("unknown key `{other}`"))),
            }
        }
        let id = id
            .or_else(|| src.clone())
            .or_else(|| env.clone())
            .ok_or_else(|| bad("missing id="))?;
        let source = match (kind.as_deref(), src, env) {
            (Some("env"), Some(v), None) | (_, None, Some(v)) => SecretSource::Env(v),
            (Some("file") | None, Some(p), None) => SecretSource::File(PathBuf::from(p)),
            (None | Some("env"), None, None) => SecretSource::Env(id.clone()),
            _ => return Err(bad("give either src= or env=")),
        };
        Ok((id, source))
    }

    /// The secret's value; `None` when its environment variable is unset.
    /// The error names the file, never the value.
    pub(crate) fn read(&self) -> Result<Option<Vec<u8>>, BuildError> {
        match self {
            SecretSource::File(p) => match std::fs::read(p) {
                Ok(b) => Ok(Some(b)),
                Err(source) => Err(BuildError::SecretFile {
                    path: p.clone(),
                    source,
                }),
            },
            SecretSource::Env(v) => Ok(std::env::var_os(v).map(|s| s.into_encoded_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_specs() {
        assert_eq!(
            SecretSource::parse("id=tok,src=/run/t").ok(),
            Some(("tok".into(), SecretSource::File("/run/t".into())))
        );
        assert_eq!(
            SecretSource::parse("id=tok,env=TOKEN").ok(),
            Some(("tok".into(), SecretSource::Env("TOKEN".into())))
        );
        assert_eq!(
            SecretSource::parse("id=TOKEN").ok(),
            Some(("TOKEN".into(), SecretSource::Env("TOKEN".into())))
        );
        assert!(SecretSource::parse("src").is_err());
        assert!(SecretSource::parse("id=a,bogus=1").is_err());
    }
}
