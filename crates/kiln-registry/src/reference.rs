//! Image references: `[registry/]repository[:tag][@digest]`, Docker Hub short-name
//! expansion and the API endpoint host for a registry name.
//!
//! Hand-written rather than regex-based: the grammar (the distribution reference
//! grammar) is small, and a hand parser gives a precise reason for every rejection.

use std::fmt;
use std::str::FromStr;

use kiln_image::Digest;

use crate::error::Error;
use crate::error::ReferenceError;

/// The canonical name of Docker Hub.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A fully qualified image reference.
///
/// `registry` is the registry name as the user wrote it (`docker.io` for Docker Hub,
/// whatever `index.docker.io` spelling was used), `repository` the full path inside it
/// (`library/alpine` for a Docker Hub short name). When both a tag and a digest are
/// given, the digest decides what is pulled and the tag is kept for display.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// The host (and port) the registry API is served on: `registry-1.docker.io` for
    /// Docker Hub, the registry name otherwise.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// What to ask the registry for: the digest if pinned, else the tag, else `latest`.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository pinned to `digest` (tag dropped).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }
}

/// The API host for a registry name (`docker.io` → `registry-1.docker.io`).
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: ReferenceError| Error::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad(ReferenceError::Empty));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|_| bad(ReferenceError::Digest))?;
                (r, Some(digest))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest.get(last_slash..).and_then(|t| t.rfind(':')) {
            Some(i) => {
                let split = last_slash + i;
                let name = rest.get(..split).unwrap_or_default();
                let tag = rest.get(split + 1..).unwrap_or_default();
                validate_tag(tag).map_err(bad)?;
                (name, Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(bad(ReferenceError::MissingRepository));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if looks_like_host(first) => {
                validate_host(first).map_err(bad)?;
                let registry = match first {
                    "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
                    other => other.to_string(),
                };
                let repository = if registry == DOCKER_HUB && !path.contains('/') {
                    format!("library/{path}")
                } else {
                    path.to_string()
                };
                (registry, repository)
            }
            Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
            None => (DOCKER_HUB.to_string(), format!("library/{name}")),
        };
        validate_repository(&repository).map_err(bad)?;
        if registry.len() + 1 + repository.len() > 255 {
            return Err(bad(ReferenceError::TooLong));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// The first path component names a registry when it is `localhost` or contains a
/// `.` or a `:` (port), or is an uppercase-free IPv6 literal in brackets.
fn looks_like_host(first: &str) -> bool {
    first == "localhost" || first.contains('.') || first.contains(':') || first.starts_with('[')
}

fn validate_host(h: &str) -> Result<(), ReferenceError> {
    let host_err = |make: fn(String) -> ReferenceError| make(h.to_string());
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| host_err(|host| ReferenceError::UnclosedBracket { host }))?;
        if inside.is_empty() || !inside.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(host_err(|host| ReferenceError::InvalidIpv6 { host }));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| host_err(|host| ReferenceError::TextAfterBracket { host }))?,
            ),
        };
        (None, port)
    } else {
        match h.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(h), None),
        }
    };
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(host_err(|host| ReferenceError::InvalidHost { host }));
        }
    }
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err(ReferenceError::InvalidPort {
                port: p.to_string(),
            });
        }
    }
    Ok(())
}

