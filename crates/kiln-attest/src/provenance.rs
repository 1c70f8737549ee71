//! SLSA v1 provenance of one build, as an in-toto Statement v1.
//!
//! [`statement`] turns a typed [`BuildRecord`] into the JSON document BuildKit writes
//! (`https://slsa.dev/provenance/v1` predicate; BuildKit's field choices from its
//! `docs/attestations/slsa-definitions.md`): `buildDefinition.externalParameters`
//! holds `configSource` (the context URI and digest when it is remote, the Dockerfile
//! path) and `request` (frontend, `build-arg:`/`label:` args, target, platforms, secret
//! and ssh ids, locals), `internalParameters` the builder platform (and in `max` mode
//! the steps with cache status and timings, kiln's counterpart of BuildKit's LLB
//! definition), `resolvedDependencies` every image (as `pkg:docker` PURLs), git
//! repository and http source with its digest, and `runDetails` the builder id and the
//! invocation's id and times. `min` mode drops what BuildKit's drops (build args,
//! labels, secret and ssh ids) and marks the request incomplete.
//!
//! Two kiln extensions, both in `externalParameters`: `dockerfile` (path and SHA-256 of
//! the Dockerfile read) and `request.args["source-date-epoch"]`.
//!
//! Never in the output: userinfo of any URL and credential query parameters of
//! pre-signed URLs (BuildKit's CVE-2023-26054), and any string the caller names as a
//! secret value ([`BuildRecord::redact`]), which is replaced wherever it occurs. With
//! `SOURCE_DATE_EPOCH` the times are that epoch and step timings are left out, so the
//! same record gives the same bytes.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// The in-toto statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The SLSA provenance predicate type.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What replaces a redacted value.
const REDACTED: &str = "xxxxx";

#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("provenance has no subject")]
    NoSubject,
    #[error("subject {0:?} has no digest")]
    SubjectWithoutDigest(String),
    #[error("serialize provenance: {0}")]
    Json(#[from] serde_json::Error),
}

/// How much the provenance says (BuildKit's `mode=min|max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Min,
    Max,
}

/// What the statement is about: an image manifest, usually.
#[derive(Debug, Clone)]
pub struct Subject {
    pub name: String,
    /// Algorithm → hex digest (`sha256` → `…`).
    pub digest: BTreeMap<String, String>,
}

/// Where the build context came from.
#[derive(Debug, Clone)]
pub enum Context {
    /// A local directory (or stdin): not tracked, so the dependencies are incomplete.
    Local,
    /// A git repository: URL (with `#ref:subdir` if any) and the commit built.
    Git { url: String, commit: String },
    /// An object store or http archive: URL and whatever identifies its content.
    Object {
        url: String,
        etag: Option<String>,
        /// Algorithm → hex digest of the bytes fetched.
        digest: BTreeMap<String, String>,
    },
}

/// A base or `COPY --from` image.
#[derive(Debug, Clone)]
pub struct ImageDep {
    /// The reference as the Dockerfile named it (`debian:bookworm`).
    pub reference: String,
    /// `sha256:…` of the manifest used.
    pub digest: String,
    /// `linux/amd64`, if the image was resolved for a platform.
    pub platform: Option<String>,
}

/// An http `ADD` source or a git repository the build read.
#[derive(Debug, Clone)]
pub struct UrlDep {
    pub url: String,
    /// Algorithm → hex digest (`sha256` for http, `sha1` for a git commit).
    pub digest: BTreeMap<String, String>,
}

/// A secret or ssh forward the build mounted: its id, never its value.
#[derive(Debug, Clone)]
pub struct MountId {
    pub id: String,
    pub optional: bool,
}

/// How a step's result was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    Hit,
    Miss,
}

/// One executed step (mode=max).
#[derive(Debug, Clone)]
pub struct Step {
    /// Stage name or index.
    pub stage: String,
    /// The instruction as written (`RUN apt-get update`).
    pub instruction: String,
    pub cache: CacheStatus,
    /// Milliseconds since the epoch.
    pub started_ms: u64,
    pub finished_ms: u64,
}

