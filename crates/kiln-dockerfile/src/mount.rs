//! `RUN --mount=…` specifications: parsing an already-expanded value into a
//! typed [`Mount`] with Docker's defaults and error messages.
//!
//! The value is one CSV record of `key=value` fields (`ro`, `rw`,
//! `readonly`, `readwrite` and `required` may stand alone). Fields apply in
//! order, as in Docker: `type=` must come before the options that depend on
//! it (`sharing`, `size`, `required`).

use crate::error::MountError;
use serde::Serialize;

/// What a mount provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A read-only (by default) view of the context or of `from`.
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A build secret as a file (and/or an environment variable).
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl MountType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bind" => MountType::Bind,
            "cache" => MountType::Cache,
            "tmpfs" => MountType::Tmpfs,
            "secret" => MountType::Secret,
            "ssh" => MountType::Ssh,
            _ => return None,
        })
    }

    /// The type as written in a Dockerfile.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Used by any number of writers at once (the default).
    Shared,
    /// A writer gets a fresh copy when the cache is busy.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// A parsed `--mount`. Fields are as written; the methods apply Docker's
/// defaults that depend on the mount type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub kind: MountType,
    /// `target=` / `dst=` / `destination=`; relative targets are relative to
    /// the working directory.
    pub target: Option<String>,
    /// `source=` / `src=`: a path in `from` (bind, cache) or the secret id.
    pub source: Option<String>,
    /// `from=`: a stage name, image or build context.
    pub from: Option<String>,
    /// `id=`: the cache id, secret id or SSH agent id.
    pub id: Option<String>,
    /// Bind, secret and ssh mounts are read-only unless `rw`; cache and
    /// tmpfs are writable unless `ro`.
    pub readonly: bool,
    /// Cache sharing mode (`shared` by default); `None` for other types.
    pub sharing: Option<Sharing>,
    /// `mode=` (octal), for cache, secret and ssh.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Secret and ssh: fail the build when the secret/agent is missing.
    pub required: bool,
    /// Secret: also (or only, without a target) expose it as this
    /// environment variable.
    pub env: Option<String>,
    /// Tmpfs size limit in bytes.
    pub size: Option<u64>,
}

impl Mount {
    /// The cache id: `id=`, else the target.
    pub fn cache_id(&self) -> Option<&str> {
        self.id.as_deref().or(self.target.as_deref())
    }

    /// The secret id: `source=`, else `id=`, else the target's file name.
    pub fn secret_id(&self) -> Option<String> {
        self.source
            .clone()
            .or_else(|| self.id.clone())
            .or_else(|| self.target.as_deref().map(|t| base_name(t).to_string()))
    }

    /// Where a secret file is mounted: the target, else
    /// `/run/secrets/<id>` unless the secret goes only to `env=`.
    pub fn secret_target(&self) -> Option<String> {
        if let Some(t) = &self.target {
            return Some(t.clone());
        }
        if self.env.is_some() {
            return None;
        }
        self.secret_id()
            .map(|id| format!("/run/secrets/{}", base_name(&id)))
    }

    /// The SSH agent id: `id=`, else `default`.
    pub fn ssh_id(&self) -> &str {
        self.id.as_deref().unwrap_or("default")
    }

    /// Where the agent socket goes: the target, else
    /// `/run/buildkit/ssh_agent.<index>` where `index` counts the ssh
    /// mounts of the RUN from 0.
    pub fn ssh_target(&self, index: usize) -> String {
        self.target
            .clone()
            .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{index}"))
    }

    /// The file mode, with the type's default (secret 0400, ssh 0600, cache
    /// 0755); `None` for bind and tmpfs.
    pub fn effective_mode(&self) -> Option<u32> {
        match self.kind {
            MountType::Secret => Some(self.mode.unwrap_or(0o400)),
            MountType::Ssh => Some(self.mode.unwrap_or(0o600)),
            MountType::Cache => Some(self.mode.unwrap_or(0o755)),
            MountType::Bind | MountType::Tmpfs => None,
        }
    }
}

