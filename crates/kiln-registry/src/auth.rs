//! The registry authentication flow: parsing `WWW-Authenticate` challenges, Basic
//! credentials, and Bearer tokens fetched from the challenge's realm (anonymously, with
//! Basic credentials, or by exchanging an identity token), cached per scope.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use crate::credentials::Credential;
use crate::error::{AuthError, Error, ProtocolError, Result};
use crate::secret::Secret;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses the first Basic or Bearer challenge in a `WWW-Authenticate` header value.
///
/// Hand-written: the grammar is `scheme k="v", k=v…` with quoted-string escapes, and
/// none of the small header crates parse `Bearer` auth-params.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// The `Authorization` header value for Basic credentials.
pub(crate) fn basic_header(username: &str, password: &Secret) -> Secret {
    let raw = format!("{username}:{}", password.expose());
    Secret::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
}

/// A repository access scope, e.g. `repository:library/alpine:pull`.
pub(crate) fn scope(repository: &str, push: bool) -> String {
    if push {
        format!("repository:{repository}:pull,push")
    } else {
        format!("repository:{repository}:pull")
    }
}

/// A cached bearer token.
#[derive(Clone)]
pub(crate) struct Token {
    pub(crate) value: Secret,
    pub(crate) expires: Instant,
}

/// Bearer tokens per (registry, scopes).
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: HashMap<(String, Vec<String>), Token>,
}

impl TokenCache {
    pub(crate) fn get(&self, registry: &str, scopes: &[String]) -> Option<Secret> {
        self.tokens
            .get(&(registry.to_string(), scopes.to_vec()))
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.value.clone())
    }
    pub(crate) fn put(&mut self, registry: &str, scopes: &[String], t: Token) {
        self.tokens
            .insert((registry.to_string(), scopes.to_vec()), t);
    }
    pub(crate) fn forget(&mut self, registry: &str, scopes: &[String]) {
        self.tokens.remove(&(registry.to_string(), scopes.to_vec()));
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Fetches a bearer token for `scopes` from `realm`.
///
/// With an identity token, the OAuth2 refresh-token grant (POST) is used; otherwise a
/// GET with Basic credentials if any, anonymously if none.
pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    registry: &str,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    cred: Option<&Credential>,
) -> Result<Token> {
    let mut url = url::Url::parse(realm).map_err(|e| Error::Protocol {
        registry: registry.to_string(),
        reason: ProtocolError::TokenRealmNotUrl {
            realm: realm.to_string(),
            error: e,
        },
    })?;
    let req = match cred {
        Some(Credential::IdentityToken(refresh)) => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", refresh.expose())
                .append_pair("client_id", "kiln");
            if let Some(s) = service {
                form.append_pair("service", s);
            }
            for s in scopes {
                form.append_pair("scope", s);
            }
            http.post(url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form.finish())
        }
        other => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scopes {
                    q.append_pair("scope", s);
                }
            }
            let mut req = http.get(url);
            if let Some(Credential::Basic { username, password }) = other {
                req = req.header("Authorization", basic_header(username, password).expose());
            }
            req
        }
    };
    let resp = req.send().await.map_err(|e| Error::Connect {
        registry: registry.to_string(),
        what: format!("token server {realm}"),
        reason: crate::error::describe(&e),
    })?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Error::Unauthorized {
            registry: registry.to_string(),
            reason: AuthError::TokenServerRefused {
                realm: realm.to_string(),
                with_credentials: cred.is_some(),
                status: status.as_u16(),
            },
            cloud: None,
        });
    }
    if !status.is_success() {
        return Err(Error::Status {
            registry: registry.to_string(),
            what: format!("token request to {realm}"),
            status: status.as_u16(),
            message: String::new(),
            retry_after: None,
        });
    }
    let body = resp.bytes().await.map_err(|e| Error::Connect {
        registry: registry.to_string(),
        what: format!("token server {realm}"),
        reason: crate::error::describe(&e),
    })?;
    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| Error::Protocol {
        registry: registry.to_string(),
        reason: ProtocolError::TokenNotJson {
            realm: realm.to_string(),
        },
    })?;
    let value = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::Protocol {
            registry: registry.to_string(),
            reason: ProtocolError::NoToken {
                realm: realm.to_string(),
            },
        })?;
    // Default lifetime per the token spec is 60 s; renew a little before expiry.
    let lifetime = parsed.expires_in.unwrap_or(60).max(10);
    Ok(Token {
        value: Secret::new(value),
        expires: Instant::now() + Duration::from_secs(lifetime - 5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm="http://127.0.0.1:1/t\"x""#),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t\"x".into(),
                service: None
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn basic_header_and_scopes() {
        assert_eq!(
            basic_header("aladdin", &Secret::new("opensesame")).expose(),
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l"
        );
        assert_eq!(scope("a/b", false), "repository:a/b:pull");
        assert_eq!(scope("a/b", true), "repository:a/b:pull,push");
    }
}
