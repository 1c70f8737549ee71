//! Crash and concurrency safety of the cache directory, with real kiln
//! processes: builds killed (`kill -9`) at seeded random points never break
//! the next build, the blob store or the scratch space; concurrent builds agree;
//! a full cache filesystem is named as such and leaves nothing half-recorded;
//! an invalid image name is refused before anything is written; `kiln cache
//! prune` waits for running builds.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// splitmix64: a seeded sequence for the kill delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A small FROM-scratch build with COPY and RUN steps that write layers.
fn chaos_context(sb: &Sandbox) {
    sb.busybox();
    for i in 0..6 {
        sb.write(
            &format!("files/f{i}"),
            &format!("file {i}\n").repeat(40_000),
        );
    }
    sb.write("more/readme", "more\n");
    sb.dockerfile(concat!(
        "FROM scratch\n",
        "COPY busybox /bin/busybox\n",
        "COPY files/ /app/\n",
        "RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir -p /gen && for i in 1 2 3 4 5 6; do /bin/busybox cat /app/* > /gen/$i; done\"]\n",
        "COPY more/ /more/\n",
        "RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox cat /gen/* | /bin/busybox wc -c > /count\"]\n",
    ));
}

fn kiln_cmd(cache: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args)
        .env("KILN_CACHE_DIR", cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .current_dir(dir);
    cmd
}

/// `kiln build --reproducible` of the sandbox's context into `out`, on `cache`.
fn build_args(sb: &Sandbox, out: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "build".into(),
        "--reproducible".into(),
        "--progress".into(),
        "plain".into(),
        "--output".into(),
        format!("type=oci,dest={}", sb.path(out).display()),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push(sb.context().to_string_lossy().to_string());
    v
}

fn build(sb: &Sandbox, cache: &Path, out: &str, extra: &[&str]) -> Output {
    let args = build_args(sb, out, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kiln_cmd(cache, sb.dir.path(), &args)
        .output()
        .expect("run kiln")
}

fn spawn(sb: &Sandbox, cache: &Path, out: &str, extra: &[&str]) -> Child {
    spawn_with(sb, cache, out, extra, Stdio::piped)
}

fn spawn_with(
    sb: &Sandbox,
    cache: &Path,
    out: &str,
    extra: &[&str],
    stdio: fn() -> Stdio,
) -> Child {
    let args = build_args(sb, out, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A private TMPDIR: what a killed build leaves there is seen.
    let tmp = sb.path("tmpdir");
    std::fs::create_dir_all(&tmp).expect("mkdir tmpdir");
    kiln_cmd(cache, sb.dir.path(), &args)
        .env("TMPDIR", &tmp)
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .expect("spawn kiln")
}

fn digest_of(o: &Output) -> String {
    assert_success(o);
    stdout(o).trim().to_string()
}

/// Every blob is named by the SHA-256 of its content, and every step record
/// parses and names a layer that is in the store.
fn verify_store(cache: &Path) {
    let blobs = cache.join("blobs/sha256");
    let names: Vec<PathBuf> = std::fs::read_dir(&blobs)
        .expect("blob store")
        .flatten()
        .map(|e| e.path())
        .collect();
    for chunk in names.chunks(200) {
        let out = Command::new("sha256sum")
            .args(chunk)
            .output()
            .expect("sha256sum");
        assert_success(&out);
        for line in stdout(&out).lines() {
            let (sum, path) = line.split_once("  ").expect("sha256sum line");
            let name = Path::new(path).file_name().expect("name").to_string_lossy();
            assert_eq!(sum, name, "blob {path} does not match its name");
        }
    }
    if let Ok(rd) = std::fs::read_dir(cache.join("steps")) {
        for e in rd.flatten() {
            let p = e.path();
            let name = p.file_name().expect("name").to_string_lossy().to_string();
            assert!(
                name.ends_with(".json"),
                "a stray file among the records: {name}"
            );
            let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).expect("read"))
                .unwrap_or_else(|e| panic!("half-written record {name}: {e}"));
            if let Some(d) = rec["layer"]["digest"].as_str() {
                let hex = d.trim_start_matches("sha256:");
                assert!(blobs.join(hex).is_file(), "{name} names a missing blob {d}");
            }
        }
    }
}

