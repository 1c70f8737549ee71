//! Registry credentials: explicit ones from [`crate::RegistryOptions`], docker
//! `config.json` (`auths` with `auth`/`username`+`password`/`identitytoken`,
//! `credHelpers`, `credsStore`) and the `docker-credential-<name> get` helper protocol.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::error::{ConfigError, Error, HelperError, Result};
use crate::reference::DOCKER_HUB;
use crate::secret::Secret;

/// The key Docker uses for Docker Hub in `config.json` and with credential helpers.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (or a personal access token as the password).
    Basic { username: String, password: Secret },
    /// An OAuth2 refresh token (docker `identitytoken`), exchanged at the token realm.
    IdentityToken(Secret),
}

/// The parts of docker's `config.json` kiln reads.
#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

// Hand-written so that a parsed entry can never print its secrets.
impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthEntry(***)")
    }
}

/// Where docker's `config.json` lives: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub fn default_docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// Looks up credentials for registries from a docker `config.json`.
#[derive(Debug, Default)]
pub(crate) struct CredentialStore {
    config: DockerConfig,
    path: Option<PathBuf>,
}

impl CredentialStore {
    /// Reads `path` (a missing file means "no credentials").
    pub(crate) fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(CredentialStore::default());
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CredentialStore::default())
            }
            Err(error) => {
                return Err(ConfigError::ReadDockerConfig {
                    path: path.to_path_buf(),
                    error,
                }
                .into())
            }
        };
        // serde_json's error names line and column only, never the content.
        let config: DockerConfig =
            serde_json::from_slice(&bytes).map_err(|error| ConfigError::InvalidDockerConfig {
                path: path.to_path_buf(),
                error,
            })?;
        Ok(CredentialStore {
            config,
            path: Some(path.to_path_buf()),
        })
    }

    /// Credentials for `registry` (as written in references, e.g. `docker.io`,
    /// `localhost:5000`), or `None` for anonymous access.
    pub(crate) async fn lookup(&self, registry: &str) -> Result<Option<Credential>> {
        let server = if registry == DOCKER_HUB {
            DOCKER_HUB_AUTH_KEY
        } else {
            registry
        };
        if let Some(helper) = self.config.cred_helpers.get(registry) {
            return run_helper(helper, registry, server).await;
        }
        if let Some(entry) = self.find_auth(registry) {
            return self.decode(registry, entry).map(Some);
        }
        if let Some(store) = &self.config.creds_store {
            return run_helper(store, registry, server).await;
        }
        Ok(None)
    }

    /// The `auths` entry for a registry: keys may be bare hosts or URLs
    /// (`https://host/v1/`); Docker Hub has several spellings.
    fn find_auth(&self, registry: &str) -> Option<&AuthEntry> {
        let wanted: &[&str] = if registry == DOCKER_HUB {
            &["docker.io", "index.docker.io", "registry-1.docker.io"]
        } else {
            std::slice::from_ref(&registry)
        };
        self.config.auths.iter().find_map(|(k, v)| {
            let host = k
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default();
            wanted.contains(&host).then_some(v)
        })
    }

    fn decode(&self, registry: &str, e: &AuthEntry) -> Result<Credential> {
        let where_ = || {
            self.path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        if let Some(tok) = e.identity_token.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Credential::IdentityToken(Secret::new(tok)));
        }
        if let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| ConfigError::AuthNotBase64 {
                    config: where_(),
                    registry: registry.to_string(),
                })?;
            let text = String::from_utf8(raw).map_err(|_| ConfigError::AuthNotUtf8 {
                config: where_(),
                registry: registry.to_string(),
            })?;
            let (user, pass) =
                text.split_once(':')
                    .ok_or_else(|| ConfigError::AuthNotUserPassword {
                        config: where_(),
                        registry: registry.to_string(),
                    })?;
            return Ok(Credential::Basic {
                username: user.to_string(),
                password: Secret::new(pass),
            });
        }
        match (&e.username, &e.password) {
            (Some(u), Some(p)) => Ok(Credential::Basic {
                username: u.clone(),
                password: Secret::new(p.clone()),
            }),
            _ => Err(ConfigError::EntryWithoutCredentials {
                config: where_(),
                registry: registry.to_string(),
            }
            .into()),
        }
    }
}

