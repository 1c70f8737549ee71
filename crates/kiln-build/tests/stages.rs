//! Multi-stage semantics through `kiln_build::build` on scratch stages:
//! ARG values a derived stage inherits from its base stage, and `FROM`
//! matching stage names exactly as written.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use kiln_build::fetch::HttpFetcher;
use kiln_build::progress::{ProgressMode, StderrProgress};
use kiln_build::{build, BuildError, BuildOutput, BuildRequest, LocalImages};
use kiln_image::{BlobStore, Compression, Format, Platform};

fn run(dockerfile: &str, args: &[(&str, &str)]) -> Result<BuildOutput, BuildError> {
    let ctx_dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&work.path().join("store")).unwrap();
    let context = kiln_context::Context::local(ctx_dir.path(), None).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let http = HttpFetcher::new(rt.handle().clone()).unwrap();
    let progress = StderrProgress::new(ProgressMode::Quiet);
    let platform = Platform::new("linux", "amd64", None);
    let req = BuildRequest {
        dockerfile_name: "Dockerfile".into(),
        dockerfile: dockerfile.into(),
        context: &context,
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: None,
        platform: platform.clone(),
        build_platform: platform,
        labels: BTreeMap::new(),
        store: &store,
        work_dir: work.path().join("stages"),
        compression: Compression::None,
        intermediate_compression: Compression::None,
        format: Format::Oci,
        source_date_epoch: Some(0),
        resolver: &LocalImages,
        http: &http,
        progress: &progress,
        isolation: kiln_sandbox::Isolation::Auto,
        secrets: BTreeMap::new(),
        ssh: BTreeMap::new(),
        mount_cache_dir: work.path().join("mounts"),
        cache: Vec::new(),
        stat_cache: &kiln_build::cache::StatCache::default(),
        jobs: 0,
        ignore_paths: Vec::new(),
        force_in_place: false,
        allow_insecure: false,
        on_layer: None,
        snapshot_dir: None,
        reuse_snapshots: false,
    };
    build(&req)
}

fn labels(out: &BuildOutput) -> BTreeMap<String, String> {
    out.image.config.config.labels.clone().into_iter().collect()
}

#[test]
fn derived_stages_inherit_arg_values() {
    let df = r#"ARG OTHER="fix"
FROM scratch AS base
ARG NAME="base"
LABEL a="base:: $NAME"

FROM base AS base-dev
ARG NAME="$NAME-dev"
LABEL b="dev:: $NAME"

FROM base-dev AS base-custom
ARG NAME
LABEL c="custom:: $NAME / $OTHER"

FROM base-custom
ARG OTHER
LABEL d="custom:: $NAME / $OTHER"
"#;
    let out = run(df, &[]).unwrap();
    let l = labels(&out);
    assert_eq!(l["a"], "base:: base");
    assert_eq!(l["b"], "dev:: base-dev");
    assert_eq!(l["c"], "custom:: base-dev / ");
    assert_eq!(l["d"], "custom:: base-dev / fix");

    // A build arg still wins over the inherited value.
    let out = run(df, &[("NAME", "cli")]).unwrap();
    let l = labels(&out);
    assert_eq!(l["b"], "dev:: cli");
    assert_eq!(l["c"], "custom:: cli / ");
}

#[test]
fn unrelated_stages_do_not_share_args() {
    let df = "FROM scratch AS one\nARG NAME=one\nFROM scratch\nARG NAME\nLABEL n=\"[$NAME]\"\n";
    let out = run(df, &[]).unwrap();
    assert_eq!(labels(&out)["n"], "[]");
}

#[test]
fn redeclared_arg_keeps_its_value() {
    let df = "FROM scratch\nARG V=1\nARG V\nLABEL v=\"$V\"\n";
    assert_eq!(labels(&run(df, &[]).unwrap())["v"], "1");
}

#[test]
fn from_with_capitals_does_not_match_a_stage() {
    let df =
        "FROM scratch AS base_stage\nFROM base_stage AS BUG_stage\nFROM BUG_stage AS final_stage\n";
    let e = run(df, &[]).unwrap_err().to_string();
    assert!(
        e.contains("FROM BUG_stage: invalid reference format: repository name must be lowercase"),
        "{e}"
    );
}
