//! kiln's state on the host: the cache directory is private (files from
//! images, setuid binaries included, are out of other users' reach), secret
//! values never reach it (not even from a killed build), the scratch space of
//! dead builds is swept, and a bind mount's cache key comes from what is
//! mounted (a symlinked source is resolved first; a source outside its root is
//! refused before anything is read).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn is_root() -> bool {
    // The tests below check what other users can reach: kiln runs as root
    // here as it does on CI hosts.
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1);
    assert_eq!(
        uid, 0,
        "these tests run as root (kiln's CI runs them as root)"
    );
    true
}

/// Every regular file under `dir` (not following symlinks).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Runs `program args` as `nobody` (uid and gid 65534, no groups).
fn as_nobody(program: &str, args: &[&str]) -> std::process::Output {
    let setpriv = which("setpriv").expect("setpriv (util-linux) is installed by scripts/setup.sh");
    Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(program)
        .args(args)
        .output()
        .expect("run setpriv")
}

#[test]
fn setuid_files_from_images_are_out_of_other_users_reach() {
    assert!(is_root());
    let sb = Sandbox::new();
    sb.busybox();
    sb.dockerfile(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"cp\", \"/bin/busybox\", \"/id\"]\nRUN [\"/bin/busybox\", \"chmod\", \"4755\", \"/id\"]\n",
    );
    // A cache directory that exists with a wide mode is tightened.
    // Everything above the cache directory is open to other users, as a
    // home directory's `.cache` commonly is.
    std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cache = sb.path("cache");
    std::fs::create_dir_all(&cache).expect("mkdir");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    sb.build_oci("out", &[]);
    assert_eq!(
        std::fs::metadata(&cache).expect("stat").mode() & 0o7777,
        0o700
    );
    for e in std::fs::read_dir(&cache).expect("ls").flatten() {
        if e.file_type().expect("type").is_dir() {
            assert_eq!(
                e.metadata().expect("stat").mode() & 0o077,
                0,
                "{} is open to other users",
                e.path().display()
            );
        }
    }
    // The image's setuid-root binary is kept in the cache (a stage root
    // snapshot) ...
    let setuid: Vec<PathBuf> = files_under(&cache)
        .into_iter()
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .map(|m| m.mode() & 0o4000 != 0 && m.uid() == 0)
                .unwrap_or(false)
        })
        .collect();
    assert!(
        !setuid.is_empty(),
        "the build keeps its stage root in the cache"
    );
    // ... and nobody can reach it: neither stat it nor run it.
    for p in &setuid {
        let p = p.to_string_lossy();
        let stat = as_nobody("/usr/bin/stat", &[&p]);
        assert!(!stat.status.success(), "nobody can stat {p}");
        // A setuid busybox named `id`: anyone who can reach it runs it.
        // (Through a shell: setpriv itself finds the program before its
        // capabilities go.)
        let run = as_nobody("/bin/sh", &["-c", "exec \"$0\" -u", &p]);
        assert!(
            !run.status.success(),
            "nobody ran {p}: {}",
            String::from_utf8_lossy(&run.stdout)
        );
    }
    // Other users can still reach the image kiln wrote where it was asked to.
    let out = sb.path("out").to_string_lossy().to_string();
    let ls = as_nobody("/usr/bin/ls", &[&out]);
    assert!(ls.status.success(), "{}", stderr(&ls));
}

