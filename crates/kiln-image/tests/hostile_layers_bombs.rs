//! Hostile layer tars against `apply_layer` that attack resources: a gzip
//! bomb, a PAX record bomb and a huge entry count must apply in bounded
//! memory and time. Each measurement runs in a child process (this test
//! binary re-run on one `*_child` test) whose peak RSS is read back.
//!
//! Each test keeps a host canary beside the destination root, with known
//! content, mode, owner, mtime and inode, and asserts it is unchanged; the
//! layer either fails with an error or lands inside the root. The raw tar
//! writer and the canary scene are in `common/hostile.rs`.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::Write;

use common::hostile::*;
use kiln_image::{apply_layer, ApplyOptions};

// ---------------------------------------------------------------------------
// Bombs and huge entry counts: bounded memory and time, measured in a child
// process that does nothing but the apply.

/// Runs the test `name` of this binary in a child process (with `env`
/// telling it to do the work) and returns the peak RSS (KiB) and the wall
/// time it reported.
fn child_peak(name: &str, env: &str) -> (u64, f64) {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--include-ignored"])
        .env(env, "1")
        .output()
        .expect("run child");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CHILD-REPORT "))
        .unwrap_or_else(|| panic!("no report from the child:\n{text}"));
    let mut it = line.split_whitespace();
    let kib = it.next().and_then(|v| v.parse().ok()).expect("peak");
    let secs = it.next().and_then(|v| v.parse().ok()).expect("secs");
    (kib, secs)
}

/// Peak resident set of this process, from /proc/self/status (VmHWM).
fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

const BOMB_MIB: u64 = 512;

/// One file of 512 MiB of zeros, gzipped to about half a megabyte.
fn gzip_bomb() -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut h = tar::Header::new_ustar();
    h.set_path("bomb").expect("path");
    h.set_size(BOMB_MIB << 20);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    enc.write_all(h.as_bytes()).expect("compress");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..BOMB_MIB {
        enc.write_all(&zeros).expect("compress");
    }
    enc.write_all(&[0u8; 1024]).expect("compress");
    enc.finish().expect("compress")
}

#[test]
fn gzip_bomb_child() {
    if std::env::var_os("KILN_HOSTILE_BOMB_CHILD").is_none() {
        return; // only as the child of gzip_bomb_applies_in_bounded_memory
    }
    let s = Scene::new();
    let bomb = gzip_bomb();
    let digest = s.store.put_bytes(&bomb).expect("store");
    drop(bomb);
    let start = std::time::Instant::now();
    apply_layer(&s.store, &digest, &s.root, &ApplyOptions::default()).expect("apply");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(
        fs::metadata(s.root.join("bomb")).expect("bomb").len(),
        BOMB_MIB << 20
    );
    s.assert_canaries();
    println!("CHILD-REPORT {} {secs:.2}", peak_rss_kib());
}

/// A 512 MiB file compressed a thousandfold is streamed to disk, not held
/// in memory.
#[test]
fn gzip_bomb_applies_in_bounded_memory() {
    let (kib, secs) = child_peak("gzip_bomb_child", "KILN_HOSTILE_BOMB_CHILD");
    eprintln!("gzip bomb ({BOMB_MIB} MiB): peak RSS {kib} KiB, apply {secs:.2} s");
    assert!(
        kib < 96 * 1024,
        "peak RSS {kib} KiB for a {BOMB_MIB} MiB bomb"
    );
}

