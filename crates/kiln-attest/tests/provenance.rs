//! Provenance statements: the in-toto Statement v1 / SLSA v1 shape, what min and max
//! modes carry, credentials and secret values never written, reproducible bytes.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use kiln_attest::provenance::{
    statement, BuildRecord, CacheStatus, Context, ImageDep, Mode, MountId, Step, Subject, UrlDep,
};
use serde_json::Value;

const SECRET: &str = "s3cr3t-value-9f8e7d";
const TOKEN: &str = "ghp_0123456789abcdefghij";

fn record() -> BuildRecord {
    BuildRecord {
        subjects: vec![Subject {
            name: "pkg:docker/registry.example/app@1.0?platform=linux/amd64".into(),
            digest: BTreeMap::from([("sha256".into(), "ab".repeat(32))]),
        }],
        builder_id: "https://ci.example/runs/42".into(),
        build_type: "https://example.invalid/kiln/build-type/v1".into(),
        invocation_id: Some("inv-1".into()),
        frontend: "dockerfile.v0".into(),
        dockerfile_path: "Dockerfile".into(),
        dockerfile_sha256: "cd".repeat(32),
        target: Some("release".into()),
        platforms: vec!["linux/amd64".into()],
        build_args: BTreeMap::from([
            ("VERSION".into(), "1.0".into()),
            // A build arg that carries a secret value by mistake.
            ("LEAKY".into(), format!("prefix-{SECRET}")),
        ]),
        labels: BTreeMap::from([("org.opencontainers.image.title".into(), "app".into())]),
        secrets: vec![MountId {
            id: "npmrc".into(),
            optional: false,
        }],
        ssh: vec![],
        source_date_epoch: None,
        context: Some(Context::Git {
            url: format!("https://oauth2:{TOKEN}@git.example/team/app.git#main"),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
        }),
        images: vec![
            ImageDep {
                reference: "debian:bookworm".into(),
                digest: format!("sha256:{}", "11".repeat(32)),
                platform: Some("linux/amd64".into()),
            },
            ImageDep {
                reference: "ghcr.io/team/tools:2".into(),
                digest: format!("sha256:{}", "22".repeat(32)),
                platform: None,
            },
        ],
        http: vec![UrlDep {
            url: format!("https://user:{TOKEN}@files.example/tool.tgz?X-Amz-Signature={TOKEN}"),
            digest: BTreeMap::from([("sha256".into(), "33".repeat(32))]),
        }],
        git: vec![],
        steps: vec![
            Step {
                stage: "build".into(),
                instruction: "RUN make".into(),
                cache: CacheStatus::Miss,
                started_ms: 1_700_000_000_000,
                finished_ms: 1_700_000_002_500,
            },
            Step {
                stage: "release".into(),
                instruction: "COPY --from=build /out /".into(),
                cache: CacheStatus::Hit,
                started_ms: 1_700_000_002_500,
                finished_ms: 1_700_000_002_510,
            },
        ],
        network: true,
        builder_platform: "linux/amd64".into(),
        started_on: 1_700_000_000,
        finished_on: 1_700_000_003,
        redact: vec![SECRET.into()],
    }
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// The in-toto Statement v1 shape (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md):
/// exactly `_type`, `subject` (non-empty, each with a name and a non-empty digest set
/// of lower-case hex), `predicateType`, `predicate`.
fn assert_statement_shape(v: &Value) {
    let o = v.as_object().expect("object");
    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["_type", "predicate", "predicateType", "subject"]);
    assert_eq!(v["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(v["predicateType"], "https://slsa.dev/provenance/v1");
    let subjects = v["subject"].as_array().expect("subject array");
    assert!(!subjects.is_empty());
    for s in subjects {
        assert!(s["name"].is_string());
        let d = s["digest"].as_object().expect("digest set");
        assert!(!d.is_empty());
        for hex in d.values() {
            let hex = hex.as_str().expect("hex");
            assert!(hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
    }
    let p = &v["predicate"];
    for path in [
        "/buildDefinition/buildType",
        "/buildDefinition/externalParameters",
        "/runDetails/builder/id",
        "/runDetails/metadata/invocationId",
        "/runDetails/metadata/startedOn",
        "/runDetails/metadata/finishedOn",
    ] {
        assert!(p.pointer(path).is_some(), "{path} missing");
    }
}

#[test]
fn max_mode_carries_everything_but_secrets_and_credentials() {
    let bytes = statement(&record(), Mode::Max).expect("statement");
    let text = String::from_utf8(bytes.clone()).expect("utf8");
    let v = parse(&bytes);
    assert_statement_shape(&v);
    assert!(!text.contains(SECRET), "secret value leaked: {text}");
    assert!(!text.contains(TOKEN), "credential leaked: {text}");
    let bd = &v["predicate"]["buildDefinition"];
    assert_eq!(
        bd["externalParameters"]["configSource"],
        serde_json::json!({
            "uri": "https://git.example/team/app.git#main",
            "digest": {"sha1": "0123456789abcdef0123456789abcdef01234567"},
            "path": "Dockerfile"
        })
    );
    let args = &bd["externalParameters"]["request"]["args"];
    assert_eq!(args["build-arg:VERSION"], "1.0");
    assert_eq!(args["build-arg:LEAKY"], "prefix-xxxxx");
    assert_eq!(args["label:org.opencontainers.image.title"], "app");
    assert_eq!(args["target"], "release");
    assert_eq!(
        bd["externalParameters"]["request"]["secrets"],
        serde_json::json!([{"id": "npmrc"}])
    );
    assert_eq!(
        bd["externalParameters"]["dockerfile"]["digest"]["sha256"],
        "cd".repeat(32)
    );
    let uris: Vec<&str> = bd["resolvedDependencies"]
        .as_array()
        .expect("deps")
        .iter()
        .map(|d| d["uri"].as_str().expect("uri"))
        .collect();
    assert_eq!(
        uris,
        vec![
            "pkg:docker/debian@bookworm?platform=linux/amd64",
            "pkg:docker/ghcr.io/team/tools@2",
            "https://git.example/team/app.git#main",
            "https://files.example/tool.tgz",
        ]
    );
    assert_eq!(
        bd["resolvedDependencies"][0]["digest"]["sha256"],
        "11".repeat(32)
    );
    let steps = bd["internalParameters"]["buildConfig"]["steps"]
        .as_array()
        .expect("steps in max mode");
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["cache"], "miss");
    assert_eq!(steps[0]["durationMs"], 2500);
    assert_eq!(steps[1]["cache"], "hit");
    let md = &v["predicate"]["runDetails"]["metadata"];
    assert_eq!(md["invocationId"], "inv-1");
    assert_eq!(md["startedOn"], "2023-11-14T22:13:20Z");
    assert_eq!(md["buildkit_completeness"]["resolvedDependencies"], true);
    assert_eq!(md["buildkit_hermetic"], false);
}

#[test]
fn min_mode_drops_what_buildkit_drops() {
    let v = parse(&statement(&record(), Mode::Min).expect("statement"));
    assert_statement_shape(&v);
    let req = &v["predicate"]["buildDefinition"]["externalParameters"]["request"];
    let args = req["args"].as_object().expect("args");
    assert!(
        args.keys()
            .all(|k| !k.starts_with("build-arg:") && !k.starts_with("label:")),
        "{args:?}"
    );
    assert_eq!(args["target"], "release");
    assert!(req.get("secrets").is_none());
    assert!(v["predicate"]["buildDefinition"]["internalParameters"]
        .get("buildConfig")
        .is_none());
    assert_eq!(
        v["predicate"]["runDetails"]["metadata"]["buildkit_completeness"]["request"],
        false
    );
    // Dependencies are the same in both modes.
    assert_eq!(
        v["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
}

#[test]
fn source_date_epoch_gives_identical_bytes() {
    let mut a = record();
    a.source_date_epoch = Some(1_600_000_000);
    a.invocation_id = None;
    let mut b = a.clone();
    // Another run: other wall-clock times and step timings.
    b.started_on += 100;
    b.finished_on += 200;
    for s in &mut b.steps {
        s.started_ms += 7;
        s.finished_ms += 99;
    }
    for mode in [Mode::Min, Mode::Max] {
        let x = statement(&a, mode).expect("statement");
        let y = statement(&b, mode).expect("statement");
        assert_eq!(x, y, "{mode:?}");
        let v = parse(&x);
        assert_eq!(
            v["predicate"]["runDetails"]["metadata"]["startedOn"],
            "2020-09-13T12:26:40Z"
        );
        assert_eq!(
            v["predicate"]["runDetails"]["metadata"]["buildkit_reproducible"],
            true
        );
    }
    // And not identical when the epoch differs.
    let mut c = a.clone();
    c.source_date_epoch = Some(1_600_000_001);
    assert_ne!(
        statement(&a, Mode::Max).expect("a"),
        statement(&c, Mode::Max).expect("c")
    );
}

#[test]
fn local_context_is_incomplete_and_listed_as_locals() {
    let mut r = record();
    r.context = Some(Context::Local);
    let v = parse(&statement(&r, Mode::Min).expect("statement"));
    assert_eq!(
        v["predicate"]["buildDefinition"]["externalParameters"]["request"]["locals"],
        serde_json::json!([{"name": "context"}, {"name": "dockerfile"}])
    );
    assert_eq!(
        v["predicate"]["runDetails"]["metadata"]["buildkit_completeness"]["resolvedDependencies"],
        false
    );
}

#[test]
fn object_context_keeps_etag_and_digest_without_signature() {
    let mut r = record();
    r.context = Some(Context::Object {
        url: format!("https://bucket.s3.amazonaws.com/ctx.tar.gz?X-Amz-Credential=AKIA&X-Amz-Signature={TOKEN}"),
        etag: Some("\"9b2cf535f27731c974343645a3985328\"".into()),
        digest: BTreeMap::from([("sha256".into(), "44".repeat(32))]),
    });
    let bytes = statement(&r, Mode::Max).expect("statement");
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains(TOKEN) && !text.contains("AKIA"), "{text}");
    let v = parse(&bytes);
    let cs = &v["predicate"]["buildDefinition"]["externalParameters"]["configSource"];
    assert_eq!(cs["uri"], "https://bucket.s3.amazonaws.com/ctx.tar.gz");
    assert_eq!(cs["digest"]["sha256"], "44".repeat(32));
}

#[test]
fn a_statement_needs_a_subject_with_a_digest() {
    let mut r = record();
    r.subjects.clear();
    assert!(statement(&r, Mode::Min).is_err());
    let mut r = record();
    r.subjects[0].digest.clear();
    assert!(statement(&r, Mode::Min).is_err());
}