/// Starts `kiln build` and returns it with a reader of its stderr lines.
fn spawn_build(
    sb: &Sandbox,
    args: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .args(args)
        .env("KILN_CACHE_DIR", sb.path("cache"))
        .current_dir(sb.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a line containing `needle`; returns every line seen.
fn wait_for_line(
    rx: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    limit: Duration,
) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < limit {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    panic!(
        "no line with {needle:?} within {limit:?}:\n{}",
        seen.join("\n")
    );
}

/// Whether any file under `dir` contains `needle`.
fn holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn secrets_never_reach_the_cache_dir_even_from_a_killed_build() {
    // Root isolation (kiln as root) and a user namespace.
    for isolation in ["root", "userns"] {
        secret_killed_mid_step(isolation);
    }
}

fn secret_killed_mid_step(isolation: &str) {
    let sb = Sandbox::new();
    sb.busybox();
    let value = format!("kiln-secret-{}-{}", std::process::id(), line!());
    let secret_file = sb.path("token");
    std::fs::write(&secret_file, &value).expect("write");
    // The step checks it sees the value (by its digest: the value itself is
    // in no file of the build), says so, then sleeps until killed.
    let md5 = run_tool("md5sum", &[&secret_file.to_string_lossy()]);
    let md5 = md5.split_whitespace().next().expect("md5").to_string();
    sb.dockerfile(&format!(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN --mount=type=secret,id=tok,target=/run/secrets/tok [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox md5sum /run/secrets/tok | /bin/busybox grep -q {md5} && echo ok-$((40+2)) mode=$(/bin/busybox stat -c %a /run/secrets/tok) && /bin/busybox sleep 60\"]\n"
    ));
    let secret_arg = format!("id=tok,src={}", secret_file.display());
    let ctx = sb.context().to_string_lossy().to_string();
    let dest = format!("type=oci,dest={}", sb.path("out").display());
    let (mut child, rx) = spawn_build(
        &sb,
        &[
            "--isolation",
            isolation,
            "--progress",
            "plain",
            "--secret",
            &secret_arg,
            "--output",
            &dest,
            &ctx,
        ],
    );
    let lines = wait_for_line(&rx, "ok-42", Duration::from_secs(60));
    assert!(
        lines.iter().any(|l| l.contains("ok-42 mode=400")),
        "{isolation}: {lines:?}"
    );
    // While the step runs, the value is nowhere under the cache directory.
    let cache = sb.path("cache");
    assert_eq!(holding(&cache, value.as_bytes()), Vec::<PathBuf>::new());
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    // Give the sandbox (killed with its parent) a moment to go.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        holding(&cache, value.as_bytes()),
        Vec::<PathBuf>::new(),
        "{isolation}: a killed build left the secret value in the cache directory"
    );
    // Nor did it go to the host's shared memory instead.
    assert_eq!(
        holding(Path::new("/dev/shm"), value.as_bytes()),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn dead_builds_scratch_is_swept_and_live_builds_scratch_kept() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.dockerfile("FROM scratch\nCOPY busybox /bin/busybox\n");
    let work = sb.path("cache/work");
    std::fs::create_dir_all(&work).expect("mkdir");
    // A build killed before this version: `build-<pid>`, no lock, its pid gone.
    let dead_pid = (400_000..4_000_000)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .expect("a free pid");
    let legacy_dead = work.join(format!("build-{dead_pid}"));
    std::fs::create_dir_all(legacy_dead.join("stages-0/root")).expect("mkdir");
    std::fs::write(legacy_dead.join("stages-0/root/big"), "x").expect("write");
    // A killed build: its lock file is there, nobody holds it.
    let dead = work.join("build-12345-0badcafe");
    std::fs::create_dir_all(dead.join("context")).expect("mkdir");
    std::fs::write(work.join("build-12345-0badcafe.lock"), "").expect("write");
    // A running build (here: a process holding its lock).
    let live = work.join("build-23456-1234abcd");
    std::fs::create_dir_all(live.join("context")).expect("mkdir");
    let live_lock = work.join("build-23456-1234abcd.lock");
    std::fs::write(&live_lock, "").expect("write");
    let mut holder = Command::new(which("flock").expect("flock (util-linux)"))
        .arg(&live_lock)
        .args(["sleep", "120"])
        .spawn()
        .expect("flock");
    // A running build of this process's pid from before leases: kept.
    let legacy_live = work.join(format!("build-{}", holder.id()));
    std::fs::create_dir_all(&legacy_live).expect("mkdir");
    // flock takes the lock before running sleep.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let probe = Command::new("flock")
            .args(["--nonblock", "--exclusive"])
            .arg(&live_lock)
            .arg("true")
            .status()
            .expect("flock");
        if !probe.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sb.build_oci("out", &[]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(!legacy_dead.exists(), "a dead legacy scratch dir is swept");
    assert!(!dead.exists(), "a dead build's scratch dir is swept");
    assert!(!work.join("build-12345-0badcafe.lock").exists());
    assert!(
        live.join("context").is_dir(),
        "a live build's scratch is kept"
    );
    assert!(live_lock.exists());
    assert!(legacy_live.is_dir(), "a legacy dir of a live pid is kept");
    // The build's own scratch space is gone too.
    let left: Vec<String> = std::fs::read_dir(&work)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let mut left = left;
    left.sort();
    let mut want = vec![
        "build-23456-1234abcd".to_string(),
        "build-23456-1234abcd.lock".to_string(),
        format!("build-{}", holder.id()),
    ];
    want.sort();
    assert_eq!(left, want);
}

#[test]
fn a_symlinked_bind_source_is_keyed_by_what_it_mounts() {
    let sb = Sandbox::new();
    sb.busybox();
    sb.write("data/f", "one\n");
    std::os::unix::fs::symlink("data", sb.context().join("link")).expect("symlink");
    sb.dockerfile(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN --mount=type=bind,source=link,target=/m [\"/bin/busybox\", \"cp\", \"/m/f\", \"/out\"]\n",
    );
    let first = sb.build_oci("out1", &[]);
    sb.write("data/f", "two\n");
    let second = sb.build_oci("out2", &[]);
    assert_ne!(
        first, second,
        "changing what the link points to must miss the cache"
    );
    // Unchanged, the key is stable: a hit with the same digest.
    let third = sb.build_oci("out3", &[]);
    assert_eq!(second, third);
}

#[test]
fn a_bind_source_outside_its_root_is_refused_before_anything_is_read() {
    let sb = Sandbox::new();
    sb.busybox();
    // A canary beside the context: reading it would move its access time.
    let canary = sb.path("canary");
    std::fs::write(&canary, "host file").expect("write");
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(&canary)
        .and_then(|f| f.set_times(std::fs::FileTimes::new().set_accessed(old)))
        .expect("atime");
    for source in ["..", "../..", "/../..", "data/../../.."] {
        sb.dockerfile(&format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN --mount=type=bind,source={source},target=/m [\"/bin/busybox\", \"true\"]\n"
        ));
        let ctx = sb.context().to_string_lossy().to_string();
        let dest = format!("type=oci,dest={}", sb.path("out").display());
        let t = Instant::now();
        let out = sb.kiln(&["build", "--output", &dest, &ctx]);
        assert!(!out.status.success(), "source={source} must be refused");
        assert!(
            stderr(&out).contains("points outside its root"),
            "source={source}: {}",
            stderr(&out)
        );
        assert!(t.elapsed() < Duration::from_secs(30));
        let atime = std::fs::metadata(&canary)
            .expect("stat")
            .accessed()
            .expect("atime");
        assert_eq!(atime, old, "source={source}: a host file was read");
    }
}
