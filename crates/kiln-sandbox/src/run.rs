//! The parent side of a run: validating the spec, choosing the isolation,
//! writing the generated /etc files, spawning
//! the init (see [`crate::init`] for why it is a separate process), installing
//! the user-namespace id maps, streaming the output and collecting the result.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::fcntl::OFlag;

use crate::error::{IoContext, Result, SandboxError};
use crate::idmap::{self, IdMap, MapPlan};
use crate::init::{InitRequest, INIT_MARKER};
use crate::spec::{Isolation, RunResult, RunSpec};

/// How many lines of output [`RunResult::tail`] keeps.
pub const TAIL_LINES: usize = 20;
/// Bytes of output kept to cut the tail from.
const TAIL_BYTES: usize = 16 * 1024;

/// Runs steps using a given init executable.
///
/// [`Sandbox::new`] uses `/proc/self/exe`: the calling binary must call
/// [`crate::maybe_run_init`] first thing in `main()`.
#[derive(Debug, Clone)]
pub struct Sandbox {
    init: PathBuf,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// The running executable plays the init.
    pub fn new() -> Self {
        Sandbox {
            init: PathBuf::from("/proc/self/exe"),
        }
    }

    /// Another executable (whose `main()` calls [`crate::maybe_run_init`]) plays the init.
    pub fn with_init(init: impl Into<PathBuf>) -> Self {
        Sandbox { init: init.into() }
    }

    /// Picks the isolation `Auto` stands for: `Root` when kiln runs as real
    /// root with `CAP_SYS_ADMIN` (see [`crate::probe::real_root`]), else
    /// `Userns` when a user namespace with overlayfs works here, else `Root`
    /// when running as root at all. Returns the choice and a sentence
    /// saying why, for the build log.
    pub fn probe(&self) -> Result<(Isolation, String)> {
        if crate::probe::real_root() {
            return Ok((
                Isolation::Root,
                "running as root with CAP_SYS_ADMIN: full-fidelity ownership and file capabilities; \
                 steps keep Docker's default capabilities under a seccomp filter"
                    .into(),
            ));
        }
        let out = Command::new(&self.init)
            .args([INIT_MARKER, "probe"])
            .env_clear()
            // The probe's scratch dir goes where kiln's does (kiln's image
            // has no /tmp; its TMPDIR is /kiln/tmp).
            .env("TMPDIR", std::env::temp_dir())
            .stdin(Stdio::null())
            .output()
            .ctx(|| format!("spawn sandbox init {}", self.init.display()))?;
        if out.status.success() {
            return Ok((
                Isolation::Userns,
                "user namespaces, overlayfs with userxattr and a PID namespace are available"
                    .into(),
            ));
        }
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // Neither user namespaces nor CAP_SYS_ADMIN: what is left is
        // running steps in place, which replaces this root filesystem's
        // contents, so only where that root is a container's.
        if let Some(evidence) = crate::inplace::container_evidence() {
            return Ok((
                Isolation::InPlace,
                format!(
                    "user namespaces are not usable ({why}) and there is no CAP_SYS_ADMIN; inside a container ({evidence}), so steps run in place, Kaniko-style"
                ),
            ));
        }
        Err(SandboxError::Unavailable(format!(
            "user namespaces are not usable ({why}), kiln has no CAP_SYS_ADMIN, and nothing shows it runs inside a container, where in-place builds (which overwrite the root filesystem) would be safe"
        )))
    }

