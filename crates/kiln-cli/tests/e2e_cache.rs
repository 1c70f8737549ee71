//! End-to-end step caching through the real `kiln` binary: which steps a
//! rebuild reuses and which it runs again, and that a rebuild that changes
//! nothing yields the very same image; concurrent builds on one cache dir,
//! expiry and pruning, and damaged local entries.
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
