//! Snapshot cost against the size of the base: a RUN step that writes
//! 50,000 small files (`busybox cp -a` from a read-only bind mount) on top
//! of a ~20 MB and a ~200 MB base rootfs. The command, the snapshot
//! ([`upper_changes_since`]) and [`merge_upper`] are timed apart; the
//! snapshot and the merge walk only the upper dir, so their times must not
//! follow the base's size.
//!
//! `cargo bench -p kiln-sandbox --bench snapshot_scaling`; a plain `main`
//! that prints its figures (medians). `KILN_BENCH_ITERS` sets the runs per
//! base (default 3), `KILN_BENCH_FILES` the files the step writes (default
//! 50,000), `KILN_BENCH_MODE` the isolation (`root`, the default, or
//! `userns`). "host cp" is the same copy without a sandbox, once per base,
//! for what the disk itself costs at that moment.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_image::EntryKind;
use kiln_sandbox::{
    merge_upper, upper_changes_since, Isolation, Mount, MountKind, Network, RunSpec, Sandbox,
};

const HELPER: &str = env!("CARGO_BIN_EXE_kiln-sandbox-helper");
/// Size of the base's filler files.
const BASE_FILE_SIZE: usize = 4096;
/// Size of the files the step writes.
const NEW_FILE_SIZE: usize = 100;
const FILES_PER_DIR: usize = 100;

fn main() {
    let iters: usize = env_num("KILN_BENCH_ITERS", 3).max(1);
    let files: usize = env_num("KILN_BENCH_FILES", 50_000).max(1);
    let isolation = match std::env::var("KILN_BENCH_MODE").as_deref() {
        Ok("userns") => Isolation::Userns,
        _ => Isolation::Root,
    };
    let tmp = tempfile::Builder::new()
        .prefix("kiln-snapshot-bench-")
        .tempdir()
        .expect("create a temp dir");
    let busybox = find_busybox();
    println!("load average at the start: {}", loadavg());

    // What the step copies in: `files` small files, 100 to a directory.
    let input = tmp.path().join("input");
    let t = Instant::now();
    for i in 0..files {
        let dir = input.join(format!("d{:04}", i / FILES_PER_DIR));
        if i % FILES_PER_DIR == 0 {
            fs::create_dir_all(&dir).expect("mkdir");
        }
        fs::write(dir.join(format!("f{i}")), content(i, NEW_FILE_SIZE)).expect("write");
    }
    println!(
        "input: {files} files of {NEW_FILE_SIZE} bytes in {} dirs, made in {}",
        files.div_ceil(FILES_PER_DIR),
        ms(t.elapsed())
    );

    let mut rows = Vec::new();
    for base_mb in [20usize, 200] {
        let root = tmp.path().join(format!("base-{base_mb}mb"));
        let t = Instant::now();
        let (base_files, base_bytes) = make_base(&root, &busybox, base_mb * 1_000_000);
        println!(
            "base {base_mb} MB: {base_files} files, {:.0} MB, made in {}",
            base_bytes as f64 / 1e6,
            ms(t.elapsed())
        );
        // The same copy on the host, no sandbox, on the disk as it is now
        // (writeback of the base still under way): what the disk costs.
        let host_copy = tmp.path().join("host-copy");
        let t = Instant::now();
        let st = std::process::Command::new(&busybox)
            .args(["cp", "-a"])
            .arg(input.join("."))
            .arg(&host_copy)
            .status()
            .expect("run busybox cp on the host");
        assert!(st.success(), "host cp failed");
        let host = t.elapsed();
        fs::remove_dir_all(&host_copy).expect("remove the host copy");
        let sandbox = Sandbox::with_init(HELPER);
        let mut runs = Vec::new();
        for _ in 0..iters {
            runs.push(one_step(&sandbox, &root, &input, files, isolation));
        }
        rows.push((base_mb, base_files, host, Row::median(&runs)));
        fs::remove_dir_all(&root).expect("remove the base");
    }

    println!(
        "\n{isolation}, a step writing {files} files (median of {iters}); snapshot = upper_changes_since"
    );
    println!(
        "{:<26} {:>12} {:>12} {:>12} {:>12} {:>12} {:>9}",
        "base", "host cp", "command", "snapshot", "merge_upper", "cleanup", "entries"
    );
    for (mb, n, host, r) in &rows {
        println!(
            "{:<26} {} {} {} {} {} {:>9}",
            format!("{mb} MB ({n} files)"),
            ms(*host),
            ms(r.command),
            ms(r.snapshot),
            ms(r.merge),
            ms(r.cleanup),
            r.entries
        );
    }
    if let [(_, _, _, small), (_, _, _, big)] = rows.as_slice() {
        println!(
            "snapshot 200 MB / 20 MB: {:.2}x; merge_upper 200 MB / 20 MB: {:.2}x",
            big.snapshot.as_secs_f64() / small.snapshot.as_secs_f64(),
            big.merge.as_secs_f64() / small.merge.as_secs_f64()
        );
    }
    println!("load average at the end: {}", loadavg());
}

