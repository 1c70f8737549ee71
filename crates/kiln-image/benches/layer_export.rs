//! Layer export benchmark: kiln's `write_layer` (gzip -6, all cores) against
//! `tar -c | pigz -6` on the same trees, in the same run. Prints MB/s for both and
//! kiln's peak RSS (VmHWM, reset before each kiln run).
//!
//! Run with `cargo bench -p kiln-image`. `KILN_BENCH_BIG_MIB` sets the size of the big
//! file (default 1024), `KILN_BENCH_SMALL_FILES` the number of small files (default 20000).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use kiln_image::{
    write_layer_threads, BlobStore, Compression, EntryKind, Format, LayerEntry, LayerOptions,
};

/// xorshift64*: fast deterministic pseudo-random bytes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Compression threads for both sides: `KILN_BENCH_THREADS`, default all cores.
fn threads() -> usize {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    env_num("KILN_BENCH_THREADS", all as u64) as usize
}

fn make_big(dir: &Path, mib: u64) {
    let mut f = std::io::BufWriter::new(fs::File::create(dir.join("big.bin")).unwrap());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in buf.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
}

fn make_small(dir: &Path, n: u64) {
    const WORDS: [&str; 16] = [
        "kiln", "layer", "image", "build", "stage", "copy", "run", "from", "cache", "blob", "tar",
        "gzip", "digest", "config", "manifest", "index",
    ];
    let mut rng = Rng(42);
    for i in 0..n {
        let d = dir.join(format!("d{:03}", i % 200));
        if i < 200 {
            fs::create_dir_all(&d).unwrap();
        }
        let mut s = String::with_capacity(3200);
        while s.len() < 3000 {
            let r = rng.next();
            s.push_str(WORDS[(r % 16) as usize]);
            s.push(if matches!(r % 7, 0) { '\n' } else { ' ' });
            if matches!(r % 5, 0) {
                s.push_str(&(r % 100_000).to_string());
            }
        }
        fs::write(d.join(format!("f{i:05}.txt")), s).unwrap();
    }
}

/// Walks `root` into layer entries (what the snapshotter hands kiln-image).
fn walk(root: &Path, dir: &Path, out: &mut Vec<LayerEntry>, bytes: &mut u64) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
        let kind = if m.is_dir() {
            EntryKind::Dir
        } else {
            *bytes += m.len();
            EntryKind::File {
                source: p.clone(),
                size: m.len(),
            }
        };
        out.push(LayerEntry {
            path: rel,
            kind,
            mode: m.mode() & 0o7777,
            uid: u64::from(m.uid()),
            gid: u64::from(m.gid()),
            mtime: m.mtime(),
            xattrs: vec![],
        });
        if m.is_dir() {
            walk(root, &p, out, bytes);
        }
    }
}

/// (own CPU seconds, waited-for children's CPU seconds) from /proc/self/stat.
fn cpu_seconds() -> (f64, f64) {
    let s = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that closes the command name; utime is field 14 overall.
    let rest = s.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let tick = 100.0; // USER_HZ on Linux
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0);
    ((get(11) + get(12)) / tick, (get(13) + get(14)) / tick)
}

fn vm_hwm_kib() -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn bench(name: &str, tree: &Path, work: &Path) {
    // Warm the page cache so both sides read from memory.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("tar -cf - -C '{}' . > /dev/null", tree.display()))
        .status();

    let store = BlobStore::open(&work.join(format!("store-{name}"))).unwrap();
    let _ = fs::write("/proc/self/clear_refs", "5"); // reset VmHWM
    let (cpu0, _) = cpu_seconds();
    let t = Instant::now();
    let mut entries = Vec::new();
    let mut bytes = 0;
    walk(tree, tree, &mut entries, &mut bytes);
    let layer = write_layer_threads(
        &store,
        entries,
        &LayerOptions {
            compression: Compression::Gzip { level: 6 },
            format: Format::Oci,
            mtime_clamp: None,
        },
        threads(),
    )
    .unwrap();
    let kiln_s = t.elapsed().as_secs_f64();
    let kiln_cpu = cpu_seconds().0 - cpu0;
    let hwm = vm_hwm_kib();

    let out = work.join(format!("{name}.tar.gz"));
    let (_, child0) = cpu_seconds();
    let t = Instant::now();
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -cf - -C '{}' . | pigz -p {} -6 > '{}'",
            tree.display(),
            threads(),
            out.display()
        ))
        .status()
        .is_ok_and(|s| s.success());
    let pigz_s = t.elapsed().as_secs_f64();
    let pigz_cpu = cpu_seconds().1 - child0;
    let mb = bytes as f64 / 1e6;
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "== {name}: {:.0} MB of file data (load average {})",
        mb,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "kiln write_layer: {:7.1} MB/s  ({kiln_s:.2} s wall, {kiln_cpu:.2} s CPU, blob {} bytes, peak RSS {:.1} MiB)",
        mb / kiln_s,
        layer.size,
        hwm as f64 / 1024.0
    );
    if ok {
        let pigz_size = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        println!(
            "tar -c | pigz -6: {:7.1} MB/s  ({pigz_s:.2} s wall, {pigz_cpu:.2} s CPU, output {pigz_size} bytes)",
            mb / pigz_s
        );
        println!(
            "kiln / pigz: {:.0}% of wall-clock throughput, {:.0}% of CPU efficiency",
            100.0 * pigz_s / kiln_s,
            100.0 * pigz_cpu / kiln_cpu
        );
    } else {
        println!("tar | pigz: not available on this machine");
    }
    let _ = fs::remove_file(&out);
    let _ = fs::remove_dir_all(work.join(format!("store-{name}")));
}

fn main() {
    // `cargo test --benches` passes --bench-less flags; only run when benchmarking.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    println!(
        "kiln-image layer export benchmark ({} compression threads)",
        threads()
    );
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big");
    fs::create_dir_all(&big).unwrap();
    make_big(&big, env_num("KILN_BENCH_BIG_MIB", 1024));
    bench("one 1 GiB random file", &big, tmp.path());
    fs::remove_dir_all(&big).unwrap();
    if env_num("KILN_BENCH_SMALL_FILES", 20_000) == 0 {
        return;
    }
    let small = tmp.path().join("small");
    fs::create_dir_all(&small).unwrap();
    make_small(&small, env_num("KILN_BENCH_SMALL_FILES", 20_000));
    bench("small files (~3 KB each)", &small, tmp.path());
}