/// Waits (up to `limit`) until `dir` is empty or gone.
fn wait_empty(dir: &Path, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let left: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() || start.elapsed() > limit {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn builds_killed_at_random_points_never_break_the_next_one() {
    let sb = Sandbox::new();
    chaos_context(&sb);
    // The undisturbed result, from a cache of its own, and how long a build
    // takes without and with the cache.
    let clean = sb.path("clean-cache");
    let want = digest_of(&build(&sb, &clean, "clean", &[]));
    let t = Instant::now();
    let again = digest_of(&build(&sb, &clean, "clean", &["--no-cache"]));
    let full = t.elapsed();
    assert_eq!(want, again, "a rebuild without the cache is reproducible");
    let t = Instant::now();
    assert_eq!(digest_of(&build(&sb, &clean, "clean", &[])), want);
    let hit = t.elapsed();

    let cache = sb.path("cache");
    let mut rng = Rng(0x6b69_6c6e_6368_616f);
    let kills = 50;
    // Kills land anywhere from before a build starts to about its end.
    let window = |d: Duration| (d.as_millis() as u64).max(20);
    let mut finished = 0;
    let chaos = Instant::now();
    for i in 0..kills {
        // Every other build cannot use what earlier ones stored.
        let (extra, took): (&[&str], Duration) = if i % 2 == 0 {
            (&["--no-cache"], full * 9 / 10)
        } else {
            (&[], hit)
        };
        let mut child = spawn_with(&sb, &cache, &format!("out-{i}"), extra, Stdio::null);
        std::thread::sleep(Duration::from_millis(rng.next() % window(took)));
        if child.try_wait().expect("wait").is_some() {
            finished += 1;
        }
        let _ = child.kill();
        child.wait().expect("wait");
    }
    let chaos_time = chaos.elapsed();
    // Every next build succeeds with the undisturbed digest.
    assert_eq!(digest_of(&build(&sb, &cache, "after", &[])), want);
    assert_eq!(
        digest_of(&build(&sb, &cache, "after-no-cache", &["--no-cache"])),
        want
    );
    verify_store(&cache);
    // The dead builds' scratch space is reclaimed: nothing is left under
    // work/, and the trash is emptied by the last build's cleaner.
    let work = wait_empty(&cache.join("work"), Duration::from_secs(5));
    assert_eq!(work, Vec::<String>::new(), "scratch left in work/");
    let trash = wait_empty(&cache.join("trash"), Duration::from_secs(30));
    assert_eq!(trash, Vec::<String>::new(), "trash never emptied");
    // Nothing of a killed step is left outside the cache dir either (the
    // sandbox's /etc files live in the step's scratch).
    let left: Vec<String> = std::fs::read_dir(sb.path("tmpdir"))
        .expect("read tmpdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "left in TMPDIR by killed builds"
    );
    eprintln!(
        "chaos: {kills} kills in {:.1}s ({finished} builds finished before their kill); an undisturbed build takes {:.2}s, {:.2}s from the cache",
        chaos_time.as_secs_f64(),
        full.as_secs_f64(),
        hit.as_secs_f64()
    );
}

#[test]
fn ten_concurrent_builds_on_one_cache_agree() {
    let sb = Sandbox::new();
    chaos_context(&sb);
    let want = digest_of(&build(&sb, &sb.path("clean-cache"), "clean", &[]));
    let cache = sb.path("cache");
    let children: Vec<Child> = (0..10)
        .map(|i| spawn(&sb, &cache, &format!("out-{i}"), &[]))
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().expect("wait");
        assert_eq!(digest_of(&out), want, "build {i}");
    }
    verify_store(&cache);
    assert_eq!(
        wait_empty(&cache.join("work"), Duration::from_secs(5)),
        Vec::<String>::new()
    );
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        let uid = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1);
        assert_eq!(
            uid, 0,
            "mounting a small cache filesystem needs root (kiln's CI runs as root)"
        );
        std::fs::create_dir_all(&dir).expect("mkdir");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount -t tmpfs");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

#[test]
fn a_full_cache_filesystem_is_named_and_nothing_is_half_recorded() {
    let cases: [(&str, usize, &str); 3] = [
        // The stage root cannot hold the file.
        ("copy-large", 12 << 20, "COPY big /big\n"),
        // The root holds it, the compressed layer does not fit beside it.
        ("layer-blob", 3 << 20, "COPY big /big\n"),
        // A step dies writing to the full disk.
        (
            "run",
            0,
            "RUN [\"/bin/busybox\", \"dd\", \"if=/dev/urandom\", \"of=/big\", \"bs=1M\", \"count=12\"]\n",
        ),
    ];
    for (name, size, step) in cases {
        let sb = Sandbox::new();
        sb.busybox();
        std::fs::write(sb.context().join("big"), noise(size, size as u64 + 7)).expect("write");
        sb.dockerfile(&format!("FROM scratch\nCOPY busybox /bin/busybox\n{step}"));
        let small = sb.path("small");
        let _fs = Tmpfs::mount(small.clone(), "8m");
        let out = build(&sb, &small, "out", &[]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{name}: the build cannot fit");
        eprintln!("{name}: {err}");
        let want = format!("the cache filesystem {} (tmpfs) is full", small.display());
        assert!(err.contains(&want), "{name}: {err}");
        verify_store(&small);
        assert!(!sb.path("out").exists(), "{name}: no output");
        // Once there is room again, the same cache directory builds.
        drop(_fs);
    }
}

#[test]
fn an_invalid_tag_is_refused_before_anything_is_written() {
    let sb = Sandbox::new();
    chaos_context(&sb);
    let cache = sb.path("cache");
    for tag in ["Bad Name:v1", "repo:bad tag", "UPPER/case:v1", "x:"] {
        let iid = sb.path("iid");
        let meta = sb.path("meta.json");
        let args = build_args(
            &sb,
            "out",
            &[
                "-t",
                tag,
                "--iidfile",
                &iid.to_string_lossy(),
                "--metadata-file",
                &meta.to_string_lossy(),
            ],
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = kiln_cmd(&cache, sb.dir.path(), &args)
            .output()
            .expect("kiln");
        assert!(!out.status.success(), "-t {tag:?} is refused");
        assert!(stderr(&out).contains(tag), "{}", stderr(&out));
        assert!(
            !sb.path("out").exists(),
            "-t {tag:?}: the output was written"
        );
        assert!(!iid.exists() && !meta.exists());
        assert!(!cache.join("steps").exists(), "-t {tag:?}: the build ran");
    }
}

/// Starts a build whose RUN says `started` then sleeps `secs`; returns once
/// the step runs.
fn start_sleeping_build(sb: &Sandbox, cache: &Path, secs: u32) -> Child {
    sb.busybox();
    sb.dockerfile(&format!(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo started; /bin/busybox sleep {secs}\"]\n"
    ));
    let mut child = spawn(sb, cache, "out", &["--no-cache"]);
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) if l.contains("started") => return child,
            Ok(l) => seen.push(l),
            Err(_) if start.elapsed() > Duration::from_secs(60) => {
                panic!("the step never started:\n{}", seen.join("\n"))
            }
            Err(_) => {}
        }
    }
}

