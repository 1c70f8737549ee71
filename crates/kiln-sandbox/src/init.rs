//! The sandbox init: the code that runs in the process kiln spawns for a step.
//!
//! Process layout (why: `unshare(CLONE_NEWUSER)` and `fork()` are only safe in
//! a single-threaded process, and kiln's own process runs worker threads, so
//! the parent never forks by hand; it spawns a fresh copy of an executable
//! with [`std::process::Command`], whose `main()` calls
//! [`maybe_run_init`](crate::maybe_run_init) first thing, before any thread
//! exists):
//!
//! 1. **stage 1** (the spawned process): reads the request from its stdin
//!    socket, resolves every mount point against the lower dir, unshares the
//!    user namespace (userns mode; the parent then installs the id maps, as
//!    newuidmap must run outside) and the PID, IPC, UTS and (for
//!    `Network::None`) network namespaces, forks PID 1 and waits for it. It
//!    stays in the original mount namespace, so afterwards it removes the
//!    mount stubs from the upper dir, with the namespace's credentials.
//! 2. **PID 1**: unshares the mount namespace, mounts the overlay over the
//!    lower dir's own path (the mount is private to this namespace), then
//!    /proc, /dev, /sys, the /etc files and the RUN mounts inside it, sets
//!    the hostname, brings `lo` up, pivots into the new root and
//!    forks the command. It reaps every child; when the command exits it
//!    kills whatever is left in the PID namespace and exits with the
//!    command's code.
//!    With `--security=sandbox` (the default) it also masks Docker's
//!    `/proc` and `/sys` paths (see the `confine` module).
//! 3. **the command**: sets umask 022 and the default SIGPIPE disposition;
//!    with `--security=sandbox` drops to Docker's default capabilities and
//!    installs the seccomp filter; then sets groups, gid, uid and cwd, and
//!    execs `argv` with exactly `env`.
//!
//! Setup errors travel to the parent as `error <message>` lines on the
//! socket; the command's output goes to stdout/stderr, a pipe the parent
//! streams from.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::sys::stat::{umask, Mode};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{
    chdir, execve, fork, pivot_root, setgroups, sethostname, setresgid, setresuid, ForkResult, Gid,
    Pid, Uid,
};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SandboxError};
use crate::idmap::IdMap;
use crate::mounts::{self, EtcFiles, Plan};
use crate::spec::{Isolation, Network, RunSpec, Security};

/// `argv[1]` that makes [`crate::maybe_run_init`] take over the process.
pub const INIT_MARKER: &str = "__kiln-sandbox-init";

/// Exit code of the init when setup failed (the error is on the socket).
pub(crate) const SETUP_FAILED: i32 = 125;

/// What the parent sends to stage 1.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitRequest {
    pub spec: RunSpec,
    /// Resolved (never `Auto`).
    pub isolation: Isolation,
    pub id_map: IdMap,
    pub hosts: PathBuf,
    pub resolv: PathBuf,
    pub hostname: PathBuf,
}

fn setup(what: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Setup(format!("{what}: {e}"))
}

/// Entry point of the init; returns the process exit code.
pub(crate) fn main(mode: &OsStr) -> i32 {
    match mode.to_str() {
        Some("run") => run_main(),
        Some("probe") => match crate::probe::userns_probe() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
        _ => {
            eprintln!("kiln sandbox init: unknown mode {mode:?}");
            2
        }
    }
}

fn run_main() -> i32 {
    // The socket arrives as stdin: keep a close-on-exec copy and put
    // /dev/null in its place so no process started later inherits it.
    let sock = match take_socket() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln sandbox init: {e}");
            return SETUP_FAILED;
        }
    };
    let mut writer = match sock.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("kiln sandbox init: {e}");
            return SETUP_FAILED;
        }
    };
    let mut reader = BufReader::new(sock);
    match stage1(&mut reader, &mut writer) {
        Ok(code) => code,
        Err(e) => {
            send_error(&mut writer, &e);
            SETUP_FAILED
        }
    }
}

fn take_socket() -> Result<File> {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| setup("duplicate the init socket", e))?;
    let null = File::open("/dev/null").map_err(|e| setup("open /dev/null", e))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| setup("replace stdin", e))?;
    Ok(File::from(fd))
}

pub(crate) fn send_error(w: &mut File, e: &SandboxError) {
    let msg = e.to_string().replace('\n', " ");
    let _ = writeln!(w, "error {msg}");
}

