//! End-to-end step caching through the real `kiln` binary: which steps a
//! rebuild reuses and which it runs again, and that a rebuild that changes
//! nothing yields the very same image.
//!
//! Each RUN prints a marker (`EXEC""UTED-name`, which the shell prints as
//! `EXECUTED-name` while the instruction text shown in progress does not
//! contain it), so the tests can tell exactly which steps ran.

mod common;

use common::*;

/// A base with busybox as /bin/sh, so RUN lines use the shell form.
const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// Builds the sandbox's context into the OCI layout `out`; returns the
/// image digest and the names of the RUN markers that printed.
fn build(sb: &Sandbox, out: &str, extra: &[&str]) -> (String, Vec<String>) {
    let (digest, log) = build_log(sb, out, extra);
    (digest, markers(&log))
}

/// [`build`], returning the digest and the whole log.
fn build_log(sb: &Sandbox, out: &str, extra: &[&str]) -> (String, String) {
    let dest = format!("type=oci,dest={}", sb.path(out).display());
    let ctx = sb.context().to_string_lossy().to_string();
    let mut args = vec!["build", "--progress", "plain", "--output", &dest];
    args.extend_from_slice(extra);
    args.push(&ctx);
    let o = sb.kiln(&args);
    assert_success(&o);
    (stdout(&o).trim().to_string(), stderr(&o))
}

fn markers(log: &str) -> Vec<String> {
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
fn step_id(log: &str, text: &str) -> String {
    log.lines()
        .find(|l| l.starts_with('#') && l.contains(text))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no step {text} in\n{log}"))
        .to_string()
}

fn names(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn noop_rebuild_reuses_every_step_and_gives_the_same_digest() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.write("app/a.txt", "alpha\n");
    sb.write("app/b.txt", "beta\n");
    sb.dockerfile(&format!(
        "{BASE}ARG V=1\nENV APP=/app\nWORKDIR /app\nCOPY app/ ./\nRUN echo EXEC\"\"UTED-one && cat a.txt b.txt > both.txt\nLABEL v=$V\nRUN <<EOF\necho EXEC\"\"UTED-two\ndate +%s%N > /stamp\nEOF\nCMD [\"cat\", \"/app/both.txt\"]\n"
    ));
    let (first, ran) = build(&sb, "out1", &[]);
    assert_eq!(ran, names(&["one", "two"]));
    let (second, ran) = build(&sb, "out2", &[]);
    assert!(ran.is_empty(), "nothing runs again: {ran:?}");
    assert_eq!(first, second, "a no-op rebuild is the same image");

    // Touching a file (same content) keeps the cache.
    let f = std::fs::File::options()
        .write(true)
        .open(sb.context().join("app/a.txt"))
        .expect("open");
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .expect("mtime");
    let (third, ran) = build(&sb, "out3", &[]);
    assert!(ran.is_empty(), "an mtime alone re-runs nothing: {ran:?}");
    assert_eq!(first, third);

    // --no-cache runs every step again.
    let (_, ran) = build(&sb, "out4", &["--no-cache"]);
    assert_eq!(ran, names(&["one", "two"]));
}

#[test]
fn a_changed_context_file_reruns_exactly_the_steps_that_read_it_and_later_ones() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.write("a.txt", "alpha\n");
    sb.write("b.txt", "beta\n");
    sb.write("ignored.log", "noise\n");
    sb.write(".dockerignore", "*.log\n");
    sb.dockerfile(&format!(
        "{BASE}RUN echo EXEC\"\"UTED-first\nCOPY a.txt /a.txt\nRUN echo EXEC\"\"UTED-after-a && cp /a.txt /a.copy\nCOPY b.txt /b.txt\nRUN echo EXEC\"\"UTED-after-b\nCOPY . /all/\n"
    ));
    let (d1, ran) = build(&sb, "o1", &[]);
    assert_eq!(ran, names(&["after-a", "after-b", "first"]));

    sb.write("b.txt", "beta two\n");
    let (d2, ran) = build(&sb, "o2", &[]);
    assert_eq!(ran, names(&["after-b"]), "only what follows COPY b.txt");
    assert_ne!(d1, d2);

    sb.write("a.txt", "alpha two\n");
    let (_, ran) = build(&sb, "o3", &[]);
    assert_eq!(ran, names(&["after-a", "after-b"]));

    // A file .dockerignore leaves out changes nothing.
    sb.write("ignored.log", "more noise\n");
    let (_, ran) = build(&sb, "o4", &[]);
    assert!(ran.is_empty(), "{ran:?}");

    // Going back to earlier content finds the earlier steps again.
    sb.write("a.txt", "alpha\n");
    sb.write("b.txt", "beta\n");
    let (d5, ran) = build(&sb, "o5", &[]);
    assert!(ran.is_empty(), "{ran:?}");
    assert_eq!(d1, d5);
}

#[test]
fn build_args_heredocs_and_the_base_image_are_part_of_the_key() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.dockerfile(&format!(
        "{BASE}RUN echo EXEC\"\"UTED-before\nARG FLAVOR=plain\nRUN echo EXEC\"\"UTED-flavor-$FLAVOR\nCOPY <<EOF /etc/app.conf\nmode=fast\nEOF\nRUN echo EXEC\"\"UTED-last\n"
    ));
    let (_, ran) = build(&sb, "o1", &[]);
    assert_eq!(ran, names(&["before", "flavor-plain", "last"]));

    let (_, ran) = build(&sb, "o2", &["--build-arg", "FLAVOR=spicy"]);
    assert_eq!(
        ran,
        names(&["flavor-spicy", "last"]),
        "a changed arg re-runs the steps that see it"
    );

    sb.dockerfile(&format!(
        "{BASE}RUN echo EXEC\"\"UTED-before\nARG FLAVOR=plain\nRUN echo EXEC\"\"UTED-flavor-$FLAVOR\nCOPY <<EOF /etc/app.conf\nmode=slow\nEOF\nRUN echo EXEC\"\"UTED-last\n"
    ));
    let (_, ran) = build(&sb, "o3", &[]);
    assert_eq!(
        ran,
        names(&["last"]),
        "a changed heredoc re-runs from there"
    );

    // A different base image (by digest) re-runs everything on it.
    let base = Sandbox::new();
    base.busybox();
    base.dockerfile(&format!("{BASE}RUN echo one > /version\n"));
    let layout = base.path("base");
    build(&base, "base", &[]);
    sb.dockerfile(&format!(
        "FROM oci-layout://{}\nRUN echo EXEC\"\"UTED-on-base\n",
        layout.display()
    ));
    let (_, ran) = build(&sb, "o4", &[]);
    assert_eq!(ran, names(&["on-base"]));
    let (_, ran) = build(&sb, "o5", &[]);
    assert!(ran.is_empty());
    base.dockerfile(&format!("{BASE}RUN echo two > /version\n"));
    std::fs::remove_dir_all(&layout).expect("rm");
    build(&base, "base", &[]);
    let (_, ran) = build(&sb, "o6", &[]);
    assert_eq!(ran, names(&["on-base"]), "a new base digest re-runs");
}

