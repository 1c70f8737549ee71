//! End-to-end snapshots and kept stage roots through the real `kiln`
//! binary: what a snapshot linked while a COPY or RUN runs holds, rebuilds
//! that start from a kept root, COPY from the context or a stage that
//! links or plans the same layer, and steps after an ADD from a URL.
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
    let http = StaticServer::http(&served);
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