/// Path components: lowercase alphanumerics separated by `.`, `_`, `__` or runs of `-`.
fn validate_repository(repo: &str) -> Result<(), ReferenceError> {
    for comp in repo.split('/') {
        if comp.is_empty() {
            return Err(ReferenceError::EmptyComponent);
        }
        let bytes = comp.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let mut i = 0;
        let mut prev_alnum = false;
        while let Some(&b) = bytes.get(i) {
            if alnum(b) {
                prev_alnum = true;
                i += 1;
                continue;
            }
            if b.is_ascii_uppercase() {
                return Err(ReferenceError::Uppercase {
                    repository: repo.to_string(),
                });
            }
            // A separator: '.', '_', '__' or a run of '-', between alphanumerics.
            let start = i;
            match b {
                b'.' => i += 1,
                b'_' => {
                    i += 1;
                    if bytes.get(i) == Some(&b'_') {
                        i += 1;
                    }
                }
                b'-' => {
                    while bytes.get(i) == Some(&b'-') {
                        i += 1;
                    }
                }
                _ => {
                    return Err(ReferenceError::ForbiddenCharacter {
                        repository: repo.to_string(),
                        character: char::from(b),
                    })
                }
            }
            if !prev_alnum || !bytes.get(i).copied().is_some_and(alnum) {
                return Err(ReferenceError::MisplacedSeparator {
                    repository: repo.to_string(),
                    separator: comp.get(start..i).unwrap_or_default().to_string(),
                });
            }
            prev_alnum = false;
        }
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok
        || tag.len() > 128
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(ReferenceError::InvalidTag {
            tag: tag.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn p(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_short_names_expand() {
        let r = p("alpine");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/alpine", None)
        );
        assert_eq!(r.to_string(), "docker.io/library/alpine");
        assert_eq!(r.manifest_ref(), "latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(
            p("alpine:3.20").to_string(),
            "docker.io/library/alpine:3.20"
        );
        assert_eq!(p("user/app:v1").to_string(), "docker.io/user/app:v1");
        assert_eq!(p("docker.io/nginx").to_string(), "docker.io/library/nginx");
        assert_eq!(
            p("index.docker.io/nginx").to_string(),
            "docker.io/library/nginx"
        );
        assert_eq!(p("registry-1.docker.io/a/b").to_string(), "docker.io/a/b");
    }

    #[test]
    fn registry_hosts_are_detected() {
        for (s, reg, repo) in [
            ("localhost/app", "localhost", "app"),
            ("localhost:5000/app:1", "localhost:5000", "app"),
            ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c"),
            ("ghcr.io/org/img", "ghcr.io", "org/img"),
            ("myhost:443/img", "myhost:443", "img"),
            ("[::1]:5000/img", "[::1]:5000", "img"),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app",
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                "app",
            ),
        ] {
            let r = p(s);
            assert_eq!(
                (r.registry.as_str(), r.repository.as_str()),
                (reg, repo),
                "{s}"
            );
            assert_eq!(r.api_host(), reg);
        }
        // "myhost" without dot or port is a Docker Hub namespace, not a host.
        assert_eq!(p("myhost/img").to_string(), "docker.io/myhost/img");
    }

    #[test]
    fn tags_and_digests() {
        let r = p(&format!("localhost:5000/app:v1.2_x-y@{D}"));
        assert_eq!(r.tag.as_deref(), Some("v1.2_x-y"));
        assert_eq!(r.digest.as_ref().map(|d| d.as_str()), Some(D));
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.to_string(), format!("localhost:5000/app:v1.2_x-y@{D}"));
        let r = p(&format!("busybox@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(
            r.with_digest(Digest::sha256(b"")).to_string(),
            format!("docker.io/library/busybox@{D}")
        );
    }

    #[test]
    fn invalid_references_say_why() {
        for (s, why) in [
            ("", "empty reference"),
            ("Alpine", "must be lowercase"),
            ("alpine:", "tag \"\""),
            ("alpine:-x", "not start with"),
            ("alpine@sha256:abc", "64 lowercase hex"),
            ("localhost:99999/app", "port \"99999\""),
            ("a//b", "empty path component"),
            ("a/b_-c", "must sit between"),
            ("app!", "contains '!'"),
            ("-app", "must sit between"),
            ("host.io:/x", "port \"\""),
            ("bad_host.io/x", "not a valid host name"),
            ("[zz]:5000/app", "IPv6"),
        ] {
            let e = s.parse::<Reference>().expect_err(s).to_string();
            assert!(e.contains(why), "{s}: {e}");
            assert!(
                e.starts_with(&format!("invalid image reference {s:?}")),
                "{e}"
            );
        }
        let long = format!("x/{}", "a".repeat(260));
        assert!(long.parse::<Reference>().is_err());
        let tag = format!("a:{}", "t".repeat(129));
        assert!(tag.parse::<Reference>().is_err());
        let tag = format!("a:{}", "t".repeat(128));
        assert!(tag.parse::<Reference>().is_ok());
    }
}
