//! In-place change detection on a 50,000-file tree (~200 MB): the stat
//! walk ([`kiln_sandbox::scan`] + [`kiln_sandbox::changes`]) against a full
//! SHA-256 re-hash of the tree, after a RUN-like change of 500 files.
//!
//! `cargo bench -p kiln-sandbox --bench in_place`; a plain `main` that
//! prints its figures. `KILN_BENCH_FILES` changes the file count.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_sandbox::{changes, scan, IgnoreSet};
use sha2::{Digest, Sha256};

const FILE_SIZE: usize = 4096;
const FILES_PER_DIR: usize = 100;
const DIRS_PER_TOP: usize = 10;

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let files: usize = std::env::var("KILN_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let tmp = tempfile::Builder::new()
        .prefix("kiln-inplace-bench-")
        .tempdir()
        .expect("create a temp dir");
    let root = tmp.path();

    let t = Instant::now();
    let paths = make_tree(root, files);
    let bytes = paths.len() * FILE_SIZE;
    println!(
        "tree: {} files, {} dirs, {:.0} MB, made in {}",
        paths.len(),
        paths.len().div_ceil(FILES_PER_DIR) + paths.len().div_ceil(FILES_PER_DIR * DIRS_PER_TOP),
        bytes as f64 / 1e6,
        fmt(t.elapsed())
    );
    let ignore = IgnoreSet::new(root, Path::new("/kiln"), &[]);

    let t = Instant::now();
    let base = scan(root, &ignore).expect("scan");
    let scan_time = t.elapsed();
    println!(
        "scan:                          {} ({} paths, {} racy files hashed)",
        fmt(scan_time),
        base.len(),
        base.hashed()
    );

    let mut unchanged = Vec::new();
    let mut b = base;
    for _ in 0..3 {
        let t = Instant::now();
        let (entries, next) = changes(root, &b, &ignore).expect("changes");
        unchanged.push(t.elapsed());
        assert!(entries.is_empty(), "an unchanged tree reported changes");
        b = next;
    }
    unchanged.sort();
    println!(
        "changes(), unchanged tree:     {} (median of 3)",
        fmt(unchanged[1])
    );

    // A RUN-like change, three times on other files each time: 300 files
    // rewritten, 100 added, 100 deleted.
    let mut changed = Vec::new();
    let mut reported = (0, 0);
    for round in 0..3 {
        let step = paths.len() / 500;
        for (i, p) in paths
            .iter()
            .skip(round * 7 + 1)
            .step_by(step.max(1))
            .take(500)
            .enumerate()
        {
            match i % 5 {
                0..=2 => {
                    fs::write(p, content(i + 1_000_000 * (round + 1), FILE_SIZE)).expect("rewrite")
                }
                3 => fs::write(p.with_extension("new"), content(i, FILE_SIZE)).expect("add"),
                _ => fs::remove_file(p).expect("delete"),
            }
        }
        let t = Instant::now();
        let (entries, next) = changes(root, &b, &ignore).expect("changes");
        changed.push(t.elapsed());
        let files = entries
            .iter()
            .filter(|e| !matches!(e.kind, kiln_image::EntryKind::Dir))
            .count();
        assert_eq!(files, 500, "a RUN-like change of 500 files");
        reported = (entries.len(), files);
        b = next;
    }
    changed.sort();
    let changes_time = changed[1];
    println!(
        "changes(), 500 files changed:  {} (median of 3; {} entries, {} files/whiteouts)",
        fmt(changes_time),
        reported.0,
        reported.1
    );

    let threads = std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .clamp(4, 16);
    let mut rehashes = Vec::new();
    let mut hashed = (0, 0);
    for _ in 0..3 {
        let t = Instant::now();
        hashed = rehash(root, threads);
        rehashes.push(t.elapsed());
    }
    rehashes.sort();
    let rehash_time = rehashes[1];
    println!(
        "full SHA-256 re-hash:          {} (median of 3; {} files, {:.0} MB, {} threads, {:.0} MB/s, page cache warm)",
        fmt(rehash_time),
        hashed.0,
        hashed.1 as f64 / 1e6,
        threads,
        hashed.1 as f64 / 1e6 / rehash_time.as_secs_f64()
    );
    println!(
        "ratio re-hash / changes():     {:.1}x (target >= 3x)",
        rehash_time.as_secs_f64() / changes_time.as_secs_f64()
    );
    println!(
        "ratio re-hash / (scan+changes): {:.1}x",
        rehash_time.as_secs_f64() / (scan_time + changes_time).as_secs_f64()
    );
    println!(
        "load average at the end: {}",
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}

fn fmt(d: Duration) -> String {
    format!("{:8.1} ms", d.as_secs_f64() * 1e3)
}

/// Deterministic, incompressible-looking bytes (xorshift).
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

/// top-N/sub-M/file-K: 10 subdirs of 100 files under each top dir.
fn make_tree(root: &Path, files: usize) -> Vec<PathBuf> {
    let mut paths = Vec::with_capacity(files);
    for i in 0..files {
        let dir = root
            .join(format!("top-{}", i / (FILES_PER_DIR * DIRS_PER_TOP)))
            .join(format!("sub-{}", (i / FILES_PER_DIR) % DIRS_PER_TOP));
        if i % FILES_PER_DIR == 0 {
            fs::create_dir_all(&dir).expect("mkdir");
        }
        let p = dir.join(format!("file-{i}.dat"));
        fs::write(&p, content(i, FILE_SIZE)).expect("write");
        paths.push(p);
    }
    paths
}

/// What a walker without a stat baseline must do: list and hash every
/// file, on `threads` threads.
fn rehash(root: &Path, threads: usize) -> (usize, usize) {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read dir") {
            let e = e.expect("dir entry");
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files.push(e.path());
            }
        }
    }
    let next = Mutex::new(0usize);
    let total = Mutex::new((0usize, 0usize));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; 64 * 1024];
                let mut mine = (0usize, 0usize);
                loop {
                    let i = {
                        let mut n = next.lock().expect("lock");
                        *n += 1;
                        *n - 1
                    };
                    let Some(p) = files.get(i) else { break };
                    let mut f = fs::File::open(p).expect("open");
                    let mut h = Sha256::new();
                    loop {
                        let n = f.read(&mut buf).expect("read");
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                        mine.1 += n;
                    }
                    std::hint::black_box(h.finalize());
                    mine.0 += 1;
                }
                let mut t = total.lock().expect("lock");
                t.0 += mine.0;
                t.1 += mine.1;
            });
        }
    });
    let t = *total.lock().expect("lock");
    t
}