#[test]
fn stages_are_keyed_by_what_they_copy_from() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.write("src.txt", "v1\n");
    sb.write("other.txt", "x\n");
    let base = BASE.replacen("FROM scratch", "FROM scratch AS base", 1);
    sb.dockerfile(&format!(
        "{base}\nFROM scratch AS build\nCOPY src.txt /out.txt\n\nFROM base\nCOPY other.txt /other.txt\nRUN echo EXEC\"\"UTED-other\nCOPY --from=build /out.txt /out.txt\nRUN echo EXEC\"\"UTED-final && cat /out.txt\n"
    ));
    let (_, ran) = build(&sb, "o1", &[]);
    assert_eq!(ran, names(&["final", "other"]));
    sb.write("src.txt", "v2\n");
    let (_, ran) = build(&sb, "o2", &[]);
    assert_eq!(ran, names(&["final"]), "only what reads the changed stage");
}

#[test]
fn concurrent_builds_share_one_cache_dir() {
    let sb = Sandbox::new();
    sb.busybox();
    for i in 0..50 {
        sb.write(&format!("files/f{i}.txt"), &format!("file {i}\n"));
    }
    sb.dockerfile(&format!(
        "{BASE}COPY files/ /files/\nRUN echo EXEC\"\"UTED-count && ls /files | wc -l > /count\n"
    ));
    let spawn = |out: &str| {
        let dest = format!("type=oci,dest={}", sb.path(out).display());
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", "--progress", "plain", "--output", &dest])
            .arg(sb.context())
            .env("KILN_CACHE_DIR", sb.path("cache"))
            .env_remove("SOURCE_DATE_EPOCH")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn kiln")
    };
    let a = spawn("a");
    let b = spawn("b");
    let a = a.wait_with_output().expect("wait");
    let b = b.wait_with_output().expect("wait");
    assert_success(&a);
    assert_success(&b);
    // Afterwards the cache is whole: a third build reuses everything and
    // matches one of the two.
    let (third, ran) = build(&sb, "c", &[]);
    assert!(ran.is_empty(), "{ran:?}");
    let firsts = [stdout(&a).trim().to_string(), stdout(&b).trim().to_string()];
    assert!(firsts.contains(&third), "{third} not in {firsts:?}");
    // No temp files are left in the records directory.
    for e in std::fs::read_dir(sb.path("cache/steps")).expect("steps") {
        let name = e.expect("entry").file_name().to_string_lossy().to_string();
        assert!(name.ends_with(".json"), "stray file {name}");
    }
}

#[test]
fn cache_ttl_expires_old_records() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.dockerfile(&format!("{BASE}RUN echo EXEC\"\"UTED-x\n"));
    build(&sb, "o1", &[]);
    let (_, ran) = build(&sb, "o2", &["--cache-ttl", "1h"]);
    assert!(ran.is_empty());
    // Age every record by two hours.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for e in std::fs::read_dir(sb.path("cache/steps")).expect("steps") {
        let p = e.expect("entry").path();
        std::fs::File::open(&p)
            .and_then(|f| f.set_modified(old))
            .expect("mtime");
    }
    let (_, ran) = build(&sb, "o3", &["--cache-ttl", "1h"]);
    assert_eq!(ran, names(&["x"]));
    let o = sb.kiln(&["build", "--cache-ttl", "soon", "."]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--cache-ttl soon"), "{}", stderr(&o));
}

/// A context whose build has two RUN steps and a COPY.
fn cached_app(sb: &Sandbox) {
    sb.busybox();
    sb.write("app.txt", "app\n");
    sb.dockerfile(&format!(
        "{BASE}COPY app.txt /app.txt\nRUN echo EXEC\"\"UTED-build && cp /app.txt /built.txt\nRUN echo EXEC\"\"UTED-test\n"
    ));
}

/// Points the sandbox at a fresh, empty cache directory: a new machine.
fn wipe_local_cache(sb: &Sandbox) {
    std::fs::remove_dir_all(sb.path("cache")).expect("wipe cache");
}

#[test]
fn registry_cache_serves_a_fresh_machine() {
    let reg = Registry::start();
    let sb = Sandbox::new();
    cached_app(&sb);
    let cache_ref = format!("{}/app/cache:buildcache", reg.addr);
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
    let reg = Registry::start();
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
    let image = format!("{}/app/inline:1", reg.addr);
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
    let reg = Registry::start();
    let sb = Sandbox::new();
    cached_app(&sb);
    let ctx = sb.context().to_string_lossy().to_string();
    let dest = format!("{}/team/app:1", reg.addr);
    let repo = format!("{}/team/app/cache", reg.addr);
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

/// Two independent stages meet in a shared cache mount: each leaves a file
/// and waits for the other's. Built one after the other, the first would
/// wait in vain; built at the same time, both finish.
#[test]
fn independent_stages_build_at_the_same_time() {
    let sb = Sandbox::new();
    sb.busybox();
    let wait_for = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,id=meet,target=/meet touch /meet/{me} && i=0; while [ ! -f /meet/{other} ]; do i=$((i+1)); [ $i -gt 300 ] && exit 7; sleep 0.1; done; echo {me} > /{me}.txt\n"
        )
    };
    let base = BASE.replacen("FROM scratch", "FROM scratch AS base", 1);
    sb.dockerfile(&format!(
        "{base}\nFROM base AS left\n{}\nFROM base AS right\n{}\nFROM base\nCOPY --from=left /left.txt /\nCOPY --from=right /right.txt /\n",
        wait_for("left", "right"),
        wait_for("right", "left"),
    ));
    build(&sb, "o1", &["--jobs", "2", "-t", "meet:latest"]);
    let rootfs = umoci_unpack(&sb.path("o1"), "latest", &sb.path("bundle"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("left.txt")).expect("left"),
        "left\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("right.txt")).expect("right"),
        "right\n"
    );

    // A stage that fails stops the build with its error and location.
    sb.dockerfile(&format!(
        "{base}\nFROM base AS bad\nRUN exit 3\nFROM base AS good\nRUN echo fine\nFROM base\nCOPY --from=bad / /\nCOPY --from=good / /\n"
    ));
    let ctx = sb.context().to_string_lossy().to_string();
    let o = sb.kiln(&["build", "--jobs", "2", "--output", "type=oci,dest=o2", &ctx]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("RUN failed with exit code 3"), "{err}");
    assert!(!sb.path("o2").exists(), "no output after a failure");
}

