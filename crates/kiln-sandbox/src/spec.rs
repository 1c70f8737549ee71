//! What a RUN step asks for ([`RunSpec`]) and what it returns ([`RunResult`]).
//!
//! The spec is plain data: it is also what the parent sends to the sandbox init
//! process (as JSON over a socket), so every field derives serde.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::idmap::IdMap;

/// How the step is isolated from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    /// Probe `Userns`, then `Root` (see [`crate::probe`]).
    Auto,
    /// An unprivileged user namespace mapping the caller to root.
    Userns,
    /// Real root: the same namespaces without a user namespace.
    Root,
    /// Kaniko-style: no namespaces at all; the step runs in kiln's own
    /// container root (see the `inplace` module), which the build replaces
    /// with the stage's files. Only inside a container.
    InPlace,
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Auto => "auto",
            Isolation::Userns => "userns",
            Isolation::Root => "root",
            Isolation::InPlace => "in-place",
        })
    }
}

/// `RUN --network=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network (BuildKit's default for RUN).
    Default,
    /// A new network namespace with only `lo`, up.
    None,
    /// The host network (same as `Default` for this sandbox).
    Host,
}

/// `RUN --security=…`: how much the command is confined (see the
/// `confine` module).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Security {
    /// Docker's default capabilities, the default seccomp profile, masked
    /// `/proc` and `/sys` paths (BuildKit's `sandbox`, the default).
    #[default]
    Sandbox,
    /// Every capability, no seccomp filter, nothing masked (BuildKit's
    /// `insecure`; the build must be given the `security.insecure`
    /// entitlement).
    Insecure,
}

/// A mount added to the step's root (`RUN --mount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container (relative paths are taken from `cwd`).
    pub target: String,
    pub kind: MountKind,
}

/// What is mounted at a [`Mount`]'s target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A host path (file or directory) bind-mounted at the target.
    Bind { source: PathBuf, readonly: bool },
    /// An empty tmpfs (mode 1777), optionally limited to `size` bytes.
    Tmpfs { size: Option<u64> },
    /// A file holding `data` (a `RUN --mount=type=secret` value), with
    /// this mode and owner, read-only. It only ever exists on a tmpfs of
    /// the step's own: the value travels to the sandbox init over its
    /// socket and never touches the host's disks.
    Secret {
        data: SecretData,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// A secret's bytes: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretData(pub Vec<u8>);

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretData({} bytes)", self.0.len())
    }
}

/// One RUN step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The overlay's lower dir: the stage rootfs. Never modified by the run.
    pub rootfs: PathBuf,
    /// Empty dir that receives the step's changes (overlay upper dir).
    pub upper: PathBuf,
    /// Empty dir on the same filesystem as `upper` (overlay work dir).
    pub work: PathBuf,
    /// The command; `argv[0]` without a `/` is looked up in `PATH` from `env`.
    pub argv: Vec<String>,
    /// The complete environment (`KEY=value`), nothing else is inherited.
    pub env: Vec<String>,
    /// Working directory inside the container; must exist.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub supplementary_gids: Vec<u32>,
    pub hostname: String,
    pub network: Network,
    pub mounts: Vec<Mount>,
    pub isolation: Isolation,
    /// How much the command is confined.
    #[serde(default)]
    pub security: Security,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// The command's exit code; `128 + signal` when it was killed by a signal.
    pub exit_code: i32,
    /// The last lines (at most [`crate::TAIL_LINES`]) of the step's output.
    pub tail: String,
    /// The isolation mode that was used (never `Auto`).
    pub isolation: Isolation,
    /// How host ids map to container ids in this run: pass it to
    /// [`crate::upper_changes`] so layer entries carry container ids.
    pub id_map: IdMap,
}