/// A PAX extended header whose one record is 256 MiB (compressed to a few
/// hundred KiB): a reader that collects the record whole holds it all in
/// memory.
#[test]
fn pax_record_bomb_child() {
    if std::env::var_os("KILN_HOSTILE_PAX_BOMB_CHILD").is_none() {
        return; // only as the child of pax_record_bomb_applies_in_bounded_memory
    }
    let s = Scene::new();
    let mib = 256usize;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let value_len = (mib << 20) - 64;
    let rest = "comment".len() + value_len + 3;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len += 1;
    }
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..14].copy_from_slice(b"././@PaxHeader");
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(len as u64);
    h.set_mode(0o644);
    h.set_cksum();
    enc.write_all(h.as_bytes()).expect("compress");
    enc.write_all(format!("{len} comment=").as_bytes())
        .expect("compress");
    let chunk = vec![b'a'; 1 << 20];
    let mut left = value_len;
    while left > 0 {
        let n = left.min(chunk.len());
        enc.write_all(&chunk[..n]).expect("compress");
        left -= n;
    }
    enc.write_all(b"\n").expect("compress");
    let pad = (512 - (len % 512)) % 512;
    enc.write_all(&vec![0u8; pad]).expect("compress");
    let mut f = tar::Header::new_ustar();
    f.set_path("after").expect("path");
    f.set_size(0);
    f.set_mode(0o644);
    f.set_cksum();
    enc.write_all(f.as_bytes()).expect("compress");
    enc.write_all(&[0u8; 1024]).expect("compress");
    let bomb = enc.finish().expect("compress");
    let digest = s.store.put_bytes(&bomb).expect("store");
    drop(bomb);
    let start = std::time::Instant::now();
    let r = apply_layer(&s.store, &digest, &s.root, &ApplyOptions::default());
    let secs = start.elapsed().as_secs_f64();
    eprintln!("pax record bomb: {r:?}");
    assert!(
        matches!(&r, Err(e) if e.to_string().contains("exceeds")),
        "the record is refused: {r:?}"
    );
    s.assert_canaries();
    println!("CHILD-REPORT {} {secs:.2}", peak_rss_kib());
}

#[test]
fn pax_record_bomb_applies_in_bounded_memory() {
    let (kib, secs) = child_peak("pax_record_bomb_child", "KILN_HOSTILE_PAX_BOMB_CHILD");
    eprintln!("PAX record bomb (256 MiB): peak RSS {kib} KiB, apply {secs:.2} s");
    assert!(
        kib < 96 * 1024,
        "peak RSS {kib} KiB for a 256 MiB PAX record"
    );
}

/// 2×10⁵ rather than 10⁶: a million entries took 80–300 s to apply in a
/// debug build on a shared two-core runner, too long for every CI run; the
/// bounds below still catch anything worse than linear.
const MANY: usize = 200_000;

#[test]
fn many_entries_child() {
    if std::env::var_os("KILN_HOSTILE_MANY_CHILD").is_none() {
        return; // only as the child of many_entries_apply_in_bounded_time_and_memory
    }
    let s = Scene::new();
    // MANY headers: directories of 999 empty files each, gzipped.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut n = 0;
    let mut d = 0;
    while n < MANY {
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("d{d:04}/")).expect("path");
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_cksum();
        enc.write_all(h.as_bytes()).expect("compress");
        n += 1;
        for f in 0..999 {
            if n == MANY {
                break;
            }
            let mut h = tar::Header::new_ustar();
            h.set_path(format!("d{d:04}/f{f:03}")).expect("path");
            h.set_size(0);
            h.set_mode(0o644);
            h.set_cksum();
            enc.write_all(h.as_bytes()).expect("compress");
            n += 1;
        }
        d += 1;
    }
    enc.write_all(&[0u8; 1024]).expect("compress");
    let layer = enc.finish().expect("compress");
    let digest = s.store.put_bytes(&layer).expect("store");
    drop(layer);
    let start = std::time::Instant::now();
    apply_layer(&s.store, &digest, &s.root, &ApplyOptions::default()).expect("apply");
    let secs = start.elapsed().as_secs_f64();
    assert!(s.root.join("d0000/f998").is_file());
    s.assert_canaries();
    println!("CHILD-REPORT {} {secs:.2}", peak_rss_kib());
}

#[test]
fn many_entries_apply_in_bounded_time_and_memory() {
    let (kib, secs) = child_peak("many_entries_child", "KILN_HOSTILE_MANY_CHILD");
    eprintln!("{MANY} entries: peak RSS {kib} KiB, apply {secs:.2} s");
    assert!(kib < 192 * 1024, "peak RSS {kib} KiB for {MANY} entries");
    assert!(secs < 120.0, "{secs} s for {MANY} entries");
}