/// Everything the provenance of one build says.
#[derive(Debug, Clone, Default)]
pub struct BuildRecord {
    /// The statement's subjects (the image manifests built).
    pub subjects: Vec<Subject>,
    /// `runDetails.builder.id`: the URL of the build (CI run) or the builder.
    pub builder_id: String,
    /// `buildDefinition.buildType`: the URI of the document describing this format.
    pub build_type: String,
    /// Unique id of this invocation; derived from the record when `None`.
    pub invocation_id: Option<String>,
    /// `dockerfile.v0` for Dockerfile builds.
    pub frontend: String,
    pub dockerfile_path: String,
    /// Hex SHA-256 of the Dockerfile's bytes.
    pub dockerfile_sha256: String,
    pub target: Option<String>,
    pub platforms: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub secrets: Vec<MountId>,
    pub ssh: Vec<MountId>,
    pub source_date_epoch: Option<u64>,
    pub context: Option<Context>,
    pub images: Vec<ImageDep>,
    pub http: Vec<UrlDep>,
    pub git: Vec<UrlDep>,
    pub steps: Vec<Step>,
    /// Whether any step had network access (a build without is hermetic).
    pub network: bool,
    /// `linux/amd64`: the platform kiln ran on.
    pub builder_platform: String,
    /// Seconds since the epoch.
    pub started_on: u64,
    pub finished_on: u64,
    /// Secret values known to the build: replaced by `xxxxx` wherever they would
    /// appear (a build arg that carries one, a URL).
    pub redact: Vec<String>,
}

impl Context {
    fn kind(&self) -> &'static str {
        match self {
            Context::Local => "local",
            Context::Git { .. } => "git",
            Context::Object { .. } => "object",
        }
    }
}

/// Query parameters of pre-signed URLs that carry credentials.
const CREDENTIAL_PARAMS: &[&str] = &[
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "sig",
    "signature",
    "token",
    "access_token",
    "password",
];

