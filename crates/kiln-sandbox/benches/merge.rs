//! The cost of [`merge_upper_discarding`] alone, without a sandbox: an upper
//! dir of `KILN_BENCH_FILES` (default 20,000) small files, 100 to a
//! directory, merged into a rootfs that already holds those directories
//! (so every directory is merged entry by entry and takes the upper's
//! metadata), one file in ten replacing an existing one (kept in the
//! discard dir by a hard link). Prints the median of `KILN_BENCH_ITERS`
//! (default 3) merges, each on a fresh upper and rootfs.
//!
//! `cargo bench -p kiln-sandbox --bench merge`; runs as any user.

// Benches panic on a failed step: that is the failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_sandbox::merge_upper_discarding;

const FILES_PER_DIR: usize = 100;

fn main() {
    let files: usize = env_num("KILN_BENCH_FILES", 20_000).max(1);
    let iters: usize = env_num("KILN_BENCH_ITERS", 3).max(1);
    let mut times = Vec::new();
    for _ in 0..iters {
        let tmp = tempfile::Builder::new()
            .prefix("kiln-merge-bench-")
            .tempdir()
            .expect("create a temp dir");
        let (upper, root, discard) = (
            tmp.path().join("upper"),
            tmp.path().join("root"),
            tmp.path().join("discard"),
        );
        for i in 0..files {
            let d = format!("usr/lib/d{:04}", i / FILES_PER_DIR);
            if i % FILES_PER_DIR == 0 {
                fs::create_dir_all(upper.join(&d)).expect("mkdir");
                fs::create_dir_all(root.join(&d)).expect("mkdir");
            }
            let name = format!("{d}/f{i}");
            fs::write(upper.join(&name), b"new").expect("write");
            if i % 10 == 0 {
                fs::write(root.join(&name), b"old").expect("write");
            }
        }
        sync(tmp.path());
        let t = Instant::now();
        merge_upper_discarding(&upper, &root, &discard).expect("merge");
        times.push(t.elapsed());
        assert!(root.join("usr/lib/d0000/f0").is_file());
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "merge_upper_discarding, {files} files in {} dirs: median {} of {iters} ({})",
        files.div_ceil(FILES_PER_DIR),
        ms(median),
        times.iter().map(|t| ms(*t)).collect::<Vec<_>>().join(", ")
    );
}

fn sync(_p: &Path) {
    rustix::fs::sync();
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
