//! End-to-end caches outside the machine, through the real `kiln` binary
//! and a loopback registry: a registry cache serving a fresh machine,
//! local and inline caches, Kaniko's one-image-per-step cache repository,
//! cache mounts carried with a registry cache, layers uploaded while the
//! build runs, and a damaged or deleted registry cache.
//!
//! Each RUN prints a marker (`EXEC""UTED-name`, which the shell prints as
//! `EXECUTED-name` while the instruction text shown in progress does not
//! contain it), so the tests can tell exactly which steps ran; the helpers
//! are in `common/cache.rs`.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cache::*;
use common::*;

#[test]
fn registry_cache_serves_a_fresh_machine() {
    let reg = Registry::plain();
    let sb = Sandbox::new();
    cached_app(&sb);
    let cache_ref = format!("{}/app/cache:buildcache", reg.host);
    let to = format!("type=registry,ref={cache_ref},mode=max");
    let (first, ran) = build(&sb, "o1", &["--cache-to", &to]);
    assert_eq!(ran, names(&["build", "test"]));
    // The cache is an ordinary OCI image manifest the registry serves.
    let manifest = skopeo_manifest(&format!("docker://{cache_ref}"));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["layers"].as_array().map(Vec::len),
        Some(4),
        "COPY busybox, RUN install, COPY app, RUN build (RUN test adds no layer)"
    );

    wipe_local_cache(&sb);
    let from = format!("type=registry,ref={cache_ref}");
    let (second, ran) = build(&sb, "o2", &["--cache-from", &from]);
    assert!(
        ran.is_empty(),
        "every step comes from the registry: {ran:?}"
    );
    assert_eq!(first, second);

    // An unreachable cache is a warning, not a failure.
    wipe_local_cache(&sb);
    let (_, ran) = build(
        &sb,
        "o3",
        &["--cache-from", "type=registry,ref=127.0.0.1:9/none/cache"],
    );
    assert_eq!(ran, names(&["build", "test"]));
}

#[test]
fn local_and_inline_caches_round_trip() {
    let reg = Registry::plain();
    let sb = Sandbox::new();
    cached_app(&sb);
    let dir = sb.path("exported-cache");
    let (first, _) = build(
        &sb,
        "o1",
        &["--cache-to", &format!("type=local,dest={}", dir.display())],
    );
    assert!(dir.join("index.json").is_file());
    wipe_local_cache(&sb);
    let (second, ran) = build(
        &sb,
        "o2",
        &["--cache-from", &format!("type=local,src={}", dir.display())],
    );
    assert!(ran.is_empty(), "{ran:?}");
    assert_eq!(first, second);

    // Inline: the pushed image carries its own cache table.
    wipe_local_cache(&sb);
    let image = format!("{}/app/inline:1", reg.host);
    let o = sb.kiln(&[
        "build",
        "--progress",
        "plain",
        "--cache-to",
        "type=inline",
        "-t",
        &image,
        "--push",
        &sb.context().to_string_lossy(),
    ]);
    assert_success(&o);
    let cfg = skopeo_config(&format!("docker://{image}"));
    let table = cfg["kiln.cache.v1"].as_array().expect("inline table");
    assert_eq!(
        table.len(),
        5,
        "COPY busybox, RUN install, COPY app, two RUNs"
    );
    wipe_local_cache(&sb);
    let (_, ran) = build(&sb, "o3", &["--cache-from", &image]);
    assert!(ran.is_empty(), "{ran:?}");
}

#[test]
fn kaniko_cache_repo_stores_one_image_per_step() {
    let reg = Registry::plain();
    let sb = Sandbox::new();
    cached_app(&sb);
    let ctx = sb.context().to_string_lossy().to_string();
    let dest = format!("{}/team/app:1", reg.host);
    let repo = format!("{}/team/app/cache", reg.host);
    let executor = |sb: &Sandbox| {
        let o = sb.kiln(&[
            "executor",
            "--context",
            &ctx,
            "--destination",
            &dest,
            "--cache=true",
            "--cache-repo",
            &repo,
            "--insecure",
        ]);
        assert_success(&o);
        (stdout(&o).trim().to_string(), markers(&stderr(&o)))
    };
    let (_, ran) = executor(&sb);
    assert_eq!(ran, names(&["build", "test"]));
    let tags = run_tool(
        "skopeo",
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{repo}"),
        ],
    );
    let tags: serde_json::Value = serde_json::from_str(&tags).expect("json");
    let tags = tags["Tags"].as_array().expect("tags");
    // Kaniko caches RUN steps (three here, busybox's install included) and
    // not COPY steps unless --cache-copy-layers.
    assert_eq!(tags.len(), 3, "{tags:?}");
    for t in tags {
        let t = t.as_str().expect("tag");
        assert!(
            t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()),
            "{t}"
        );
    }

    wipe_local_cache(&sb);
    let (_, ran) = executor(&sb);
    assert!(
        ran.is_empty(),
        "RUN steps come from the cache repo: {ran:?}"
    );
}

