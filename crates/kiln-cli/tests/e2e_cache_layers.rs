//! End-to-end ordering of the background layer writers through the real
//! `kiln` binary: independent stages at the same time, a layer written
//! while the next step runs, fast layers of stages outside the image, and
//! when a COPY, a RUN or a dependent stage waits for pending layers (only
//! when it must).
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