/// The last path element, as Go's `path.Base`.
fn base_name(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return if p.is_empty() { "." } else { "/" };
    }
    t.rsplit('/').next().unwrap_or(t)
}

const KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Parses an expanded `--mount` value.
pub fn parse_mount(spec: &str) -> Result<Mount, MountError> {
    let fields = csv_fields(spec)
        .map_err(|e| MountError::new(format!("failed to parse csv mounts: {e}")))?;
    let mut m = Mount {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        id: None,
        readonly: false,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        env: None,
        size: None,
    };
    let mut ro_auto = true;
    let unexpected = |key: &str, m: &Mount| {
        MountError::new(format!(
            "unexpected key '{key}' for mount type '{}'",
            m.kind.as_str()
        ))
    };
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), v),
            None => {
                match field.to_ascii_lowercase().as_str() {
                    "readonly" | "ro" => {
                        m.readonly = true;
                        ro_auto = false;
                    }
                    "readwrite" | "rw" => {
                        m.readonly = false;
                        ro_auto = false;
                    }
                    "required" => {
                        if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                            m.required = true;
                        } else {
                            return Err(unexpected("required", &m));
                        }
                    }
                    _ => {
                        return Err(MountError::new(format!(
                            "invalid field '{field}' must be a key=value pair"
                        )))
                    }
                }
                continue;
            }
        };
        let bad_value = || MountError::new(format!("invalid value for {key}: {value}"));
        match key.as_str() {
            "type" => {
                m.kind = MountType::parse(&value.to_ascii_lowercase()).ok_or_else(|| {
                    let hint = crate::parser::lexer::suggest_word(
                        value,
                        &["bind", "cache", "tmpfs", "secret", "ssh"],
                    )
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                    MountError::new(format!("unsupported mount type \"{value}\"{hint}"))
                })?;
            }
            "from" => m.from = Some(value.to_string()),
            "source" | "src" => m.source = Some(value.to_string()),
            "target" | "dst" | "destination" => m.target = Some(value.to_string()),
            "readonly" | "ro" => {
                m.readonly = go_bool(value).ok_or_else(bad_value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !go_bool(value).ok_or_else(bad_value)?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(unexpected(&key, &m));
                }
                m.required = go_bool(value).ok_or_else(bad_value)?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(unexpected(&key, &m));
                }
                m.size = Some(ram_in_bytes(value).ok_or_else(bad_value)?);
            }
            "id" => m.id = Some(value.to_string()),
            "sharing" => {
                if m.kind != MountType::Cache {
                    return Err(MountError::new(format!(
                        "invalid cache sharing set for {} mount",
                        m.kind.as_str()
                    )));
                }
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(MountError::new(format!(
                            "unsupported sharing value \"{value}\""
                        )))
                    }
                });
            }
            "mode" => {
                let mode = u32::from_str_radix(value, 8)
                    .ok()
                    .filter(|_| !value.starts_with('+'))
                    .ok_or_else(|| MountError::new(format!("invalid value {value} for mode")))?;
                m.mode = Some(mode);
            }
            "uid" | "gid" => {
                let n = value
                    .parse::<u32>()
                    .ok()
                    .filter(|_| !value.starts_with('+'))
                    .ok_or_else(|| MountError::new(format!("invalid value {value} for {key}")))?;
                if key == "uid" {
                    m.uid = Some(n);
                } else {
                    m.gid = Some(n);
                }
            }
            "env" => m.env = Some(value.to_string()),
            _ => {
                let names: Vec<&str> = KEYS.to_vec();
                let hint = crate::parser::lexer::suggest_word(&key, &names)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                return Err(MountError::new(format!(
                    "unexpected key '{key}' in '{field}'{hint}"
                )));
            }
        }
    }
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        for (name, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(MountError::new(format!(
                    "{name} not allowed for \"{}\" type mounts",
                    m.kind.as_str()
                )));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    match m.kind {
        MountType::Secret => {
            if m.from.is_some() {
                return Err(MountError::new("secret mount should not have a from"));
            }
            if m.source.is_none() && m.target.is_none() && m.id.is_none() {
                return Err(MountError::new(
                    "invalid secret mount. one of source, target required",
                ));
            }
            if m.source.is_some() && m.id.is_some() {
                return Err(MountError::new("both source and id can't be set"));
            }
        }
        MountType::Ssh => {
            if m.source.is_some() {
                return Err(MountError::new("ssh does not support source"));
            }
        }
        MountType::Cache => {
            if m.sharing.is_none() {
                m.sharing = Some(Sharing::Shared);
            }
        }
        MountType::Bind | MountType::Tmpfs => {}
    }
    Ok(m)
}

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Docker's RAM size syntax: a decimal number, an optional space, an
/// optional binary unit (`k`, `m`, `g`, `t`, `p`, any case) and an optional
/// `i`/`b` suffix: `64m`, `1.5g`, `512KiB`, `100`.
fn ram_in_bytes(s: &str) -> Option<u64> {
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, rest) = s.split_at(num_end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.contains("..") {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut chars = rest.chars().peekable();
    let mult: f64 = match chars.peek().map(|c| c.to_ascii_lowercase()) {
        Some('k') => 1024.0,
        Some('m') => 1024.0 * 1024.0,
        Some('g') => 1024.0 * 1024.0 * 1024.0,
        Some('t') => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        Some('p') => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => 1.0,
    };
    if mult > 1.0 {
        chars.next();
    }
    if chars.peek().is_some_and(|c| c.eq_ignore_ascii_case(&'i')) {
        chars.next();
    }
    if chars.peek().is_some_and(|c| c.eq_ignore_ascii_case(&'b')) {
        chars.next();
    }
    if chars.next().is_some() {
        return None;
    }
    let bytes = value * mult;
    (bytes.is_finite() && bytes < 1.8e19).then_some(bytes as u64)
}

/// Splits one CSV record the way Go's `encoding/csv` reads it: `,`
/// separates fields, a field starting with `"` is quoted (`""` is a quote
/// inside it), and a quote inside an unquoted field is an error.
/// Hand-written because a record is one short line and the CSV crates add
/// multi-line record machinery this does not need.
fn csv_fields(s: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field"),
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some(',') | None => break,
                        Some(_) => return Err("extraneous or missing \" in quoted-field"),
                    },
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err("bare \" in non-quoted-field");
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            _ => break,
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_follows_go() {
        assert_eq!(csv_fields("a,b").unwrap(), ["a", "b"]);
        assert_eq!(csv_fields("\"a,b\",c").unwrap(), ["a,b", "c"]);
        assert_eq!(csv_fields("\"a\"\"b\"").unwrap(), ["a\"b"]);
        assert_eq!(csv_fields("").unwrap(), [""]);
        assert_eq!(csv_fields("a,").unwrap(), ["a", ""]);
        assert!(csv_fields("a\"b").is_err());
        assert!(csv_fields("\"ab").is_err());
        assert!(csv_fields("\"a\"b").is_err());
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(ram_in_bytes("100"), Some(100));
        assert_eq!(ram_in_bytes("64m"), Some(64 << 20));
        assert_eq!(ram_in_bytes("1.5k"), Some(1536));
        assert_eq!(ram_in_bytes("2GiB"), Some(2 << 30));
        assert_eq!(ram_in_bytes("1 kb"), Some(1024));
        assert_eq!(ram_in_bytes("x"), None);
        assert_eq!(ram_in_bytes("1x"), None);
        assert_eq!(ram_in_bytes(""), None);
    }

    #[test]
    fn base_names() {
        assert_eq!(base_name("/run/x/tok"), "tok");
        assert_eq!(base_name("tok/"), "tok");
        assert_eq!(base_name("/"), "/");
    }
}