/// `url` without userinfo (`https://user:token@host` → `https://host`) and without
/// credential query parameters. scp-like git addresses (`git@host:repo`) name a user,
/// not a credential, and are kept; anything else that does not parse as a URL loses
/// whatever precedes an `@` in its authority.
pub fn strip_credentials(url: &str) -> String {
    if let Ok(mut u) = url::Url::parse(url) {
        if u.has_host() {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                let kept: Vec<(String, String)> = u
                    .query_pairs()
                    .filter(|(k, _)| !CREDENTIAL_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                if kept.is_empty() {
                    u.set_query(None);
                } else {
                    u.query_pairs_mut().clear().extend_pairs(kept);
                }
            }
            return u.to_string();
        }
        return url.to_string();
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            return format!("{scheme}://{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// `pkg:docker/…` for an image reference as BuildKit writes it: the familiar name
/// (`docker.io/library/` dropped), the tag as version (`latest` when none), a `digest`
/// qualifier when the reference pins one, and the platform.
pub fn image_purl(reference: &str, platform: Option<&str>) -> String {
    let (named, pinned) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let last_slash = named.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match named[last_slash..].rfind(':') {
        Some(i) => (&named[..last_slash + i], Some(&named[last_slash + i + 1..])),
        None => (named, None),
    };
    let mut name = name.strip_prefix("docker.io/").unwrap_or(name);
    name = name.strip_prefix("index.docker.io/").unwrap_or(name);
    name = name.strip_prefix("library/").unwrap_or(name);
    let (ns, short) = match name.rsplit_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, name),
    };
    let version = match (tag, pinned) {
        (Some(t), _) => t,
        (None, Some(_)) => "",
        (None, None) => "latest",
    };
    let mut q: Vec<(&str, &str)> = Vec::new();
    if let Some(d) = pinned {
        q.push(("digest", d));
    }
    if let Some(p) = platform {
        q.push(("platform", p));
    }
    crate::sbom::purl("docker", ns, short, version, &q)
        .unwrap_or_else(|_| format!("pkg:docker/{}", strip_credentials(reference)))
}

/// `sha256:abc` → `{"sha256": "abc"}`.
fn digest_set(d: &str) -> BTreeMap<String, String> {
    match d.split_once(':') {
        Some((alg, hex)) => BTreeMap::from([(alg.to_string(), hex.to_string())]),
        None => BTreeMap::new(),
    }
}

fn dep(uri: String, digest: BTreeMap<String, String>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("uri".into(), Value::String(uri));
    if !digest.is_empty() {
        m.insert("digest".into(), json!(digest));
    }
    Value::Object(m)
}

/// The in-toto Statement (JSON bytes, one trailing newline) for `rec` in `mode`.
pub fn statement(rec: &BuildRecord, mode: Mode) -> Result<Vec<u8>, ProvenanceError> {
    if rec.subjects.is_empty() {
        return Err(ProvenanceError::NoSubject);
    }
    if let Some(s) = rec.subjects.iter().find(|s| s.digest.is_empty()) {
        return Err(ProvenanceError::SubjectWithoutDigest(s.name.clone()));
    }
    let reproducible = rec.source_date_epoch.is_some();

    // resolvedDependencies: images, then the context, git and http sources, as
    // BuildKit orders its materials; each list sorted.
    let mut images: Vec<Value> = rec
        .images
        .iter()
        .map(|i| {
            dep(
                image_purl(&i.reference, i.platform.as_deref()),
                digest_set(&i.digest),
            )
        })
        .collect();
    images.sort_by_key(|v| v.to_string());
    let mut deps = images;
    let mut config_source = serde_json::Map::new();
    let mut locals: Vec<Value> = Vec::new();
    match &rec.context {
        Some(Context::Git { url, commit }) => {
            let url = strip_credentials(url);
            let d = BTreeMap::from([(
                if commit.len() == 64 { "sha256" } else { "sha1" }.to_string(),
                commit.clone(),
            )]);
            config_source.insert("uri".into(), json!(url));
            config_source.insert("digest".into(), json!(d));
            deps.push(dep(url, d));
        }
        Some(Context::Object { url, etag, digest }) => {
            let url = strip_credentials(url);
            config_source.insert("uri".into(), json!(url));
            if !digest.is_empty() {
                config_source.insert("digest".into(), json!(digest));
            }
            let mut d = dep(url, digest.clone());
            if let (Some(e), Value::Object(m)) = (etag, &mut d) {
                m.insert("annotations".into(), json!({ "etag": e }));
            }
            deps.push(d);
        }
        Some(Context::Local) | None => {
            locals.push(json!({"name": "context"}));
            locals.push(json!({"name": "dockerfile"}));
        }
    }
    if !rec.dockerfile_path.is_empty() {
        config_source.insert("path".into(), json!(rec.dockerfile_path));
    }
    let mut others: Vec<Value> = rec
        .git
        .iter()
        .chain(&rec.http)
        .map(|u| dep(strip_credentials(&u.url), u.digest.clone()))
        .collect();
    others.sort_by_key(|v| v.to_string());
    deps.extend(others);

    let mut args: BTreeMap<String, String> = BTreeMap::new();
    if mode == Mode::Max {
        for (k, v) in &rec.build_args {
            args.insert(format!("build-arg:{k}"), v.clone());
        }
        for (k, v) in &rec.labels {
            args.insert(format!("label:{k}"), v.clone());
        }
    }
    if let Some(t) = rec.target.as_ref().filter(|t| !t.is_empty()) {
        args.insert("target".into(), t.clone());
    }
    if !rec.platforms.is_empty() {
        args.insert("platform".into(), rec.platforms.join(","));
    }
    if let Some(e) = rec.source_date_epoch {
        args.insert("source-date-epoch".into(), e.to_string());
    }
    let mut request = serde_json::Map::new();
    request.insert("frontend".into(), json!(rec.frontend));
    if !args.is_empty() {
        request.insert("args".into(), json!(args));
    }
    if mode == Mode::Max {
        let ids = |v: &[MountId]| -> Vec<Value> {
            let mut v: Vec<&MountId> = v.iter().collect();
            v.sort_by(|a, b| a.id.cmp(&b.id));
            v.into_iter()
                .map(|m| {
                    if m.optional {
                        json!({"id": m.id, "optional": true})
                    } else {
                        json!({"id": m.id})
                    }
                })
                .collect()
        };
        if !rec.secrets.is_empty() {
            request.insert("secrets".into(), Value::Array(ids(&rec.secrets)));
        }
        if !rec.ssh.is_empty() {
            request.insert("ssh".into(), Value::Array(ids(&rec.ssh)));
        }
    }
    if !locals.is_empty() {
        request.insert("locals".into(), Value::Array(locals));
    }

    let mut external = serde_json::Map::new();
    external.insert("configSource".into(), Value::Object(config_source));
    external.insert("request".into(), Value::Object(request));
    if !rec.dockerfile_sha256.is_empty() {
        external.insert(
            "dockerfile".into(),
            json!({"path": rec.dockerfile_path, "digest": {"sha256": rec.dockerfile_sha256}}),
        );
    }

    let mut internal = serde_json::Map::new();
    internal.insert("builderPlatform".into(), json!(rec.builder_platform));
    if mode == Mode::Max && !rec.steps.is_empty() {
        let steps: Vec<Value> = rec
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut m = serde_json::Map::new();
                m.insert("id".into(), json!(format!("step{i}")));
                m.insert("stage".into(), json!(s.stage));
                m.insert("instruction".into(), json!(s.instruction));
                m.insert("cache".into(), json!(s.cache));
                if !reproducible {
                    m.insert("startedOn".into(), json!(rfc3339_ms(s.started_ms)));
                    m.insert("finishedOn".into(), json!(rfc3339_ms(s.finished_ms)));
                    m.insert(
                        "durationMs".into(),
                        json!(s.finished_ms.saturating_sub(s.started_ms)),
                    );
                }
                Value::Object(m)
            })
            .collect();
        internal.insert("buildConfig".into(), json!({ "steps": steps }));
    }

    let (started, finished) = match rec.source_date_epoch {
        Some(e) => (e, e),
        None => (rec.started_on, rec.finished_on),
    };
    let invocation = rec
        .invocation_id
        .clone()
        .unwrap_or_else(|| derived_invocation_id(rec, mode));
    let complete_deps = !matches!(rec.context, Some(Context::Local) | None);
    let predicate = json!({
        "buildDefinition": {
            "buildType": rec.build_type,
            "externalParameters": Value::Object(external),
            "internalParameters": Value::Object(internal),
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": { "id": rec.builder_id },
            "metadata": {
                "invocationId": invocation,
                "startedOn": crate::rfc3339(started),
                "finishedOn": crate::rfc3339(finished),
                "buildkit_completeness": {
                    "request": mode == Mode::Max,
                    "resolvedDependencies": complete_deps,
                },
                "buildkit_hermetic": complete_deps && !rec.network,
                "buildkit_reproducible": reproducible,
                "kiln_context": rec.context.as_ref().map_or("local", Context::kind),
            },
        },
    });
    let mut subjects: Vec<Value> = rec
        .subjects
        .iter()
        .map(|s| json!({"name": s.name, "digest": s.digest}))
        .collect();
    subjects.sort_by_key(|v| v.to_string());
    let mut stmt = json!({
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    });
    let secrets: Vec<&str> = rec
        .redact
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    redact(&mut stmt, &secrets);
    let mut out = serde_json::to_vec(&sorted(stmt))?;
    out.push(b'\n');
    Ok(out)
}