#[test]
fn prune_waits_for_a_running_build() {
    let sb = Sandbox::new();
    let cache = sb.path("cache");
    let mut child = start_sleeping_build(&sb, &cache, 3);
    let t = Instant::now();
    let prune = kiln_cmd(&cache, sb.dir.path(), &["cache", "prune", "--all"])
        .output()
        .expect("prune");
    assert_success(&prune);
    assert!(
        stderr(&prune).contains("waiting for the builds using"),
        "{}",
        stderr(&prune)
    );
    // It pruned after the build was done, and the build was undisturbed.
    let status = child
        .try_wait()
        .expect("wait")
        .expect("the build finished before the prune ended");
    assert!(status.success());
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert!(
        !cache.join("steps").exists()
            || std::fs::read_dir(cache.join("steps"))
                .expect("ls")
                .next()
                .is_none()
    );

    // Waiting has a limit, and says so.
    let mut child = start_sleeping_build(&sb, &cache, 60);
    let prune = kiln_cmd(
        &cache,
        sb.dir.path(),
        &["cache", "prune", "--all", "--wait-timeout", "1s"],
    )
    .output()
    .expect("prune");
    let _ = child.kill();
    let _ = child.wait();
    assert!(!prune.status.success());
    assert!(
        stderr(&prune).contains("timed out after 1s waiting for the builds"),
        "{}",
        stderr(&prune)
    );
}
