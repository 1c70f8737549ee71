//! kiln's sandbox: runs a Dockerfile `RUN` step in fresh namespaces over an
//! overlayfs root, and reads the step's changes from the overlay upper dir.
//!
//! Isolation modes ([`Isolation`]):
//! - `Userns`: an unprivileged user namespace maps the caller to root (with
//!   the caller's `/etc/subuid`/`/etc/subgid` ranges through newuidmap and
//!   newgidmap when present, else the single id), plus private mount, PID,
//!   IPC and UTS namespaces; the root is overlayfs mounted with `userxattr`.
//!   In a user namespace `/sys` is the host's, read-only, when the kernel
//!   allows it (a fresh sysfs with `Network::None`); when it refuses, the step
//!   runs without `/sys`.
//! - `Root`: the same without a user namespace, for real root; `/sys` is a
//!   fresh read-only sysfs.
//! - `Auto`: [`probe`] decides (`Root` for real root; see the `probe`
//!   module for why).
//!
//! In both, the command is confined as under `docker build` unless the
//! step is [`Security::Insecure`]: Docker's default capabilities, a seccomp
//! filter, masked `/proc` and `/sys` paths (the `confine` module), and no
//! usable device node but kiln's own `/dev` nodes (the `mounts` module).
//!
//! In both, the step sees a fresh `/proc`, a minimal `/dev` (null, zero,
//! full, random, urandom and tty bind-mounted from the host, pts, shm),
//! generated `/etc/hosts`, `/etc/resolv.conf` (the host's) and
//! `/etc/hostname` bind-mounted over the image's, and the `RUN --mount`
//! bind and tmpfs mounts. Mount points that
//! had to be created are removed from the upper dir afterwards, so none of
//! this reaches a layer. The step's root is the overlay of the (never
//! modified) stage rootfs and the upper dir; afterwards [`upper_changes`]
//! lists the changes as layer entries and [`merge_upper`] applies them to
//! the rootfs for the next step.
//!
//! Where neither works (no user namespaces, no privileges), the in-place
//! functions ([`scan`], [`run_direct`], [`changes`], [`wipe_root`]) run
//! steps directly in kiln's own container root and find their changes by
//! a parallel stat walk; see the `inplace` module.
//!
//! The binary that uses this crate must call [`maybe_run_init`] first thing
//! in `main()`: each step runs in a fresh copy of the binary (see the `init`
//! module for why).

// The sandbox is the one place that needs unsafe calls (fork, exec, signal
// dispositions, raw syscalls for namespaces and seccomp).
#![allow(unsafe_code)]

mod confine;
mod error;
mod idmap;
mod init;
mod inplace;
mod mounts;
mod probe;
mod run;
mod snapshot;
mod spec;

use std::io::Write;

pub use confine::{DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS};
pub use error::{Result, SandboxError};
pub use idmap::{IdMap, IdRange, OVERFLOW_ID};
pub use init::INIT_MARKER;
pub use inplace::{
    changes, container_evidence, parse_mountinfo, racy_window_ns, run_direct, scan, wipe_root,
    Baseline, DirectResult, DirectSpec, FileKind, IgnoreSet, MountInfoEntry, Record,
    IN_PLACE_MARKER, RACY_WINDOW_NS,
};
pub use run::{Sandbox, TAIL_LINES};
pub use snapshot::{merge_upper, merge_upper_discarding, upper_changes, upper_changes_since};
pub use spec::{Isolation, Mount, MountKind, Network, RunResult, RunSpec, SecretData, Security};

/// Takes over the process when it was started as a sandbox init
/// (`argv[1] == INIT_MARKER`), and never returns then. Otherwise returns at
/// once. Call it first thing in `main()`, before any thread is started.
pub fn maybe_run_init() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(std::ffi::OsStr::new(INIT_MARKER)) {
        return;
    }
    let mode = args.next().unwrap_or_default();
    std::process::exit(init::main(&mode));
}

/// Runs one step with the running executable as init ([`Sandbox::new`]).
///
/// The step's output (stdout and stderr, interleaved) is streamed to
/// `output`. A non-zero exit is not an error: check
/// [`RunResult::exit_code`]. Errors mean the command could not be run.
/// `Isolation::Auto` probes first: probe once per build with [`probe`] and
/// pass the result to avoid a probe per step.
pub fn run(spec: &RunSpec, output: &mut dyn Write) -> Result<RunResult> {
    Sandbox::new().run(spec, output)
}

/// Which isolation `Auto` means here, and why ([`Sandbox::probe`]).
pub fn probe() -> Result<(Isolation, String)> {
    Sandbox::new().probe()
}