    /// Runs one step; see [`crate::run`].
    pub fn run(&self, spec: &RunSpec, output: &mut dyn Write) -> Result<RunResult> {
        validate(spec)?;
        let isolation = match spec.isolation {
            Isolation::Auto => self.probe()?.0,
            other => other,
        };
        if isolation == Isolation::InPlace {
            return Err(SandboxError::Unavailable(
                "in-place steps run through run_direct, not the namespace sandbox".into(),
            ));
        }
        let map_plan = match isolation {
            Isolation::Root => {
                if !rustix::process::geteuid().is_root() {
                    return Err(SandboxError::Unavailable(
                        "isolation 'root' needs kiln to run as root".into(),
                    ));
                }
                None
            }
            _ => Some(idmap::plan_for_caller()),
        };
        let id_map = map_plan
            .as_ref()
            .map(|p| p.map().clone())
            .unwrap_or_else(IdMap::identity);

        // Kept until the init is gone: it bind-mounts them.
        let etc = EtcTemp::write(spec)?;
        let req = InitRequest {
            spec: spec.clone(),
            isolation,
            id_map: id_map.clone(),
            hosts: etc.hosts.path().to_path_buf(),
            resolv: etc.resolv.path().to_path_buf(),
            hostname: etc.hostname.path().to_path_buf(),
        };

        let (parent_sock, child_sock) = UnixStream::pair().ctx(|| "socketpair".into())?;
        let (out_r, out_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx(|| "create the output pipe".into())?;
        let out_w2 = out_w.try_clone().ctx(|| "dup the output pipe".into())?;
        let mut cmd = Command::new(&self.init);
        cmd.args([INIT_MARKER, "run"])
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(child_sock)))
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(out_w2));
        let mut child = cmd
            .spawn()
            .ctx(|| format!("spawn sandbox init {}", self.init.display()))?;
        // The Command holds our copies of the pipe's write end: close them,
        // or the output never reaches end-of-file.
        drop(cmd);

        let result = drive(
            &child,
            parent_sock,
            File::from(out_r),
            &req,
            map_plan.as_ref(),
            output,
        );
        if result.is_err() {
            let _ = child.kill();
        }
        let status = child.wait().ctx(|| "wait for the sandbox init".into());
        allow_cleanup(&spec.work);
        let (tail, errors) = result?;
        let status = status?;
        if let Some(e) = errors.into_iter().next() {
            return Err(SandboxError::Setup(e));
        }
        let exit_code = status.code().ok_or_else(|| {
            SandboxError::Setup(format!("the sandbox init ended abnormally ({status})"))
        })?;
        Ok(RunResult {
            exit_code,
            tail,
            isolation,
            id_map,
        })
    }
}

/// Talks to the init: sends the request, installs the id maps when asked,
/// streams the output, then collects `error …` lines. Returns the tail and
/// the errors.
fn drive(
    child: &Child,
    sock: UnixStream,
    mut out: File,
    req: &InitRequest,
    map_plan: Option<&MapPlan>,
    output: &mut dyn Write,
) -> Result<(String, Vec<String>)> {
    let mut errors = Vec::new();
    let mut writer = sock.try_clone().ctx(|| "dup the init socket".into())?;
    let mut reader = BufReader::new(sock);
    let json = serde_json::to_string(req)
        .map_err(|e| SandboxError::Protocol(format!("encode request: {e}")))?;
    // A write error means the init died: its reason is on the socket.
    let sent = writeln!(writer, "{json}").is_ok();
    if sent && req.isolation == Isolation::Userns {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .ctx(|| "read from the sandbox init".into())?;
        match line.trim_end() {
            "userns" => {
                let plan = map_plan.ok_or_else(|| {
                    SandboxError::Protocol("user namespace without an id map".into())
                })?;
                idmap::install(plan, child.id())?;
                writeln!(writer, "mapped").ctx(|| "write to the sandbox init".into())?;
            }
            other => {
                if let Some(e) = other.strip_prefix("error ") {
                    errors.push(e.to_string());
                } else if !other.is_empty() {
                    return Err(SandboxError::Protocol(format!("unexpected {other:?}")));
                }
            }
        }
    }
    let tail = stream_output(&mut out, output)?;
    for line in reader.lines() {
        let line = line.ctx(|| "read from the sandbox init".into())?;
        if let Some(e) = line.strip_prefix("error ") {
            errors.push(e.to_string());
        }
    }
    Ok((tail, errors))
}

fn validate(spec: &RunSpec) -> Result<()> {
    if spec.argv.is_empty() {
        return Err(SandboxError::InvalidSpec("argv is empty".into()));
    }
    if !spec.cwd.starts_with('/') {
        return Err(SandboxError::InvalidSpec(format!(
            "cwd {:?} is not absolute",
            spec.cwd
        )));
    }
    for (what, p) in [
        ("rootfs", &spec.rootfs),
        ("upper", &spec.upper),
        ("work", &spec.work),
    ] {
        if !p.is_absolute() {
            return Err(SandboxError::InvalidSpec(format!(
                "{what} {} is not absolute",
                p.display()
            )));
        }
        // overlayfs splits its options on ',' and lowerdir on ':'.
        let s = p.to_string_lossy();
        if s.contains(',') || s.contains(':') {
            return Err(SandboxError::InvalidSpec(format!(
                "{what} {} contains ',' or ':' which overlayfs options cannot carry",
                p.display()
            )));
        }
        if !p.is_dir() {
            return Err(SandboxError::InvalidSpec(format!(
                "{what} {} is not a directory",
                p.display()
            )));
        }
    }
    Ok(())
}