/// A stable id for a record that came without one: a digest of what it says.
fn derived_invocation_id(rec: &BuildRecord, mode: Mode) -> String {
    let mut h = Sha256::new();
    h.update(format!("{mode:?}\n{:?}\n", rec.source_date_epoch));
    for s in &rec.subjects {
        h.update(s.name.as_bytes());
        for (k, v) in &s.digest {
            h.update(format!("\n{k}:{v}"));
        }
        h.update(b"\n");
    }
    h.update(rec.dockerfile_sha256.as_bytes());
    if rec.source_date_epoch.is_none() {
        h.update(format!("\n{}", rec.started_on));
    }
    hex::encode(&h.finalize()[..16])
}

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// Replaces every occurrence of a secret value in every string (keys included).
fn redact(v: &mut Value, secrets: &[&str]) {
    if secrets.is_empty() {
        return;
    }
    let scrub = |s: &str| -> String {
        let mut s = s.to_string();
        for sec in secrets {
            if s.contains(sec) {
                s = s.replace(sec, REDACTED);
            }
        }
        s
    };
    match v {
        Value::String(s) => *s = scrub(s),
        Value::Array(a) => a.iter_mut().for_each(|x| redact(x, secrets)),
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, mut x) in old {
                redact(&mut x, secrets);
                m.insert(scrub(&k), x);
            }
        }
        _ => {}
    }
}

/// The value with every object's keys in sorted order, whatever map serde_json was
/// built with (its `preserve_order` feature may be on in a larger build).
fn sorted(v: Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        Value::Object(m) => {
            let b: BTreeMap<String, Value> = m.into_iter().map(|(k, x)| (k, sorted(x))).collect();
            Value::Object(b.into_iter().collect())
        }
        x => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_credentials() {
        assert_eq!(
            strip_credentials("https://user:ghp_secret@github.com/o/r.git#main"),
            "https://github.com/o/r.git#main"
        );
        assert_eq!(
            strip_credentials("https://ghp_token@github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(
            strip_credentials("https://b.s3.amazonaws.com/ctx.tar.gz?X-Amz-Signature=abc&X-Amz-Credential=k&versionId=3"),
            "https://b.s3.amazonaws.com/ctx.tar.gz?versionId=3"
        );
        assert_eq!(
            strip_credentials("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(strip_credentials("s3://bucket/key"), "s3://bucket/key");
    }

    #[test]
    fn image_purls_as_buildkit() {
        assert_eq!(
            image_purl("debian:bookworm", Some("linux/amd64")),
            "pkg:docker/debian@bookworm?platform=linux/amd64"
        );
        assert_eq!(
            image_purl("docker.io/library/alpine", None),
            "pkg:docker/alpine@latest"
        );
        assert_eq!(
            image_purl("127.0.0.1:5000/team/app:1.0", None),
            "pkg:docker/127.0.0.1:5000/team/app@1.0"
        );
        assert_eq!(
            image_purl("busybox@sha256:abcd", None),
            "pkg:docker/busybox?digest=sha256:abcd"
        );
    }
}
