//! Helpers of the step-cache tests (`e2e_cache*.rs`): building with plain
//! progress, reading which RUN markers printed and which step ids ran, a
//! small cached app, and reading layouts and layer files.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// A base with busybox as /bin/sh, so RUN lines use the shell form.
pub const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// Builds the sandbox's context into the OCI layout `out`; returns the
/// image digest and the names of the RUN markers that printed.
pub fn build(sb: &Sandbox, out: &str, extra: &[&str]) -> (String, Vec<String>) {
    let (digest, log) = build_log(sb, out, extra);
    (digest, markers(&log))
}

/// [`build`], returning the digest and the whole log.
pub fn build_log(sb: &Sandbox, out: &str, extra: &[&str]) -> (String, String) {
    let dest = format!("type=oci,dest={}", sb.path(out).display());
    let ctx = sb.context().to_string_lossy().to_string();
    let mut args = vec!["build", "--progress", "plain", "--output", &dest];
    args.extend_from_slice(extra);
    args.push(&ctx);
    let o = sb.kiln(&args);
    assert_success(&o);
    (stdout(&o).trim().to_string(), stderr(&o))
}

pub fn markers(log: &str) -> Vec<String> {
    let mut found: Vec<String> = log
        .split(|c: char| c.is_whitespace())
        .filter_map(|w| w.strip_prefix("EXECUTED-"))
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The progress id (`#N`) of the step whose header line contains `text`.
pub fn step_id(log: &str, text: &str) -> String {
    log.lines()
        .find(|l| l.starts_with('#') && l.contains(text))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no step {text} in\n{log}"))
        .to_string()
}

pub fn names(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A context whose build has two RUN steps and a COPY.
pub fn cached_app(sb: &Sandbox) {
    sb.busybox();
    sb.write("app.txt", "app\n");
    sb.dockerfile(&format!(
        "{BASE}COPY app.txt /app.txt\nRUN echo EXEC\"\"UTED-build && cp /app.txt /built.txt\nRUN echo EXEC\"\"UTED-test\n"
    ));
}

/// Points the sandbox at a fresh, empty cache directory: a new machine.
pub fn wipe_local_cache(sb: &Sandbox) {
    std::fs::remove_dir_all(sb.path("cache")).expect("wipe cache");
}

/// The manifest of the single image in the OCI layout at `layout`.
/// A file of the last layer (gzip) of the image in the OCI layout `out`.
pub fn last_layer_file(sb: &Sandbox, out: &str, name: &str) -> String {
    let layers = layout_manifest(&sb.path(out))["layers"].clone();
    let last = layers.as_array().and_then(|l| l.last()).expect("layers");
    let blob = sb.path(out).join("blobs/sha256").join(
        last["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:"),
    );
    run_tool("tar", &["-xzOf", &blob.to_string_lossy(), name])
}

pub fn layout_manifest(layout: &std::path::Path) -> serde_json::Value {
    let read = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&p).expect("read layout file")).expect("json")
    };
    let index = read(layout.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().expect("digest");
    read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
}

/// The hex digest `sha256sum` computes for `path`.
pub fn sha256_of(path: &std::path::Path) -> String {
    let out = run_tool("sha256sum", &[&path.to_string_lossy()]);
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