fn read_line(r: &mut BufReader<File>) -> Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| setup("read from parent", e))?;
    Ok(line.trim_end().to_string())
}

fn stage1(reader: &mut BufReader<File>, writer: &mut File) -> Result<i32> {
    let line = read_line(reader)?;
    let req: InitRequest = serde_json::from_str(&line)
        .map_err(|e| SandboxError::Protocol(format!("bad request: {e}")))?;
    set_pdeathsig(Signal::SIGKILL).map_err(|e| setup("prctl(PDEATHSIG)", e))?;
    let plan = mounts::plan(
        &req.spec,
        &EtcFiles {
            hosts: &req.hosts,
            resolv: &req.resolv,
            hostname: &req.hostname,
        },
    )?;

    if req.isolation == Isolation::Userns {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| setup("unshare(CLONE_NEWUSER)", e))?;
        writeln!(writer, "userns").map_err(|e| setup("write to parent", e))?;
        let reply = read_line(reader)?;
        if reply != "mapped" {
            return Err(SandboxError::Protocol(format!(
                "expected 'mapped', got {reply:?}"
            )));
        }
    }
    let mut flags = CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    if req.spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| setup("unshare(PID, IPC, UTS, NET namespaces)", e))?;

    // SAFETY: this process is single-threaded: it was exec'd for this
    // purpose and `maybe_run_init` runs before anything can start a thread.
    match unsafe { fork() }.map_err(|e| setup("fork PID 1", e))? {
        ForkResult::Child => {
            let code = match pid1(&req, &plan, writer) {
                Ok(c) => c,
                Err(e) => {
                    send_error(writer, &e);
                    SETUP_FAILED
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            let code = wait_for(child)?;
            mounts::cleanup_stubs(&plan, &req.spec.upper, &req.spec.rootfs)?;
            Ok(code)
        }
    }
}

/// Exit code of a wait status, shells' `128 + signal` for signals.
fn code_of(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn wait_for(child: Pid) -> Result<i32> {
    loop {
        match waitpid(child, None) {
            Ok(s) => {
                if let Some(c) = code_of(s) {
                    return Ok(c);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(setup("wait for PID 1", e)),
        }
    }
}

fn pid1(req: &InitRequest, plan: &Plan, writer: &mut File) -> Result<i32> {
    set_pdeathsig(Signal::SIGKILL).map_err(|e| setup("prctl(PDEATHSIG)", e))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| setup("unshare(CLONE_NEWNS)", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| setup("make / private", e))?;
    umask(Mode::empty());
    // The overlay goes over the lower dir's own path: the mount is private
    // to this namespace, so no directory has to be made (and removed) for
    // it, and runs sharing a lower dir do not meet.
    let merged = &req.spec.rootfs;
    mounts::mount_overlay(&req.spec, req.isolation, merged)?;
    let notes = mounts::mount_all(plan, merged, req.isolation, req.spec.network)?;
    for n in notes {
        tracing::debug!("{n}");
    }
    // Compiled here so a failure is a setup error, not the command's.
    let filters = match req.spec.security {
        Security::Sandbox => {
            mounts::mask_paths(plan, merged)?;
            Some(crate::confine::filters()?)
        }
        Security::Insecure => None,
    };
    sethostname(&req.spec.hostname).map_err(|e| setup("sethostname", e))?;
    if req.spec.network == Network::None {
        loopback_up()?;
    }
    chdir(merged).map_err(|e| setup("chdir to the new root", e))?;
    pivot_root(".", ".").map_err(|e| setup("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| setup("detach the old root", e))?;
    chdir("/").map_err(|e| setup("chdir /", e))?;

    let exe = find_executable(&req.spec)?;
    let argv = cstrings(req.spec.argv.iter().map(|s| s.as_bytes()))?;
    let env = cstrings(req.spec.env.iter().map(|s| s.as_bytes()))?;

    // SAFETY: PID 1 is single-threaded (forked from the single-threaded stage 1).
    match unsafe { fork() }.map_err(|e| setup("fork the command", e))? {
        ForkResult::Child => {
            let e = exec_command(req, filters.as_deref(), &exe, &argv, &env);
            send_error(writer, &e);
            std::process::exit(127);
        }
        ForkResult::Parent { child } => Ok(reap(child)),
    }
}

/// Reaps children until the command exits, then kills the rest of the PID
/// namespace and reaps it too.
fn reap(command: Pid) -> i32 {
    let mut code = SETUP_FAILED;
    loop {
        match waitpid(None, None) {
            Ok(s) => {
                if s.pid() == Some(command) {
                    if let Some(c) = code_of(s) {
                        code = c;
                        break;
                    }
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    // From PID 1, pid -1 means every other process of the namespace.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    while let Ok(_) | Err(Errno::EINTR) = waitpid(None, None) {}
    code
}

fn cstrings<'a>(items: impl Iterator<Item = &'a [u8]>) -> Result<Vec<CString>> {
    items
        .map(|b| {
            CString::new(b).map_err(|_| SandboxError::InvalidSpec("NUL byte in argv or env".into()))
        })
        .collect()
}

/// `argv[0]` as given when it has a `/`, else the first executable match in
/// the `PATH` of the step's environment (not kiln's).
fn find_executable(spec: &RunSpec) -> Result<CString> {
    let arg0 = spec
        .argv
        .first()
        .ok_or_else(|| SandboxError::InvalidSpec("empty argv".into()))?;
    let found = if arg0.contains('/') {
        Some(PathBuf::from(arg0))
    } else {
        let path = spec
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(arg0))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    };
    let found = found.ok_or_else(|| {
        SandboxError::Setup(format!("exec {arg0}: executable file not found in $PATH"))
    })?;
    CString::new(found.as_os_str().as_bytes())
        .map_err(|_| SandboxError::InvalidSpec("NUL byte in argv[0]".into()))
}

/// Becomes the command; returns only on failure.
fn exec_command(
    req: &InitRequest,
    filters: Option<&[seccompiler::BpfProgram]>,
    exe: &CString,
    argv: &[CString],
    env: &[CString],
) -> SandboxError {
    let spec = &req.spec;
    let map = &req.id_map;
    umask(Mode::from_bits_truncate(0o022));
    // SAFETY: restoring the default disposition is always sound; the init
    // inherited "ignore" from the Rust runtime and exec would pass it on.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        return setup("reset SIGPIPE", e);
    }
    if !map.maps_uid(spec.uid) {
        return SandboxError::Setup(format!(
            "uid {} is not mapped in the user namespace (no /etc/subuid range for the calling user?)",
            spec.uid
        ));
    }
    if let Some(g) = std::iter::once(&spec.gid)
        .chain(&spec.supplementary_gids)
        .find(|g| !map.maps_gid(**g))
    {
        return SandboxError::Setup(format!(
            "gid {g} is not mapped in the user namespace (no /etc/subgid range for the calling user?)"
        ));
    }
    // Capabilities and seccomp (see the confine module); a user other
    // than root then loses its effective and permitted sets on setresuid.
    if let Some(filters) = filters {
        if let Err(e) = crate::confine::confine(filters) {
            return e;
        }
    }
    let groups: Vec<Gid> = spec
        .supplementary_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if map.setgroups {
        if let Err(e) = setgroups(&groups) {
            return setup("setgroups", e);
        }
    } else if spec.supplementary_gids.iter().any(|g| *g != spec.gid) {
        return SandboxError::Setup(
            "supplementary groups cannot be set: the user namespace has a single-id map (setgroups is denied)".into(),
        );
    }
    let gid = Gid::from_raw(spec.gid);
    if let Err(e) = setresgid(gid, gid, gid) {
        return setup(&format!("setresgid({})", spec.gid), e);
    }
    let uid = Uid::from_raw(spec.uid);
    if let Err(e) = setresuid(uid, uid, uid) {
        return setup(&format!("setresuid({})", spec.uid), e);
    }
    if let Err(e) = chdir(spec.cwd.as_str()) {
        return setup(&format!("chdir to working directory {}", spec.cwd), e);
    }
    match execve(exe, argv, env) {
        Err(e) => setup(&format!("exec {}", exe.to_string_lossy()), e),
        Ok(never) => match never {},
    }
}

/// Sets `IFF_UP` on `lo` in the (new) network namespace.
///
/// Hand-written with one ioctl because a netlink client would be a large
/// dependency for a single flag.
fn loopback_up() -> Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| setup("socket for lo", e))?;
    // SAFETY: `ifreq` is a plain C struct for which all-zero bytes are valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the fd is a valid socket and `req` a valid, NUL-terminated
    // `ifreq` that outlives the calls; both ioctls read/write only `req`.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(setup("SIOCGIFFLAGS lo", std::io::Error::last_os_error()));
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(setup("SIOCSIFFLAGS lo", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
