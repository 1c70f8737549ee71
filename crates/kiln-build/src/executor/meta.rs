//! Helpers of the metadata instructions and WORKDIR: environment, paths, ports,
//! durations, HEALTHCHECK, directory creation through the root resolver, and step
//! records.

use super::*;

/// Puts a step's record into every cache of the build; a cache that
/// refuses it is a warning, not a failed build.
pub(super) fn put_record(req: &BuildRequest, key: &str, record: &StepRecord) {
    for backend in &req.cache {
        if let Err(e) = backend.put(key, record, req.store) {
            req.progress.info(&format!(
                "warning: could not store a step in the {} cache: {e}",
                backend.describe()
            ));
        }
    }
}

pub(super) fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    for e in env.iter_mut() {
        if e.split_once('=').map(|(k, _)| k) == Some(key) || e == key {
            *e = entry;
            return;
        }
    }
    env.push(entry);
}

/// Joins a WORKDIR onto the current one and cleans the result.
pub(super) fn join_workdir(current: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') {
        dir.to_string()
    } else {
        let base = if current.is_empty() { "/" } else { current };
        format!("{base}/{dir}")
    };
    clean_abs(&joined)
}

/// Lexically cleans an absolute path (`/a/./b/../c` → `/a/c`).
pub fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Creates `dir` (absolute, cleaned) and its missing parents inside
/// `rootfs`, owned by `owner` (when this process may chown); returns the
/// directories it created. Symlinks on the way are followed inside the root,
/// as BuildKit resolves WORKDIR inside the image, and every directory is
/// made through [`kiln_image::root::Root`], so an image's symlink can never
/// lead the creation out of the root.
pub(super) fn mkdir_all(
    rootfs: &Path,
    dir: &str,
    owner: (u32, u32),
) -> Result<Vec<crate::copy::Changed>, BuildError> {
    use kiln_image::root::{NewDir, Root, RootError};
    let what = || format!("WORKDIR {dir}");
    let fail = |e: RootError| match e {
        RootError::NotADirectory { at, .. } => BuildError::NotADirectory { what: what(), at },
        source => BuildError::Root {
            what: what(),
            source,
        },
    };
    let root = Root::open(rootfs).map_err(fail)?;
    let resolved = root
        .dir(
            dir,
            Some(NewDir {
                mode: 0o755,
                owner: Some(owner),
            }),
        )
        .map_err(fail)?
        .ok_or_else(|| BuildError::Root {
            what: what(),
            source: RootError::IsRoot {
                path: dir.to_string(),
            },
        })?;
    Ok(resolved
        .created
        .into_iter()
        .map(|path| crate::copy::Changed {
            path,
            uid: owner.0,
            gid: owner.1,
        })
        .collect())
}

/// Why an EXPOSE word is not a port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("EXPOSE {spec}: invalid protocol {proto}")]
    Protocol { spec: String, proto: String },
    #[error("EXPOSE {spec}: invalid port {port}")]
    Port { spec: String, port: String },
    #[error("EXPOSE {spec}: invalid range")]
    Range { spec: String },
}

/// Expands an EXPOSE word into `port/proto` keys, ranges included
/// (`8000-8002/udp`).
pub fn expand_ports(spec: &str) -> Result<Vec<String>, PortError> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(PortError::Protocol {
            spec: spec.to_string(),
            proto,
        });
    }
    // "ip:host:container" forms are rejected by BuildKit as well.
    let parse = |s: &str| -> Result<u32, PortError> {
        s.parse::<u32>()
            .ok()
            .filter(|n| *n <= 65_535)
            .ok_or_else(|| PortError::Port {
                spec: spec.to_string(),
                port: s.to_string(),
            })
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(PortError::Range {
            spec: spec.to_string(),
        });
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

pub(super) fn health_config(hc: &Healthcheck) -> Result<kiln_image::HealthConfig, BuildError> {
    match hc {
        Healthcheck::None => Ok(kiln_image::HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        }),
        Healthcheck::Check {
            command,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => {
            let test = match command {
                Command::Exec(v) => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(v.iter().cloned());
                    t
                }
                Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
            };
            let d = |v: &Option<String>| -> Result<i64, BuildError> {
                match v {
                    Some(s) => parse_duration(s).ok_or_else(|| BuildError::BadDuration {
                        instruction: "HEALTHCHECK",
                        value: s.clone(),
                    }),
                    None => Ok(0),
                }
            };
            Ok(kiln_image::HealthConfig {
                test,
                interval: d(interval)?,
                timeout: d(timeout)?,
                start_period: d(start_period)?,
                start_interval: d(start_interval)?,
                retries: retries.map(i64::from).unwrap_or(0),
            })
        }
    }
}

/// Parses a Go-style duration (`1h2m3.5s`, `300ms`, `0`) into nanoseconds,
/// with the parser's implementation (the one that validated it).
pub fn parse_duration(s: &str) -> Option<i64> {
    kiln_dockerfile::parser::parse_go_duration(s)
        .ok()
        .and_then(|n| i64::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(expand_ports("80").ok(), Some(vec!["80/tcp".to_string()]));
        assert_eq!(
            expand_ports("8000-8002/udp").ok(),
            Some(vec![
                "8000/udp".to_string(),
                "8001/udp".to_string(),
                "8002/udp".to_string()
            ])
        );
        assert!(expand_ports("80/xyz").is_err());
        assert!(expand_ports("99999").is_err());
        assert!(expand_ports("9-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000_000_000));
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn workdirs() {
        assert_eq!(join_workdir("", "app"), "/app");
        assert_eq!(join_workdir("/a", "b/../c"), "/a/c");
        assert_eq!(join_workdir("/a", "/x/./y/"), "/x/y");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn local_refs() {
        assert_eq!(split_local_ref("/tmp/x:v1"), ("/tmp/x", Some("v1")));
        assert_eq!(split_local_ref("/tmp/x"), ("/tmp/x", None));
        assert_eq!(
            split_local_ref("/tmp/x@sha256:ab"),
            ("/tmp/x", Some("sha256:ab"))
        );
        assert_eq!(split_local_ref("./a.b/c"), ("./a.b/c", None));
    }
}