#[test]
fn cache_mounts_travel_with_a_registry_cache_when_asked() {
    let reg = Registry::plain();
    let sb = Sandbox::new();
    sb.busybox();
    let dockerfile = |v: &str| {
        format!(
            "{BASE}ARG V={v}\nRUN --mount=type=cache,id=pkgs,target=/pkgs if [ -f /pkgs/downloaded ]; then echo EXEC\"\"UTED-warm-$V; else echo EXEC\"\"UTED-cold-$V; echo data > /pkgs/downloaded; fi\n"
        )
    };
    sb.dockerfile(&dockerfile("1"));
    let cache_ref = format!("{}/app/cache:mounts", reg.host);
    let to = format!("type=registry,ref={cache_ref},mode=max,mounts=true");
    let (_, ran) = build(&sb, "o1", &["--cache-to", &to]);
    assert_eq!(ran, names(&["cold-1"]));

    // A fresh machine with a changed step: it runs, and finds the package
    // cache the first machine filled.
    wipe_local_cache(&sb);
    sb.dockerfile(&dockerfile("2"));
    let from = format!("type=registry,ref={cache_ref}");
    let (_, ran) = build(&sb, "o2", &["--cache-from", &from]);
    assert_eq!(ran, names(&["warm-2"]));

    // Without mounts=true the cache carries no mount contents.
    let plain = format!("{}/app/cache:plain", reg.host);
    build(
        &sb,
        "o3",
        &["--cache-to", &format!("type=registry,ref={plain},mode=max")],
    );
    wipe_local_cache(&sb);
    sb.dockerfile(&dockerfile("3"));
    let (_, ran) = build(
        &sb,
        "o4",
        &["--cache-from", &format!("type=registry,ref={plain}")],
    );
    assert_eq!(ran, names(&["cold-3"]));
}

#[test]
fn layers_upload_while_the_build_runs() {
    let reg = Registry::plain();
    let sb = Sandbox::new();
    cached_app(&sb);
    let image = format!("{}/app/early:1", reg.host);
    let o = sb.kiln(&[
        "build",
        "--progress",
        "plain",
        "-t",
        &image,
        "--push",
        &sb.context().to_string_lossy(),
    ]);
    assert_success(&o);
    let log = stderr(&o);
    // Four layers were sent as they were made; the push itself only adds
    // the config and the manifest.
    let summary = log
        .lines()
        .find(|l| l.contains(&format!("pushed {image}@")))
        .unwrap_or_else(|| panic!("no push summary in {log}"));
    assert!(
        summary.contains("pushed 1 blob(s)") && summary.contains("4 blob(s)"),
        "{summary}"
    );
    // And the registry serves the whole image.
    let manifest = skopeo_manifest(&format!("docker://{image}"));
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(4));
    let digest = stdout(&o).trim().to_string();
    let inspect = run_tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ],
    );
    assert!(inspect.contains(&digest), "{inspect}");
}

#[test]
fn a_damaged_or_deleted_registry_cache_is_a_warning_and_the_steps_run() {
    let reg = Registry::plain();
    let sb = Sandbox::new();
    cached_app(&sb);
    let cache_ref = format!("{}/app/cache:damaged", reg.host);
    let (_, ran) = build(
        &sb,
        "o1",
        &[
            "--cache-to",
            &format!("type=registry,ref={cache_ref},mode=max"),
        ],
    );
    assert_eq!(ran, names(&["build", "test"]));

    // Damage one of the cache's layer blobs where the registry keeps it
    // (same size): the registry serves bytes that do not match the digest.
    let manifest = skopeo_manifest(&format!("docker://{cache_ref}"));
    let layer = manifest["layers"][3]["digest"]
        .as_str()
        .expect("digest")
        .trim_start_matches("sha256:")
        .to_string();
    let data = reg
        .data_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer[..2])
        .join(&layer)
        .join("data");
    let mut bytes = std::fs::read(&data).expect("registry blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).expect("damage registry blob");
    wipe_local_cache(&sb);
    let (_, log) = build_log(
        &sb,
        "o2",
        &["--cache-from", &format!("type=registry,ref={cache_ref}")],
    );
    assert!(log.contains("warning: cache import skipped"), "{log}");
    assert!(log.contains(&layer), "the damaged blob is named: {log}");
    assert_eq!(markers(&log), names(&["build", "test"]));

    // A deleted cache manifest: a warning, and the steps run.
    let digest = run_tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{cache_ref}"),
        ],
    );
    run_tool(
        "skopeo",
        &[
            "delete",
            "--tls-verify=false",
            &format!("docker://{}/app/cache@{}", reg.host, digest.trim()),
        ],
    );
    wipe_local_cache(&sb);
    let (_, log) = build_log(
        &sb,
        "o3",
        &["--cache-from", &format!("type=registry,ref={cache_ref}")],
    );
    assert!(log.contains("warning: cache import skipped"), "{log}");
    assert_eq!(markers(&log), names(&["build", "test"]));
}
