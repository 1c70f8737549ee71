//! kiln's build stage: turns a parsed Dockerfile and a context into images.
//!
//! - [`graph`] resolves stages, `FROM <stage>`, `COPY --from` edges and the
//!   `--target`, dropping stages the target does not need.
//! - [`executor`] walks a stage's instructions: metadata instructions edit
//!   the image config, COPY/ADD change the stage's root filesystem and
//!   become layers.
//! - [`copy`] implements COPY/ADD file semantics (globs, destination rules,
//!   `--chown`, `--chmod`, `--exclude`, `--parents`) with [`users`]
//!   (passwd/group lookup), [`chmod`], [`unpack`] (ADD's archive
//!   extraction) and [`fetch`] (ADD from URLs).
//! - [`snapshot`] turns the paths a step changed into layer entries.
//! - [`snapshots`] keeps stage root filesystems between builds.
//! - [`placement`] has the filesystem spread stage roots and snapshots.
//! - [`scratch`] keeps the cache directory private, leases each build its
//!   scratch directory and sweeps those of dead builds.

pub mod cache;
pub mod chmod;
pub mod copy;
pub mod executor;
pub mod fetch;
pub mod graph;
mod layer_queue;
pub mod output;
pub mod placement;
pub mod progress;
pub mod registry;
pub mod remote_cache;
pub mod rootfs;
pub mod run;
pub mod scratch;
pub mod secrets;
pub mod snapshot;
pub mod unpack;
pub mod users;

pub use executor::{
    build, intermediate_compression, BuildOutput, BuildRequest, ImageResolver, LocalImages,
};

use std::path::PathBuf;

/// Everything that can stop a build, each naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse (the message names file:line:column).
    #[error("{0}")]
    Parse(#[from] kiln_dockerfile::ParseError),
    /// A problem found while building an instruction.
    #[error("{file}:{line}:{column}: {message}\n  {line:>4} | {source_line}")]
    At {
        file: String,
        line: usize,
        column: usize,
        message: String,
        source_line: String,
    },
    /// An instruction problem whose file is attached by the caller.
    #[error("line {line}, column {column}: {message}")]
    Instruction {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the Dockerfile has no stages")]
    NoStages,
    #[error("target stage `{target}` not found (stages with names: {})", known.join(", "))]
    UnknownTarget { target: String, known: Vec<String> },
    #[error("--output {spec}: {message}")]
    BadOutput { spec: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] kiln_image::Error),
    #[error(transparent)]
    Copy(#[from] copy::CopyError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    Sandbox(#[from] kiln_sandbox::SandboxError),
    /// A lock shared between build workers was poisoned by a panic.
    #[error("{0} lock poisoned")]
    Poisoned(&'static str),
    /// A build thread panicked.
    #[error("{0} panicked")]
    Panicked(&'static str),
    #[error("cannot start a layer writer: {0}")]
    LayerWriter(#[source] std::io::Error),
    #[error("cannot resolve image {reference}: kiln can read base images from oci-layout://DIR[:tag] and oci-archive:FILE here; registry pulls are not available in this build")]
    NoRegistry { reference: String },
    #[error("in-place isolation replaces the root filesystem's contents, and nothing shows kiln runs inside a container here; run it in a container, or force it (executor --force, or KILN_FORCE_IN_PLACE=1) if this machine is disposable")]
    InPlaceOutsideContainer,
    #[error("the stages' dependencies form a cycle")]
    Cycle,
    /// A path inside a root filesystem could not be resolved or written;
    /// `what` names the instruction or flag and the path it was given.
    #[error("{what}: {source}")]
    Root {
        what: String,
        #[source]
        source: kiln_image::root::RootError,
    },
    /// A path that must be a directory (WORKDIR, a mount target's parent) is not.
    #[error("{what}: /{at} exists and is not a directory")]
    NotADirectory { what: String, at: String },
    /// An in-place RUN mount would stand on a path the build must not touch.
    #[error("RUN --mount target {target}: {reason}")]
    MountTarget { target: String, reason: String },
    #[error("{instruction}: invalid duration {value}")]
    BadDuration {
        instruction: &'static str,
        value: String,
    },
    #[error(transparent)]
    Registry(Box<kiln_registry::Error>),
    /// A pull or push failed; `action` is "pulling" or "pushing".
    #[error("{action} {reference}: {source}")]
    Transfer {
        action: &'static str,
        reference: String,
        #[source]
        source: Box<kiln_registry::Error>,
    },
    #[error("{reference}: {source}")]
    BadDestination {
        reference: String,
        #[source]
        source: Box<kiln_registry::Error>,
    },
    #[error("--secret {spec}: {reason}")]
    BadSecret { spec: String, reason: String },
    #[error("secret file {}: {source}", path.display())]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--ssh {spec}: SSH_AUTH_SOCK is not set")]
    NoSshAgent { spec: String },
}