#[derive(Deserialize)]
struct HelperOutput {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-<helper> get` with `server` on stdin.
async fn run_helper(helper: &str, registry: &str, server: &str) -> Result<Option<Credential>> {
    run_program(
        &format!("docker-credential-{helper}"),
        helper,
        registry,
        server,
    )
    .await
}

/// Runs a credential helper `program`; `helper` is its name for error messages.
async fn run_program(
    program: &str,
    helper: &str,
    registry: &str,
    server: &str,
) -> Result<Option<Credential>> {
    let fail = |reason: HelperError| Error::CredentialHelper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        reason,
    };
    let mut child = tokio::process::Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| fail(HelperError::Spawn { error }))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|error| fail(HelperError::Write { error }))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|error| fail(HelperError::Wait { error }))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The protocol reports "credentials not found" on stdout; that means anonymous.
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        // Its output is not echoed: a misbehaving helper could print a secret.
        return Err(fail(HelperError::Exited { status: out.status }));
    }
    let parsed: HelperOutput =
        serde_json::from_str(&stdout).map_err(|_| fail(HelperError::BadOutput))?;
    if parsed.username == "<token>" {
        return Ok(Some(Credential::IdentityToken(Secret::new(parsed.secret))));
    }
    Ok(Some(Credential::Basic {
        username: parsed.username,
        password: Secret::new(parsed.secret),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(json: &str) -> (tempfile::TempDir, CredentialStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        let s = CredentialStore::load(Some(&path)).unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn auths_entries_decode() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        let (_d, s) = store(&format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "localhost:5000": {{"username": "bob", "password": "pw"}},
                "https://ghcr.io": {{"identitytoken": "refresh"}}
            }}}}"#
        ));
        assert_eq!(
            s.lookup("docker.io").await.unwrap(),
            Some(Credential::Basic {
                username: "alice".into(),
                password: Secret::new("s3cr:et")
            })
        );
        assert_eq!(
            s.lookup("localhost:5000").await.unwrap(),
            Some(Credential::Basic {
                username: "bob".into(),
                password: Secret::new("pw")
            })
        );
        assert_eq!(
            s.lookup("ghcr.io").await.unwrap(),
            Some(Credential::IdentityToken(Secret::new("refresh")))
        );
        assert_eq!(s.lookup("quay.io").await.unwrap(), None);
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("pw") && !dbg.contains("refresh"), "{dbg}");
    }

    #[tokio::test]
    async fn helpers_follow_the_protocol() {
        let dir = tempfile::tempdir().unwrap();
        // A helper that echoes the server it was asked about as the username.
        let helper = dir.path().join("docker-credential-kilntest");
        std::fs::write(
            &helper,
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread server\nif [ \"$server\" = nope ]; then echo 'credentials not found in native keychain'; exit 1; fi\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"hs\"}' \"$server\" \"$server\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let got = run_helper_in(
            dir.path(),
            "kilntest",
            "r.example",
            "https://index.docker.io/v1/",
        )
        .await;
        assert_eq!(
            got.unwrap(),
            Some(Credential::Basic {
                username: "https://index.docker.io/v1/".into(),
                password: Secret::new("hs")
            })
        );
        let got = run_helper_in(dir.path(), "kilntest", "r.example", "nope").await;
        assert_eq!(got.unwrap(), None);
        let e = run_helper_in(dir.path(), "missing", "r.example", "x")
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "credential helper docker-credential-missing for r.example: cannot run it"
            ),
            "{e}"
        );
    }

    /// Runs the helper `docker-credential-<helper>` from `dir` by absolute path, so the
    /// test does not change the process's PATH.
    async fn run_helper_in(
        dir: &Path,
        helper: &str,
        registry: &str,
        server: &str,
    ) -> Result<Option<Credential>> {
        let exe = dir.join(format!("docker-credential-{helper}"));
        run_program(&exe.display().to_string(), helper, registry, server).await
    }
}