/// The generated /etc files of one run, as temp files that are deleted
/// when this is dropped.
///
/// Plain files rather than a per-run temp dir: on disks with online
/// discard removing a directory costs milliseconds (a synchronous discard
/// of its block), unlinking a small file does not. (The overlay needs no
/// directory of its own either: the init mounts it over the lower dir's
/// path, in its private mount namespace.)
struct EtcTemp {
    hosts: tempfile::NamedTempFile,
    resolv: tempfile::NamedTempFile,
    hostname: tempfile::NamedTempFile,
}

impl EtcTemp {
    fn write(spec: &RunSpec) -> Result<EtcTemp> {
        let hosts = format!(
            "127.0.0.1\tlocalhost {h}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            h = spec.hostname
        );
        let resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
        let hostname = format!("{}\n", spec.hostname);
        // Beside the step's upper dir (the build's scratch space), not in
        // $TMPDIR: a build killed meanwhile leaves them where the next
        // build's sweep of dead scratch removes them.
        let dir = spec.upper.parent().unwrap_or(Path::new("/tmp"));
        Ok(EtcTemp {
            hosts: etc_file(dir, "hosts", hosts.as_bytes())?,
            resolv: etc_file(dir, "resolv.conf", &resolv)?,
            hostname: etc_file(dir, "hostname", hostname.as_bytes())?,
        })
    }
}

/// A temp file (mode 0644) in `dir` holding `content`.
fn etc_file(dir: &Path, name: &str, content: &[u8]) -> Result<tempfile::NamedTempFile> {
    let mut f = tempfile::Builder::new()
        .prefix(&format!("kiln-sandbox-{name}-"))
        .tempfile_in(dir)
        .ctx(|| format!("create a temp file for /etc/{name}"))?;
    f.write_all(content)
        .ctx(|| format!("write the temp file for /etc/{name}"))?;
    // Temp files are created 0600; the step's user must be able to read it.
    fs::set_permissions(f.path(), fs::Permissions::from_mode(0o644))
        .ctx(|| format!("chmod {}", f.path().display()))?;
    Ok(f)
}

/// overlayfs leaves `work/work` with mode 000; make it removable by the caller.
fn allow_cleanup(work: &Path) {
    if let Ok(rd) = fs::read_dir(work) {
        for e in rd.flatten() {
            let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o700));
        }
    }
}

/// Keeps the last [`TAIL_LINES`] lines of what passed through.
#[derive(Default)]
pub(crate) struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > 2 * TAIL_BYTES {
            let cut = self.buf.len() - TAIL_BYTES;
            self.buf.drain(..cut);
        }
    }

    pub(crate) fn lines(&self) -> String {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end_matches('\n');
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(TAIL_LINES);
        lines.get(start..).unwrap_or_default().join("\n")
    }
}

/// Copies a step's output to `output` until end-of-file and returns its
/// last lines ([`TAIL_LINES`]); shared by the namespace sandbox and
/// in-place runs.
pub(crate) fn stream_output(from: &mut dyn Read, output: &mut dyn Write) -> Result<String> {
    let mut tail = Tail::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(SandboxError::Io {
                    context: "read the step output".into(),
                    source: e,
                })
            }
        };
        let chunk = buf.get(..n).unwrap_or_default();
        tail.push(chunk);
        output
            .write_all(chunk)
            .ctx(|| "write the step output".into())?;
    }
    let _ = output.flush();
    Ok(tail.lines())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        let mut t = Tail::default();
        for i in 0..100 {
            t.push(format!("line {i}\n").as_bytes());
        }
        let want: Vec<String> = (80..100).map(|i| format!("line {i}")).collect();
        assert_eq!(t.lines(), want.join("\n"));
        let mut t = Tail::default();
        t.push(b"a\nb");
        assert_eq!(t.lines(), "a\nb");
    }
}
