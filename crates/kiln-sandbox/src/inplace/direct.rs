//! Running a step's command directly in the current root ([`run_direct`]):
//! no namespaces, no mounts, only a fresh environment, the working
//! directory and the step's user.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

use nix::unistd::{Gid, Uid};

use crate::error::{IoContext, Result, SandboxError};

/// One command to run in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectSpec {
    /// The command; `argv[0]` without a `/` is looked up in `PATH` from `env`.
    pub argv: Vec<String>,
    /// The complete environment (`KEY=value`), nothing else is inherited.
    /// The command sees it sorted by name; of two equal names the later
    /// one wins.
    pub env: Vec<String>,
    /// Working directory (absolute); must exist.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub supplementary_gids: Vec<u32>,
}

/// How a direct run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResult {
    /// The command's exit code; `128 + signal` when it was killed by a signal.
    pub exit_code: i32,
    /// The last lines (at most [`crate::TAIL_LINES`]) of its output.
    pub tail: String,
}

/// Runs `spec.argv` in the current root with exactly `spec.env`, in
/// `spec.cwd`, as `spec.uid`/`spec.gid` with `spec.supplementary_gids`
/// (credentials are changed only when they differ from kiln's own, which
/// needs root), stdin from `/dev/null`, stdout and stderr interleaved into
/// `output`.
///
/// A non-zero exit is not an error: check [`DirectResult::exit_code`].
/// Errors mean the command could not be run (bad spec, command not found,
/// credentials refused).
pub fn run_direct(spec: &DirectSpec, output: &mut dyn Write) -> Result<DirectResult> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| SandboxError::InvalidSpec("argv is empty".into()))?;
    if !spec.cwd.starts_with('/') {
        return Err(SandboxError::InvalidSpec(format!(
            "cwd {:?} is not absolute",
            spec.cwd
        )));
    }
    let mut env = Vec::with_capacity(spec.env.len());
    for kv in &spec.env {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            SandboxError::InvalidSpec(format!("environment entry {kv:?} has no '='"))
        })?;
        env.push((k, v));
    }

    let (reader, writer) = std::io::pipe().ctx(|| "create the output pipe".into())?;
    let writer2 = writer.try_clone().ctx(|| "dup the output pipe".into())?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2);
    if needs_credentials(spec) {
        let groups: Vec<Gid> = spec
            .supplementary_gids
            .iter()
            .map(|g| Gid::from_raw(*g))
            .collect();
        let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
        // SAFETY: the closure runs in the forked child before exec and only
        // makes the async-signal-safe setgroups/setresgid/setresuid calls on
        // data prepared before the fork (no allocation, no locks). It is
        // needed because std cannot set supplementary groups, and its own
        // uid/gid switch would run before any later setgroups could.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setresgid(gid, gid, gid)?;
                nix::unistd::setresuid(uid, uid, uid)?;
                Ok(())
            });
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| SandboxError::Setup(format!("run {program:?} in {}: {e}", spec.cwd)))?;
    // The Command holds the pipe's write ends: without closing them the
    // output never reaches end-of-file.
    drop(cmd);

    let mut reader = reader;
    let streamed = crate::run::stream_output(&mut reader, output);
    if streamed.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().ctx(|| format!("wait for {program:?}"));
    let tail = streamed?;
    let status = status?;
    let exit_code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(128);
    Ok(DirectResult { exit_code, tail })
}

/// Whether the step's user, group or supplementary groups differ from
/// kiln's own.
fn needs_credentials(spec: &DirectSpec) -> bool {
    if spec.uid != rustix::process::geteuid().as_raw()
        || spec.gid != rustix::process::getegid().as_raw()
    {
        return true;
    }
    let mut want: Vec<u32> = spec.supplementary_gids.clone();
    want.sort_unstable();
    want.dedup();
    let mut have: Vec<u32> = nix::unistd::getgroups()
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    have.sort_unstable();
    have.dedup();
    want != have
}
