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
pub mod inplace;
pub mod output;
pub mod placement;
pub mod progress;
pub mod registry;
pub mod remote_cache;
pub mod run;
pub mod scratch;
pub mod secrets;
pub mod snapshot;
pub mod snapshots;
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
    #[error("{0}")]
    Message(String),
}