#[derive(Clone, Copy)]
struct Row {
    command: Duration,
    snapshot: Duration,
    merge: Duration,
    cleanup: Duration,
    entries: usize,
}

impl Row {
    fn median(runs: &[Row]) -> Row {
        let med = |f: fn(&Row) -> Duration| {
            let mut v: Vec<Duration> = runs.iter().map(f).collect();
            v.sort();
            v.get(v.len() / 2).copied().unwrap_or_default()
        };
        Row {
            command: med(|r| r.command),
            snapshot: med(|r| r.snapshot),
            merge: med(|r| r.merge),
            cleanup: med(|r| r.cleanup),
            entries: runs.first().map(|r| r.entries).unwrap_or_default(),
        }
    }
}

/// One step: `cp -a /input/. /data/new`, snapshot, merge into the base,
/// then (untimed in the figures that matter) the base is put back.
fn one_step(
    sandbox: &Sandbox,
    root: &Path,
    input: &Path,
    files: usize,
    isolation: Isolation,
) -> Row {
    let step = root.with_extension("step");
    let (upper, work) = (step.join("upper"), step.join("work"));
    for d in [&upper, &work] {
        fs::create_dir_all(d).expect("mkdir");
    }
    let spec = RunSpec {
        rootfs: root.to_path_buf(),
        upper: upper.clone(),
        work,
        argv: vec![
            "/bin/busybox".into(),
            "cp".into(),
            "-a".into(),
            "/input/.".into(),
            "/data/new".into(),
        ],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        supplementary_gids: vec![],
        hostname: "kilnbench".into(),
        network: Network::Default,
        mounts: vec![Mount {
            target: "/input".into(),
            kind: MountKind::Bind {
                source: input.to_path_buf(),
                readonly: true,
            },
        }],
        isolation,
        security: kiln_sandbox::Security::Sandbox,
    };
    let t = Instant::now();
    let mut out = Vec::new();
    let r = sandbox.run(&spec, &mut out).expect("run the step");
    let command = t.elapsed();
    assert_eq!(
        r.exit_code,
        0,
        "cp failed: {}",
        String::from_utf8_lossy(&out)
    );

    let t = Instant::now();
    let entries = upper_changes_since(&upper, root, &r.id_map).expect("snapshot");
    let snapshot = t.elapsed();
    let written = entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .count();
    assert_eq!(written, files, "every written file is in the snapshot");

    let t = Instant::now();
    merge_upper(&upper, root).expect("merge");
    let merge = t.elapsed();
    assert!(root.join("data/new/d0000/f0").is_file(), "merged");

    // Put the base back as it was, and drop the step's dirs.
    let t = Instant::now();
    fs::remove_dir_all(root.join("data/new")).expect("remove the merged files");
    fs::remove_dir_all(&step).expect("remove the step dirs");
    let cleanup = t.elapsed();
    Row {
        command,
        snapshot,
        merge,
        cleanup,
        entries: entries.len(),
    }
}

/// A busybox rootfs with `bytes` of 4 KiB filler files under /usr/share
/// (100 to a directory), an empty /data and the usual top-level dirs.
/// Returns the number of files and their total size.
fn make_base(root: &Path, busybox: &Path, bytes: usize) -> (usize, usize) {
    for d in [
        "bin",
        "etc",
        "proc",
        "dev",
        "sys",
        "tmp",
        "data",
        "usr/share",
    ] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755))
        .expect("chmod busybox");
    symlink("busybox", root.join("bin/sh")).expect("symlink");
    for (name, text) in [
        ("passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("group", "root:x:0:\n"),
        ("hosts", "127.0.0.1 localhost\n"),
        ("hostname", "base\n"),
        ("resolv.conf", ""),
    ] {
        fs::write(root.join("etc").join(name), text).expect("write /etc");
    }
    let n = bytes / BASE_FILE_SIZE;
    for i in 0..n {
        let dir = root
            .join("usr/share")
            .join(format!("p{:03}", i / (FILES_PER_DIR * 10)))
            .join(format!("s{}", (i / FILES_PER_DIR) % 10));
        if i % FILES_PER_DIR == 0 {
            fs::create_dir_all(&dir).expect("mkdir");
        }
        fs::write(dir.join(format!("b{i}")), content(i, BASE_FILE_SIZE)).expect("write");
    }
    let busybox_len = fs::metadata(root.join("bin/busybox"))
        .map(|m| m.len() as usize)
        .unwrap_or_default();
    (n + 6, n * BASE_FILE_SIZE + busybox_len)
}

/// Deterministic bytes (xorshift), so no two files share content.
fn content(seed: usize, len: usize) -> Vec<u8> {
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:9.1} ms", d.as_secs_f64() * 1e3)
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `busybox` from `PATH` (it must be static: it runs inside the rootfs).
fn find_busybox() -> PathBuf {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("busybox"))
        .find(|p| p.is_file())
        .expect("busybox in PATH")
}