#[test]
fn cache_prune_by_age_and_everything_and_never_under_a_running_build() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.dockerfile(&format!("{BASE}RUN echo EXEC\"\"UTED-x\n"));
    build(&sb, "o1", &[]);
    let cache = sb.path("cache").to_string_lossy().to_string();
    // Everything was used just now: an age limit keeps it.
    let o = sb.kiln(&[
        "cache",
        "prune",
        "--cache-dir",
        &cache,
        "--keep-duration",
        "1h",
    ]);
    assert_success(&o);
    assert!(
        stdout(&o).starts_with("removed 0 cached step(s) and 0 blob(s)"),
        "{}",
        stdout(&o)
    );
    let (_, ran) = build(&sb, "o2", &[]);
    assert!(ran.is_empty());

    // While a build runs, prune waits for it (here: at most a second, then
    // gives up without pruning).
    sb.dockerfile(&format!("{BASE}RUN sleep 5\n"));
    let running = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--output", "type=oci,dest=o3"])
        .arg(sb.context())
        .env("KILN_CACHE_DIR", sb.path("cache"))
        .current_dir(sb.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let o = sb.kiln(&[
        "cache",
        "prune",
        "--cache-dir",
        &cache,
        "--all",
        "--wait-timeout",
        "1s",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("timed out after 1s waiting for the builds"),
        "{}",
        stderr(&o)
    );
    let status = running.wait_with_output().expect("wait").status;
    assert!(status.success());

    // --all empties it: the next build runs every step again.
    let o = sb.kiln(&["cache", "prune", "--cache-dir", &cache, "--all"]);
    assert_success(&o);
    assert!(
        !stdout(&o).starts_with("removed 0 cached step(s)"),
        "{}",
        stdout(&o)
    );
    sb.dockerfile(&format!("{BASE}RUN echo EXEC\"\"UTED-x\n"));
    let (_, ran) = build(&sb, "o4", &[]);
    assert_eq!(ran, names(&["x"]));
}

#[test]
fn cache_mounts_travel_with_a_registry_cache_when_asked() {
    let reg = Registry::start();
    let sb = Sandbox::new();
    sb.busybox();
    let dockerfile = |v: &str| {
        format!(
            "{BASE}ARG V={v}\nRUN --mount=type=cache,id=pkgs,target=/pkgs if [ -f /pkgs/downloaded ]; then echo EXEC\"\"UTED-warm-$V; else echo EXEC\"\"UTED-cold-$V; echo data > /pkgs/downloaded; fi\n"
        )
    };
    sb.dockerfile(&dockerfile("1"));
    let cache_ref = format!("{}/app/cache:mounts", reg.addr);
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
    let plain = format!("{}/app/cache:plain", reg.addr);
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
    let reg = Registry::start();
    let sb = Sandbox::new();
    cached_app(&sb);
    let image = format!("{}/app/early:1", reg.addr);
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

/// The manifest of the single image in the OCI layout at `layout`.
/// A file of the last layer (gzip) of the image in the OCI layout `out`.
fn last_layer_file(sb: &Sandbox, out: &str, name: &str) -> String {
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

fn layout_manifest(layout: &std::path::Path) -> serde_json::Value {
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

#[test]
fn a_layer_is_written_while_the_next_step_runs() {
    use std::io::BufRead;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let sb = Sandbox::new();
    sb.busybox();
    // 48 MiB that does not compress: its layer takes a while to write.
    let mut data = Vec::with_capacity(48 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while data.len() < 48 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(sb.context().join("big.bin"), &data).expect("write big.bin");
    sb.dockerfile(&format!(
        "{BASE}COPY big.bin /big.bin\nRUN cp /big.bin /copy.bin && echo EXEC\"\"UTED-copy\nRUN sleep 4 && echo EXEC\"\"UTED-slept\n"
    ));
    let out = sb.path("out");
    let blobs = sb.path("cache").join("blobs").join("sha256");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--progress", "plain", "--output"])
        .arg(format!("type=oci,dest={}", out.display()))
        .arg(sb.context())
        .env("KILN_CACHE_DIR", sb.path("cache"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start kiln");
    let t0 = Instant::now();
    // When each blob first appeared in the store, seen by polling.
    let seen: Arc<Mutex<Vec<(String, Duration)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let (seen, done) = (seen.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                for e in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    let mut s = seen.lock().expect("lock");
                    if name.len() == 64 && !s.iter().any(|(n, _)| *n == name) {
                        s.push((name, t0.elapsed()));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // Each log line with when it arrived.
    let mut lines = Vec::new();
    let reader = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    for line in reader.lines() {
        lines.push((line.expect("log line"), t0.elapsed()));
    }
    let status = child.wait().expect("wait for kiln");
    done.store(true, Ordering::Relaxed);
    poller.join().expect("poller");
    let log: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
    assert!(status.success(), "{}", log.join("\n"));

    // The RUN's layer is the image's last; it holds the copied file.
    let manifest = layout_manifest(&out);
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 4, "busybox, install, COPY, RUN cp");
    let run_layer = layers[3]["digest"].as_str().expect("digest");
    let tar = run_tool_bytes(
        "tar",
        &[
            "-xzOf",
            &out.join("blobs/sha256")
                .join(run_layer.trim_start_matches("sha256:"))
                .to_string_lossy(),
            "copy.bin",
        ],
    );
    assert!(
        tar == data,
        "the RUN layer's copy.bin is the context's big.bin"
    );

    // It appeared in the store well after the RUN that made it had
    // finished, and before the next one, 4 s of sleep, was over.
    let when = |pred: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .find(|(l, _)| pred(l))
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("log lacks a line:\n{}", log.join("\n")))
    };
    let cp_id = lines
        .iter()
        .find(|(l, _)| l.contains("RUN cp /big.bin"))
        .and_then(|(l, _)| l.split_whitespace().next().map(str::to_string))
        .expect("the cp step's id");
    let cp_done = when(&|l| l.starts_with(&format!("{cp_id} DONE")));
    let slept = when(&|l| l.contains("EXECUTED-slept"));
    let written = seen
        .lock()
        .expect("lock")
        .iter()
        .find(|(n, _)| run_layer.ends_with(n.as_str()))
        .map(|(_, t)| *t)
        .expect("the RUN layer's blob was seen in the store");
    // (Written in the step, it would be in the store a few ms before the
    // step's DONE line; 48 MiB takes well over 100 ms to compress and hash.)
    assert!(
        cp_done + Duration::from_millis(100) <= written && written < slept,
        "layer written at {written:?}, its step done at {cp_done:?}, next step's output at {slept:?}"
    );
}

/// The hex digest `sha256sum` computes for `path`.
fn sha256_of(path: &std::path::Path) -> String {
    let out = run_tool("sha256sum", &[&path.to_string_lossy()]);
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn damaged_cache_entries_are_detected_and_rebuilt() {
    let sb = Sandbox::new();
    cached_app(&sb);
    let (_, ran) = build(&sb, "o1", &[]);
    assert_eq!(ran, names(&["build", "test"]));
    // The layers: busybox, its install, COPY app.txt, RUN build.
    let layer_of = |out: &str| {
        let m = layout_manifest(&sb.path(out));
        let d = m["layers"][3]["digest"]
            .as_str()
            .expect("digest")
            .to_string();
        d.trim_start_matches("sha256:").to_string()
    };
    let blob = |hex: &str| sb.path("cache").join("blobs/sha256").join(hex);

    // A truncated layer blob: caught by its size, the step runs again and
    // its layer is whole once more.
    let hex = layer_of("o1");
    let bytes = std::fs::read(blob(&hex)).expect("read blob");
    std::fs::write(blob(&hex), &bytes[..bytes.len() / 2]).expect("truncate");
    let (_, log) = build_log(&sb, "o2", &[]);
    assert_eq!(markers(&log), names(&["build"]), "{log}");
    assert!(log.contains("is damaged") && log.contains("holds"), "{log}");
    let hex2 = layer_of("o2");
    assert_eq!(sha256_of(&blob(&hex2)), hex2);
    assert_eq!(
        sha256_of(&sb.path("o2").join("blobs/sha256").join(&hex2)),
        hex2
    );
    // And the rebuilt step is cached again.
    let (_, ran) = build(&sb, "o3", &[]);
    assert!(ran.is_empty(), "{ran:?}");

    // Same size, different bytes: caught by the digest.
    let mut bytes = std::fs::read(blob(&hex2)).expect("read blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(blob(&hex2), &bytes).expect("overwrite");
    let (_, log) = build_log(&sb, "o4", &[]);
    assert_eq!(markers(&log), names(&["build"]), "{log}");
    assert!(
        log.contains("is damaged") && log.contains("hashes to"),
        "{log}"
    );
    let hex4 = layer_of("o4");
    assert_eq!(sha256_of(&blob(&hex4)), hex4);
}

#[test]
fn a_damaged_or_deleted_registry_cache_is_a_warning_and_the_steps_run() {
    let reg = Registry::start();
    let sb = Sandbox::new();
    cached_app(&sb);
    let cache_ref = format!("{}/app/cache:damaged", reg.addr);
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
            &format!("docker://{}/app/cache@{}", reg.addr, digest.trim()),
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

#[test]
fn stages_outside_the_image_keep_fast_layers_that_an_image_reencodes() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.dockerfile(&format!(
        "{}RUN echo EXEC\"\"UTED-tool && seq 1 20000 > /numbers\n\nFROM scratch\nCOPY --from=tool /numbers /numbers\n",
        BASE.replacen("FROM scratch", "FROM scratch AS tool", 1)
    ));
    let media = |out: &str| -> Vec<String> {
        layout_manifest(&sb.path(out))["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (_, ran) = build(&sb, "o1", &[]);
    assert_eq!(ran, names(&["tool"]));
    assert_eq!(media("o1"), ["application/vnd.oci.image.layer.v1.tar+gzip"]);
    // The first stage's layers only live in this machine's cache: not
    // compressed at all.
    let tool_record = || -> serde_json::Value {
        std::fs::read_dir(sb.path("cache/steps"))
            .expect("steps")
            .flatten()
            .map(|e| -> serde_json::Value {
                serde_json::from_slice(&std::fs::read(e.path()).expect("record")).expect("json")
            })
            .find(|r| {
                r["history"]["created_by"]
                    .as_str()
                    .is_some_and(|c| c.contains("seq 1 20000"))
            })
            .expect("the RUN's record")
    };
    let tool = tool_record();
    assert_eq!(
        tool["layer"]["media_type"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(
        tool["layer"]["digest"], tool["layer"]["diff_id"],
        "an uncompressed layer's digest is its diffID"
    );

    // That stage as the image: nothing runs again, its layers become gzip
    // with the same diffIDs.
    let (_, log) = build_log(&sb, "o2", &["--target", "tool"]);
    assert!(markers(&log).is_empty(), "{log}");
    assert!(log.contains("re-encoded cached layer"), "{log}");
    assert!(media("o2")
        .iter()
        .all(|m| m == "application/vnd.oci.image.layer.v1.tar+gzip"));
    let config = |out: &str| -> serde_json::Value {
        let m = layout_manifest(&sb.path(out));
        let d = m["config"]["digest"].as_str().expect("config digest");
        let p = sb
            .path(out)
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(p).expect("config")).expect("json")
    };
    let diff_ids = config("o2")["rootfs"]["diff_ids"].clone();
    assert_eq!(diff_ids.as_array().map(Vec::len), Some(3));
    assert_eq!(
        diff_ids[2], tool["layer"]["diff_id"],
        "the re-encoded layer has the cached one's diffID"
    );
    // Asked for zstd, the image gets zstd from the same cache.
    let (_, log) = build_log(&sb, "o3", &["--target", "tool", "--compression", "zstd"]);
    assert!(markers(&log).is_empty(), "{log}");
    assert!(media("o3")
        .iter()
        .all(|m| m == "application/vnd.oci.image.layer.v1.tar+zstd"));
    assert_eq!(config("o3")["rootfs"]["diff_ids"], diff_ids);

    // A build that exports its cache writes those layers with a fast zstd
    // instead: they leave the machine.
    wipe_local_cache(&sb);
    let exported = sb.path("exported");
    let to = format!("type=local,dest={},mode=max", exported.display());
    let (_, ran) = build(&sb, "o4", &["--cache-to", &to]);
    assert_eq!(ran, names(&["tool"]));
    let tool = tool_record();
    assert_eq!(
        tool["layer"]["media_type"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let blob = tool["layer"]["digest"].as_str().expect("digest");
    assert!(
        exported
            .join("blobs/sha256")
            .join(blob.trim_start_matches("sha256:"))
            .is_file(),
        "the exported cache holds the zstd layer"
    );
    assert_eq!(media("o4"), ["application/vnd.oci.image.layer.v1.tar+gzip"]);
    // `mode=min` exports only the image's own steps: these stay local.
    wipe_local_cache(&sb);
    let min = format!(
        "type=local,dest={},mode=min",
        sb.path("exported-min").display()
    );
    let (_, ran) = build(&sb, "o5", &["--cache-to", &min]);
    assert_eq!(ran, names(&["tool"]));
    assert_eq!(
        tool_record()["layer"]["media_type"],
        "application/vnd.oci.image.layer.v1.tar"
    );
}

#[test]
fn snapshots_linked_while_a_copy_runs_hold_only_the_files_before_it() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.write("a.txt", "a1\n");
    sb.write("b.txt", "b1\n");
    // Each COPY adds a new file to /app while the snapshot before it is
    // linked in the background (the second one while the first one's may
    // still be: 20,000 entries take a while); the RUN lists what a restored
    // snapshot would leak.
    let dockerfile = |b_dest: &str| {
        format!(
            "{BASE}RUN mkdir /app && cd /app && seq 1 20000 | xargs touch\nWORKDIR /app\nCOPY a.txt a.txt\nCOPY b.txt {b_dest}\nRUN echo EXEC\"\"UTED-list && ls -a1 /app | grep -v '^[0-9]' > /listing && cat /app/*.txt > /all\n"
        )
    };
    sb.dockerfile(&dockerfile("b.txt"));
    let tag = ["-t", "snap:latest"];
    let (_, ran) = build(&sb, "o1", &tag);
    assert_eq!(ran, names(&["list"]));
    let read = |out: &str| {
        (
            last_layer_file(&sb, out, "listing"),
            last_layer_file(&sb, out, "all"),
        )
    };
    assert_eq!(read("o1").0, ".\n..\na.txt\nb.txt\n");

    // An edit of a.txt starts from the root before its COPY: b.txt, which
    // now lands elsewhere, must not be there.
    sb.write("a.txt", "a2\n");
    sb.dockerfile(&dockerfile("c.txt"));
    let (_, log) = build_log(&sb, "o2", &tag);
    assert_eq!(markers(&log), names(&["list"]), "{log}");
    assert!(log.contains("restored from a kept snapshot"), "{log}");
    assert_eq!(read("o2").0, ".\n..\na.txt\nc.txt\n");

    // An edit of b.txt starts from the root before its COPY, taken by the
    // last build: a.txt as it made it, no c.txt.
    sb.write("b.txt", "b2\n");
    let (_, log) = build_log(&sb, "o3", &tag);
    assert_eq!(markers(&log), names(&["list"]), "{log}");
    assert!(log.contains("restored from a kept snapshot"), "{log}");
    assert_eq!(
        read("o3"),
        (".\n..\na.txt\nc.txt\n".to_string(), "a2\nb2\n".to_string())
    );
}

#[test]
fn a_snapshot_linked_while_a_copy_replaces_files_keeps_the_old_ones() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.write("one/a.txt", "new a\n");
    sb.write("one/n.txt", "n\n");
    sb.write("two/b.txt", "b\n");
    // The COPY replaces /app/a.txt and adds n.txt while the snapshot before
    // it links /app's 20,000 other entries in the background.
    let dockerfile = |src: &str| {
        format!(
            "{BASE}RUN mkdir /app && cd /app && seq 1 20000 | xargs touch && echo old > a.txt\nWORKDIR /app\nCOPY {src}/ ./\nRUN echo EXEC\"\"UTED-list && ls -a1 /app | grep -v '^[0-9]' > /listing && cat /app/a.txt > /all\n"
        )
    };
    let read = |out: &str| {
        (
            last_layer_file(&sb, out, "listing"),
            last_layer_file(&sb, out, "all"),
        )
    };
    sb.dockerfile(&dockerfile("one"));
    let (_, ran) = build(&sb, "o1", &[]);
    assert_eq!(ran, names(&["list"]));
    assert_eq!(
        read("o1"),
        (".\n..\na.txt\nn.txt\n".to_string(), "new a\n".to_string())
    );

    // Another source: the rebuild starts from the root before the COPY,
    // which has the old a.txt and no n.txt.
    sb.dockerfile(&dockerfile("two"));
    let (_, log) = build_log(&sb, "o2", &[]);
    assert_eq!(markers(&log), names(&["list"]), "{log}");
    assert!(log.contains("restored from a kept snapshot"), "{log}");
    assert_eq!(
        read("o2"),
        (".\n..\na.txt\nb.txt\n".to_string(), "old\n".to_string())
    );
}

#[test]
fn a_rebuild_after_an_edit_starts_from_the_kept_stage_root() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.write("app.txt", "one\n");
    // A step whose output differs on every run, then the edit point, then a
    // step that reads both: its copy must always match the image's /stamp.
    sb.dockerfile(&format!(
        "{BASE}RUN echo EXEC\"\"UTED-deps && head -c 16 /dev/urandom | od -An -tx1 > /stamp && seq 1 30000 > /deps.txt\nCOPY app.txt /app.txt\nRUN echo EXEC\"\"UTED-build && cat /stamp /app.txt > /built.txt\n"
    ));
    let tag = ["-t", "snap:latest"];
    let (_, ran) = build(&sb, "o1", &tag);
    assert_eq!(ran, names(&["build", "deps"]));

    let check = |out: &str, app: &str| {
        let rootfs = umoci_unpack(&sb.path(out), "latest", &sb.path(&format!("{out}-bundle")));
        let stamp = std::fs::read_to_string(rootfs.join("stamp")).expect("stamp");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("built.txt")).expect("built"),
            format!("{stamp}{app}")
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("deps.txt"))
                .expect("deps")
                .lines()
                .count(),
            30000
        );
        stamp
    };
    check("o1", "one\n");

    // Edit: the layers below the COPY are not unpacked again.
    sb.write("app.txt", "two\n");
    let (_, log) = build_log(&sb, "o2", &tag);
    assert_eq!(markers(&log), names(&["build"]), "{log}");
    assert!(log.contains("restored from a kept snapshot"), "{log}");
    let first = check("o2", "two\n");

    // --no-cache runs everything again (a new /stamp); the next edit must
    // start from that run's files, not the first run's.
    let (_, ran) = build(&sb, "o3", &["-t", "snap:latest", "--no-cache"]);
    assert_eq!(ran, names(&["build", "deps"]));
    let second = check("o3", "two\n");
    assert_ne!(first, second);
    sb.write("app.txt", "three\n");
    let (_, log) = build_log(&sb, "o4", &tag);
    assert_eq!(markers(&log), names(&["build"]), "{log}");
    assert!(log.contains("restored from a kept snapshot"), "{log}");
    assert_eq!(check("o4", "three\n"), second);

    let kept = std::fs::read_dir(sb.path("cache/snapshots"))
        .expect("snapshots")
        .count();
    assert!((1..=9).contains(&kept), "{kept} snapshots kept");
}

#[test]
fn kept_roots_serve_a_second_stage_on_the_same_base_and_a_copy_from_a_cached_stage() {
    let base = Sandbox::new();
    base.busybox();
    base.dockerfile(BASE);
    build(&base, "base", &[]);
    let dockerfile = format!(
        "FROM oci-layout://{base} AS a\nRUN echo EXEC\"\"UTED-a && echo a > /a\n\nFROM oci-layout://{base} AS b\nRUN echo EXEC\"\"UTED-b && echo b > /b\n\nFROM scratch\nCOPY app.txt /app.txt\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
        base = base.path("base").display()
    );
    // Both stages at once: one unpacks the base, the other waits for it and
    // takes the kept copy instead of unpacking it a second time.
    let par = Sandbox::new();
    par.write("app.txt", "one\n");
    par.dockerfile(&dockerfile);
    let (_, log) = build_log(&par, "o1", &["--jobs", "2"]);
    assert_eq!(markers(&log), names(&["a", "b"]));
    assert_eq!(
        log.matches("files of 2 of the stage's 2 layer(s) restored from a kept snapshot")
            .count(),
        1,
        "{log}"
    );

    let sb = Sandbox::new();
    sb.write("app.txt", "one\n");
    sb.dockerfile(&dockerfile);
    // One stage at a time: the second stage finds the base image's files
    // the first one unpacked.
    let (_, log) = build_log(&sb, "o1", &["-t", "kept:latest", "--jobs", "1"]);
    assert_eq!(markers(&log), names(&["a", "b"]));
    assert!(
        log.contains("files of 2 of the stage's 2 layer(s) restored from a kept snapshot"),
        "{log}"
    );
    // Only the last stage's context file changes: the other stages are all
    // cache hits, and their files, which COPY --from reads, come back from
    // the roots the last build kept rather than from their layers.
    sb.write("app.txt", "two\n");
    let (_, log) = build_log(&sb, "o2", &["-t", "kept:latest"]);
    assert!(markers(&log).is_empty(), "{log}");
    assert_eq!(
        log.matches("files of a finished stage (3 layer(s)) restored from a kept snapshot")
            .count(),
        2,
        "{log}"
    );
    let rootfs = umoci_unpack(&sb.path("o2"), "latest", &sb.path("bundle"));
    for (file, text) in [("a", "a\n"), ("b", "b\n"), ("app.txt", "two\n")] {
        assert_eq!(
            std::fs::read_to_string(rootfs.join(file)).expect("file"),
            text
        );
    }
}

#[test]
fn the_base_image_copy_linked_while_the_first_run_runs_holds_only_the_base() {
    // A base with 20,000 files: its copy takes a while to link, and the
    // first RUN, on top of it, is done long before.
    let base = Sandbox::new();
    base.busybox();
    base.dockerfile(&format!(
        "{BASE}RUN mkdir /many && cd /many && seq 1 20000 | xargs touch && echo base > /many/0\n"
    ));
    build(&base, "base", &[]);
    let from = format!("FROM oci-layout://{}\n", base.path("base").display());

    let sb = Sandbox::new();
    // The RUN replaces, adds and removes files of the root the copy reads.
    sb.dockerfile(&format!(
        "{from}RUN echo EXEC\"\"UTED-one && echo one > /many/0 && echo one > /one && rm /many/7 /many/19999\n"
    ));
    let (_, log) = build_log(&sb, "o1", &[]);
    assert_eq!(markers(&log), names(&["one"]), "{log}");
    assert!(
        log.contains("unpacked the base image's 3 layer(s) in"),
        "{log}"
    );
    // Another step on the same base starts from the kept copy: the base's
    // files as they were, none of the first RUN's changes.
    sb.dockerfile(&format!(
        "{from}RUN echo EXEC\"\"UTED-two && ls /many | wc -l > /count && cat /many/0 > /zero && ls / > /top\n"
    ));
    let (_, log) = build_log(&sb, "o2", &[]);
    assert_eq!(markers(&log), names(&["two"]), "{log}");
    assert!(
        log.contains("files of 3 of the stage's 3 layer(s) restored from a kept snapshot"),
        "{log}"
    );
    assert_eq!(last_layer_file(&sb, "o2", "count").trim(), "20001");
    assert_eq!(last_layer_file(&sb, "o2", "zero"), "base\n");
    let top = last_layer_file(&sb, "o2", "top");
    assert!(!top.lines().any(|l| l == "one"), "{top}");
    // And the first build's image has its own changes on top of the base.
    assert_eq!(last_layer_file(&sb, "o1", "one"), "one\n");
    assert_eq!(last_layer_file(&sb, "o1", "many/0"), "one\n");
}

#[test]
fn a_last_copy_from_the_context_makes_the_same_layer_without_writing_the_files() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    sb.busybox();
    sb.write("tree/a.txt", "a\n");
    sb.write_mode("tree/bin/run.sh", "#!/bin/sh\n", 0o755);
    sb.write_mode("tree/secret/key", "k\n", 0o600);
    sb.write("tree/skip/me.skip", "excluded\n");
    sb.write("tree/ignored.log", "dockerignored\n");
    std::os::unix::fs::symlink("a.txt", sb.context().join("tree/link")).expect("symlink");
    std::fs::hard_link(
        sb.context().join("tree/a.txt"),
        sb.context().join("tree/bin/a-again"),
    )
    .expect("hardlink");
    std::fs::set_permissions(
        sb.context().join("tree/secret"),
        std::fs::Permissions::from_mode(0o700),
    )
    .expect("chmod");
    sb.write(".dockerignore", "tree/*.log\n");
    let copy = "COPY --exclude=**/*.skip --chown=7:8 tree /opt/app/tree\n";
    let build = |out: &str, dockerfile: String, extra: &[&str]| {
        sb.dockerfile(&dockerfile);
        let dest = format!("type=oci,dest={}", sb.path(out).display());
        let ctx = sb.context().to_string_lossy().to_string();
        let mut args = vec!["build", "--progress", "plain", "--output", &dest];
        args.extend_from_slice(extra);
        args.push(&ctx);
        let o = sb.kiln_env(&args, &[("SOURCE_DATE_EPOCH", "1700000000")]);
        assert_success(&o);
        let m = layout_manifest(&sb.path(out));
        (
            m["layers"][1]["digest"]
                .as_str()
                .expect("digest")
                .to_string(),
            stderr(&o),
        )
    };
    // The COPY is the last step that changes files: planned.
    let (direct, log) = build(
        "o1",
        format!("FROM scratch\nCOPY busybox /bin/busybox\n{copy}CMD [\"x\"]\n"),
        &[],
    );
    assert!(
        log.contains("layer made straight from the source files"),
        "{log}"
    );
    // A step after it: the files are copied into the stage, as always.
    let (copied, log) = build(
        "o2",
        format!("FROM scratch\nCOPY busybox /bin/busybox\n{copy}WORKDIR /\n"),
        &["--no-cache"],
    );
    assert!(
        !log.contains("layer made straight from the source files"),
        "{log}"
    );
    assert_eq!(direct, copied, "both ways make the very same layer");

    // And it holds what it should.
    let tar = sb
        .path("o1/blobs/sha256")
        .join(direct.trim_start_matches("sha256:"));
    let listing = run_tool("tar", &["-tvzf", &tar.to_string_lossy()]);
    let lines: Vec<String> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", f[0], f[1], f[5..].join(" "))
        })
        .collect();
    assert_eq!(
        lines,
        [
            // Missing parents take the --chown owner.
            "drwxr-xr-x 7/8 opt/",
            "drwxr-xr-x 7/8 opt/app/",
            "drwxr-xr-x 7/8 opt/app/tree/",
            "-rw-r--r-- 7/8 opt/app/tree/a.txt",
            "drwxr-xr-x 7/8 opt/app/tree/bin/",
            "hrw-r--r-- 7/8 opt/app/tree/bin/a-again link to opt/app/tree/a.txt",
            "-rwxr-xr-x 7/8 opt/app/tree/bin/run.sh",
            "lrwxrwxrwx 7/8 opt/app/tree/link -> a.txt",
            "drwx------ 7/8 opt/app/tree/secret/",
            "-rw------- 7/8 opt/app/tree/secret/key",
            // Its only file is excluded; the directory itself is not.
            "drwxr-xr-x 7/8 opt/app/tree/skip/",
        ],
        "{listing}"
    );
}

#[test]
fn copy_from_a_stage_links_or_plans_the_same_layer_and_never_changes_the_source() {
    let sb = Sandbox::new();
    sb.busybox();
    let src = "FROM scratch AS src\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir -p /tree/sub && echo a > /tree/a && echo s > /tree/sub/s && /bin/busybox ln /tree/a /tree/hard && /bin/busybox ln -s a /tree/sym && /bin/busybox chown 7:8 /tree/sub/s && /bin/busybox chmod 4750 /tree/sub/s\"]\n";
    let build = |out: &str, rest: &str, extra: &[&str]| {
        sb.dockerfile(&format!("{src}\n{rest}"));
        let dest = format!("type=oci,dest={}", sb.path(out).display());
        let ctx = sb.context().to_string_lossy().to_string();
        let mut args = vec!["build", "--progress", "plain", "--output", &dest];
        args.extend_from_slice(extra);
        args.push(&ctx);
        let o = sb.kiln_env(&args, &[("SOURCE_DATE_EPOCH", "1700000000")]);
        assert_success(&o);
        (layout_manifest(&sb.path(out)), stderr(&o))
    };
    let digest = |m: &serde_json::Value, i: usize| {
        m["layers"][i]["digest"]
            .as_str()
            .expect("digest")
            .to_string()
    };
    // Not the last step: the files are hard-linked into the stage.
    let (m, log) = build(
        "linked",
        "FROM scratch\nCOPY --from=src /tree /opt/tree\nCOPY busybox /bin/busybox\n",
        &[],
    );
    assert!(
        log.contains("2 file(s) hard-linked from the source"),
        "{log}"
    );
    let linked = digest(&m, 0);
    // The last step: the layer is made from the source stage's files.
    let (m, log) = build(
        "planned",
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY --from=src /tree /opt/tree\n",
        &[],
    );
    assert!(
        log.contains("layer made straight from the source files"),
        "{log}"
    );
    assert_eq!(digest(&m, 1), linked, "both ways make the very same layer");
    let tar = sb
        .path("linked/blobs/sha256")
        .join(linked.trim_start_matches("sha256:"));
    let listing = run_tool("tar", &["-tvzf", &tar.to_string_lossy()]);
    let mut lines: Vec<String> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", f[0], f[1], f[5..].join(" "))
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "-rw-r--r-- 0/0 opt/tree/a",
            "-rwsr-x--- 7/8 opt/tree/sub/s",
            "drwxr-xr-x 0/0 opt/",
            "drwxr-xr-x 0/0 opt/tree/",
            "drwxr-xr-x 0/0 opt/tree/sub/",
            "hrw-r--r-- 0/0 opt/tree/hard link to opt/tree/a",
            "lrwxrwxrwx 0/0 opt/tree/sym -> a",
        ],
        "{listing}"
    );

    // A RUN that appends to a linked file changes the stage's copy only: a
    // later stage copying the source again still reads the original.
    let (_, log) = build(
        "isolated",
        "FROM scratch AS final\nCOPY --from=src /tree /opt/tree\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo more >> /opt/tree/a\"]\n\nFROM scratch\nCOPY --from=final /opt/tree/a /after\nCOPY --from=src /tree/a /before\nCOPY --from=src /tree/hard /before-hard\n",
        &["--jobs", "1", "-t", "iso:latest"],
    );
    assert!(log.contains("hard-linked from the source"), "{log}");
    let rootfs = umoci_unpack(&sb.path("isolated"), "latest", &sb.path("bundle"));
    for (file, text) in [
        ("after", "a\nmore\n"),
        ("before", "a\n"),
        ("before-hard", "a\n"),
    ] {
        assert_eq!(
            std::fs::read_to_string(rootfs.join(file)).expect("file"),
            text,
            "{file}"
        );
    }
}

/// An ADD from a URL without `--checksum` always fetches; the steps after
/// it hit the cache exactly when the fetched bytes are the same.
#[test]
fn steps_after_an_add_from_a_url_follow_what_it_fetched() {
    let sb = Sandbox::new();
    sb.busybox();
    let served = sb.path("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    std::fs::write(served.join("f.txt"), "one\n").expect("write");
    let http = HttpServer::serve(&served);
    sb.dockerfile(&format!(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nADD http://127.0.0.1:{}/f.txt /f.txt\nRUN echo EXEC\"\"UTED-cp && cp /f.txt /g.txt\n",
        http.port
    ));
    let g = |out: &str| {
        let rootfs = umoci_unpack(&sb.path(out), "latest", &sb.path(&format!("{out}-b")));
        std::fs::read_to_string(rootfs.join("g.txt")).expect("g.txt")
    };
    let (_, log) = build_log(&sb, "o1", &["-t", "u:latest"]);
    assert_eq!(markers(&log), names(&["cp"]), "{log}");
    assert_eq!(g("o1"), "one\n");
    // Same bytes: fetched again, and the RUN after it is a hit.
    let (_, log) = build_log(&sb, "o3", &["-t", "u:latest"]);
    assert!(markers(&log).is_empty(), "{log}");
    assert_eq!(g("o3"), "one\n");
    // New bytes at the URL: the RUN runs again and sees them.
    std::fs::write(served.join("f.txt"), "two\n").expect("write");
    let (_, log) = build_log(&sb, "o4", &["-t", "u:latest"]);
    assert_eq!(markers(&log), names(&["cp"]), "{log}");
    assert_eq!(g("o4"), "two\n");
}

/// A COPY waits for the layers still being written only when it replaces
/// a file they read: then the earlier layer keeps the earlier file; else it
/// runs at once and its own layer queues up behind theirs.
#[test]
fn a_copy_waits_for_pending_layers_only_when_it_replaces_their_files() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.write("z-last", "copy\n");
    sb.write("note.txt", "note\n");
    // 48 MiB of random bytes: a layer that takes a while to write.
    let big = "head -c 50331648 /dev/urandom";
    sb.dockerfile(&format!(
        "{BASE}RUN mkdir /data && {big} > /data/a-big && echo run > /data/z-last\nCOPY z-last /data/z-last\nRUN mkdir /other && {big} > /other/big\nCOPY note.txt /note.txt\nRUN {big} > /other/big2\nCOPY note.txt /other/\nCOPY z-last /z-copy\nRUN {big} > /other/big3\nCOPY note.txt /z-copy\n"
    ));
    let (_, log) = build_log(&sb, "o1", &[]);
    let line_of = |pred: &dyn Fn(&str) -> bool| {
        log.lines()
            .position(pred)
            .unwrap_or_else(|| panic!("no such line in\n{log}"))
    };
    let step = |text: &str| step_id(&log, text);
    let (run1, copy1, run2, copy2, run3, copy3) = (
        step("RUN mkdir /data"),
        step("COPY z-last"),
        step("RUN mkdir /other"),
        step("COPY note.txt /note.txt"),
        step("> /other/big2"),
        step("COPY note.txt /other/"),
    );
    let (copy4, run4, copy5) = (
        step("COPY z-last /z-copy"),
        step("> /other/big3"),
        step("COPY note.txt /z-copy"),
    );
    let layer_line = |id: &str| line_of(&|l: &str| l.starts_with(&format!("{id} layer sha256:")));
    let done_line = |id: &str| line_of(&|l: &str| l.starts_with(&format!("{id} DONE")));
    assert!(
        layer_line(&run1) < done_line(&copy1),
        "the COPY that replaces /data/z-last waited:\n{log}"
    );
    assert!(
        done_line(&copy2) < layer_line(&run2),
        "the COPY of /note.txt did not wait:\n{log}"
    );
    // Into the directory the pending layer reads, but not onto its file.
    assert!(
        done_line(&copy3) < layer_line(&run3),
        "the COPY of /other/note.txt did not wait:\n{log}"
    );
    // Onto a file of a pending layer queued before a big one: only the
    // first is waited for.
    assert!(
        layer_line(&copy4) < done_line(&copy5) && done_line(&copy5) < layer_line(&run4),
        "the COPY onto /z-copy waited for the wrong layers:\n{log}"
    );
    // The RUN's layer holds the file as the RUN left it.
    let m = layout_manifest(&sb.path("o1"));
    let blob = |i: usize| {
        sb.path("o1/blobs/sha256").join(
            m["layers"][i]["digest"]
                .as_str()
                .expect("digest")
                .trim_start_matches("sha256:"),
        )
    };
    let read = |i: usize| run_tool("tar", &["-xzOf", &blob(i).to_string_lossy(), "data/z-last"]);
    assert_eq!(read(2), "run\n");
    assert_eq!(read(3), "copy\n");
    assert_eq!(m["layers"].as_array().map(Vec::len), Some(11));
}

/// A stage read only by the stage built `FROM` it hands over its layers
/// still being written: the next stage starts at once and settles them.
/// Steps that make no layer (a WORKDIR that exists) do not wait either.
/// The image and the cache come out the same.
#[test]
fn the_stage_built_from_a_stage_starts_while_its_last_layer_is_written() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.dockerfile(
        "FROM scratch AS parent\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nRUN echo EXEC\"\"UTED-big && head -c 50331648 /dev/urandom > /big\nWORKDIR /\n\nFROM parent\nRUN echo EXEC\"\"UTED-child && wc -c < /big > /seen\n",
    );
    let tag = ["-t", "hand:latest"];
    let (digest, log) = build_log(&sb, "o1", &tag);
    assert_eq!(markers(&log), names(&["big", "child"]), "{log}");
    let position = |pred: &dyn Fn(&str) -> bool| {
        log.lines()
            .position(pred)
            .unwrap_or_else(|| panic!("no such line in\n{log}"))
    };
    let big = step_id(&log, "UTED-big &&");
    let big_layer = position(&|l: &str| l.starts_with(&format!("{big} layer sha256:")));
    let workdir_done = position(&|l: &str| l.contains("WORKDIR /"))
        + log
            .lines()
            .skip_while(|l| !l.contains("WORKDIR /"))
            .position(|l| l.contains(" DONE "))
            .expect("WORKDIR done");
    let child_started = position(&|l: &str| l.contains("[stage-1 2/2] RUN"));
    assert!(workdir_done < big_layer, "the WORKDIR waited:\n{log}");
    assert!(child_started < big_layer, "the child stage waited:\n{log}");
    // The image has every layer, and the big file in it.
    let m = layout_manifest(&sb.path("o1"));
    assert_eq!(m["layers"].as_array().map(Vec::len), Some(4), "{m}");
    let rootfs = umoci_unpack(&sb.path("o1"), "latest", &sb.path("b1"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("seen"))
            .expect("seen")
            .trim(),
        "50331648"
    );
    // Every step, the handed ones too, was recorded: a rebuild runs nothing
    // and makes the same image.
    let (again, log) = build_log(&sb, "o2", &tag);
    assert!(markers(&log).is_empty(), "{log}");
    assert_eq!(again, digest);
}

/// A RUN's merge does not wait for the layers still being written when it
/// replaces or deletes files they read (their writers read links kept to
/// the old files), only when it removes a directory holding such a file.
#[test]
fn a_run_replaces_files_a_pending_layer_reads_without_waiting_for_it() {
    let sb = Sandbox::new();
    sb.busybox();
    // The first RUN's layer (48 MiB that gzip cannot shrink) is still being
    // written while the next RUNs go on: one touches none of its files, the
    // next deletes one and rewrites another, the writer reading what that
    // first RUN left (kept aside for it).
    sb.dockerfile(&format!(
        "{BASE}RUN mkdir /data && head -c 50331648 /dev/urandom > /data/a-big && echo run > /data/z-last\nRUN echo other > /other.txt\nRUN rm /data/a-big && echo changed > /data/z-last\nRUN echo end > /end.txt\n"
    ));
    let (_, log) = build_log(&sb, "o1", &[]);
    let id = |text: &str| step_id(&log, text);
    let line = |log: &str, prefix: String| {
        log.lines()
            .position(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line {prefix} in\n{log}"))
    };
    let (big, other, rm) = (
        id("RUN mkdir /data"),
        id("RUN echo other"),
        id("RUN rm /data"),
    );
    let big_layer = line(&log, format!("{big} layer sha256:"));
    assert!(
        line(&log, format!("{other} DONE")) < big_layer,
        "the unrelated RUN waited:\n{log}"
    );
    assert!(
        line(&log, format!("{rm} DONE")) < big_layer,
        "the RUN that deletes /data/a-big waited:\n{log}"
    );
    // The first RUN's layer holds the files as that RUN left them, the
    // third RUN's layer its own changes.
    let m = layout_manifest(&sb.path("o1"));
    let blob = |n: usize| {
        let digest = m["layers"][n]["digest"].as_str().expect("digest");
        sb.path("o1/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
            .to_string_lossy()
            .into_owned()
    };
    let listing = run_tool("tar", &["-tvzf", &blob(2)]);
    assert!(
        listing
            .lines()
            .any(|l| l.contains("50331648") && l.ends_with("data/a-big")),
        "{listing}"
    );
    assert_eq!(
        run_tool("tar", &["-xzOf", &blob(2), "data/z-last"]),
        "run\n"
    );
    assert_eq!(
        run_tool("tar", &["-xzOf", &blob(4), "data/z-last"]),
        "changed\n"
    );
    assert!(run_tool("tar", &["-tzf", &blob(4)])
        .lines()
        .any(|l| l == "data/.wh.a-big"));

    // Removing the directory that holds a file being read waits for it.
    sb.dockerfile(&format!(
        "{BASE}RUN mkdir /data && head -c 50331648 /dev/urandom > /data/b-big && echo EXEC\"\"UTED-two\nRUN rm -rf /data\n"
    ));
    let (_, log) = build_log(&sb, "o2", &[]);
    assert_eq!(markers(&log), names(&["two"]), "{log}");
    let big_layer = line(
        &log,
        format!("{} layer sha256:", step_id(&log, "RUN mkdir /data")),
    );
    assert!(
        big_layer < line(&log, format!("{} DONE", step_id(&log, "RUN rm -rf"))),
        "the RUN that deletes /data did not wait:\n{log}"
    );
    let m = layout_manifest(&sb.path("o2"));
    let digest = m["layers"][2]["digest"].as_str().expect("digest");
    let listing = run_tool(
        "tar",
        &[
            "-tvzf",
            &sb.path("o2/blobs/sha256")
                .join(digest.trim_start_matches("sha256:"))
                .to_string_lossy(),
        ],
    );
    assert!(
        listing
            .lines()
            .any(|l| l.contains("50331648") && l.ends_with("data/b-big")),
        "{listing}"
    );
}

/// A stage outside the image does not wait for its last layers: the stage
/// that copies from it goes on, and the layers are recorded at the end of
/// the build, so a rebuild runs nothing.
#[test]
fn a_stage_outside_the_image_leaves_its_last_layer_to_the_end_of_the_build() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.dockerfile(
        "FROM scratch AS tools\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nRUN echo EXEC\"\"UTED-big && head -c 50331648 /dev/urandom > /big && echo small > /small\n\nFROM scratch\nCOPY --from=tools /small /small\nCOPY --from=tools /bin/busybox /bin/busybox\n",
    );
    let tag = ["-t", "outside:latest"];
    let (digest, log) = build_log(&sb, "o1", &tag);
    assert_eq!(markers(&log), names(&["big"]), "{log}");
    let big = step_id(&log, "UTED-big &&");
    let position = |prefix: &str| {
        log.lines()
            .position(|l| l.starts_with(prefix) || l.contains(prefix))
            .unwrap_or_else(|| panic!("no line {prefix} in\n{log}"))
    };
    assert!(
        position("[stage-1 2/3] COPY --from=tools /small")
            < position(&format!("{big} layer sha256:")),
        "the image's stage waited for the outside stage's layer:\n{log}"
    );
    let rootfs = umoci_unpack(&sb.path("o1"), "latest", &sb.path("b1"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("small")).expect("small"),
        "small\n"
    );
    let (again, log) = build_log(&sb, "o2", &tag);
    assert!(markers(&log).is_empty(), "{log}");
    assert_eq!(again, digest);
}
