//! Overhead of one RUN step: a whole sandbox run of `/bin/true` (setup,
//! command, teardown of the namespaces), the snapshot of its (empty) upper
//! dir, and removing the step's dirs, in `userns` and `root` isolation.
//!
//! `cargo bench -p kiln-sandbox --bench run_overhead`; a plain `main` that
//! prints its figures (median and p90). `KILN_BENCH_ITERS` sets the
//! iterations per mode (default 40), `KILN_BENCH_MODES` the modes
//! (default `userns,root`). Target: < 50 ms per step.
//!
//! Besides the timings of the public calls, two baselines split
//! [`Sandbox::run`]: spawning the init binary and letting it exit at once
//! (what the spawn alone costs), and running the rootfs's `/bin/true`
//! directly on the host (what the command alone costs). What is left is the
//! init's namespace and mount setup and teardown, and the parent's side
//! (temp dir, generated /etc files, socket, id maps).

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_sandbox::{upper_changes_since, Isolation, Network, RunSpec, Sandbox};

const HELPER: &str = env!("CARGO_BIN_EXE_kiln-sandbox-helper");

fn main() {
    let iters: usize = std::env::var("KILN_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
        .max(1);
    let modes: Vec<Isolation> = std::env::var("KILN_BENCH_MODES")
        .unwrap_or_else(|_| "userns,root".into())
        .split(',')
        .filter_map(|m| match m.trim() {
            "userns" => Some(Isolation::Userns),
            "root" => Some(Isolation::Root),
            _ => None,
        })
        .collect();
    let tmp = tempfile::Builder::new()
        .prefix("kiln-run-overhead-")
        .tempdir()
        .expect("create a temp dir");
    let busybox = find_busybox();
    // Without /etc/hosts, /etc/resolv.conf and /etc/hostname the step's
    // mount points for them are stubs, and cleaning them up removes the
    // copied-up /etc from the upper dir; with them, nothing is copied up.
    let bare = tmp.path().join("bare");
    image_rootfs(&bare, &busybox, false);
    let full = tmp.path().join("full");
    image_rootfs(&full, &busybox, true);
    let root = bare.clone();
    println!(
        "rootfs: static busybox from {} as /bin/busybox, /bin/true -> busybox; {iters} iterations per mode",
        busybox.display()
    );
    println!("load average at the start: {}", loadavg());

    let spawn = median_of(iters, || {
        let t = Instant::now();
        // Not the init marker: `maybe_run_init` returns and the helper
        // exits with its usage message.
        let st = Command::new(HELPER)
            .arg("bench-nothing")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn the helper");
        assert_eq!(st.code(), Some(2), "the helper's usage exit");
        t.elapsed()
    });
    let command = median_of(iters, || {
        let t = Instant::now();
        let st = Command::new(root.join("bin/true"))
            .env_clear()
            .stdin(Stdio::null())
            .status()
            .expect("run /bin/true on the host");
        assert!(st.success());
        t.elapsed()
    });
    println!(
        "baselines (median): spawn+exit of the init binary {}, host /bin/true (busybox) {}",
        ms(spawn),
        ms(command)
    );

    let sandbox = Sandbox::with_init(HELPER);
    for mode in modes {
        for (label, root) in [
            ("image without /etc/hosts, resolv.conf, hostname", &bare),
            ("image with them", &full),
        ] {
            // One untimed run: page cache, and a clear error when the mode
            // is not available here.
            let step = tmp.path().join("step");
            if let Err(e) = one_step(&sandbox, root, &step, mode) {
                println!("{mode}: not available here: {e}");
                break;
            }
            let mut samples = Samples::default();
            for _ in 0..iters {
                let s = one_step(&sandbox, root, &step, mode).expect("a step");
                samples.push(s);
            }
            samples.report(mode, label, spawn, command);
        }
    }
    println!("load average at the end: {}", loadavg());
}

/// Times of one step's phases.
#[derive(Clone, Copy)]
struct StepTimes {
    /// Creating the empty upper and work dirs.
    prepare: Duration,
    /// `Sandbox::run`: spawn, setup, command, namespace teardown.
    run: Duration,
    /// `upper_changes_since` on the upper dir.
    snapshot: Duration,
    /// Removing the upper and work dirs.
    teardown: Duration,
}

impl StepTimes {
    fn total(&self) -> Duration {
        self.prepare + self.run + self.snapshot + self.teardown
    }
}

fn one_step(
    sandbox: &Sandbox,
    root: &Path,
    step: &Path,
    isolation: Isolation,
) -> Result<StepTimes, String> {
    let (upper, work) = (step.join("upper"), step.join("work"));
    let t0 = Instant::now();
    for d in [&upper, &work] {
        fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    let spec = RunSpec {
        rootfs: root.to_path_buf(),
        upper: upper.clone(),
        work: work.clone(),
        argv: vec!["/bin/true".into()],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        supplementary_gids: vec![],
        hostname: "kilnbench".into(),
        network: Network::Default,
        mounts: vec![],
        isolation,
        security: kiln_sandbox::Security::Sandbox,
    };
    let t1 = Instant::now();
    let mut out = Vec::new();
    let r = sandbox.run(&spec, &mut out).map_err(|e| e.to_string())?;
    let t2 = Instant::now();
    if r.exit_code != 0 {
        return Err(format!(
            "/bin/true exited {}: {}",
            r.exit_code,
            String::from_utf8_lossy(&out)
        ));
    }
    let entries = upper_changes_since(&upper, root, &r.id_map).map_err(|e| e.to_string())?;
    let t3 = Instant::now();
    if !entries.is_empty() {
        return Err(format!("an empty step changed {} entries", entries.len()));
    }
    fs::remove_dir_all(step).map_err(|e| format!("remove {}: {e}", step.display()))?;
    let t4 = Instant::now();
    Ok(StepTimes {
        prepare: t1 - t0,
        run: t2 - t1,
        snapshot: t3 - t2,
        teardown: t4 - t3,
    })
}

#[derive(Default)]
struct Samples {
    steps: Vec<StepTimes>,
}

impl Samples {
    fn push(&mut self, s: StepTimes) {
        self.steps.push(s);
    }

    fn stat(&self, f: impl Fn(&StepTimes) -> Duration) -> (Duration, Duration) {
        let mut v: Vec<Duration> = self.steps.iter().map(f).collect();
        v.sort();
        (percentile(&v, 50), percentile(&v, 90))
    }

    fn report(&self, mode: Isolation, label: &str, spawn: Duration, command: Duration) {
        let n = self.steps.len();
        let (total, total90) = self.stat(StepTimes::total);
        let verdict = if total < Duration::from_millis(50) {
            "under"
        } else {
            "OVER"
        };
        println!(
            "{mode}, {label} ({n} steps): total median {} p90 {} ({verdict} the 50 ms target)",
            ms(total),
            ms(total90)
        );
        for (name, f) in [
            (
                "mkdir upper+work",
                (|s: &StepTimes| s.prepare) as fn(&StepTimes) -> Duration,
            ),
            ("Sandbox::run", |s: &StepTimes| s.run),
            ("upper_changes_since", |s: &StepTimes| s.snapshot),
            ("rm -r upper+work", |s: &StepTimes| s.teardown),
        ] {
            let (m, p) = self.stat(f);
            println!("  {name:<22} median {} p90 {}", ms(m), ms(p));
        }
        let (run, _) = self.stat(|s| s.run);
        println!(
            "  Sandbox::run split:    init spawn ~{}, command ~{}, namespaces+mounts+parent side ~{}",
            ms(spawn),
            ms(command),
            ms(run.saturating_sub(spawn + command))
        );
    }
}

/// The `p`th percentile (nearest rank) of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn median_of(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..n).map(|_| f()).collect();
    v.sort();
    percentile(&v, 50)
}

fn ms(d: Duration) -> String {
    format!("{:6.2} ms", d.as_secs_f64() * 1e3)
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

/// A small image: /bin/busybox with /bin/true and /bin/sh linked to it,
/// the top-level directories a real image has, and, with `etc_files`,
/// /etc/hosts, /etc/resolv.conf and /etc/hostname.
fn image_rootfs(root: &Path, busybox: &Path, etc_files: bool) {
    for d in ["bin", "etc", "proc", "dev", "sys", "tmp", "root"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755))
        .expect("chmod busybox");
    for applet in ["true", "sh"] {
        symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    if etc_files {
        for (name, text) in [
            ("hosts", "127.0.0.1 localhost\n"),
            ("resolv.conf", ""),
            ("hostname", "image\n"),
        ] {
            fs::write(root.join("etc").join(name), text).expect("write /etc");
        }
    }
}
