//! Where stage root filesystems live: the one seam between the executor
//! and the two ways kiln keeps a stage's files.
//!
//! - [`private::PrivateRoots`] (userns and root isolation, and builds
//!   without RUN): every stage has a directory of its own under the
//!   build's work dir. A RUN sees it as the lower directory of an overlay;
//!   a finished root outlives its stage, so it can be handed to the stage
//!   built on it, moved, linked from, and kept between builds
//!   ([`kept`]: snapshots before context steps and of finished stages).
//! - [`in_place::InPlaceRoot`] (Kaniko-style, `--isolation in-place`): all
//!   stages share kiln's own container root `/`, one stage at a time; the
//!   root is wiped and refilled from layers when the next stage needs it.
//!
//! The executor asks the [`StageRoots`] it was given, never which kind it
//! is: what differs between the two is said here, by capability.

pub mod in_place;
pub mod kept;
pub(crate) mod private;

use std::path::{Path, PathBuf};

use kiln_image::{BlobStore, Layer};

use crate::progress::Progress;
use crate::rootfs::kept::SnapshotJob;
use crate::BuildError;

/// A stage's root being materialized: its directory, its layers and the
/// cache keys of its states (`(layers, key)`), how many layers are there
/// already, and the snapshots being linked from it.
pub(crate) struct Materialize<'a> {
    pub(crate) rootfs: &'a Path,
    pub(crate) layers: &'a [Layer],
    pub(crate) states: &'a [(usize, String)],
    pub(crate) applied: &'a mut usize,
    pub(crate) snapshotting: &'a mut Vec<SnapshotJob>,
}

/// What materializing a root needs from the build.
pub(crate) struct RootCx<'a> {
    pub(crate) store: &'a BlobStore,
    pub(crate) progress: &'a dyn Progress,
}

/// See the module doc.
pub(crate) trait StageRoots: Send + Sync {
    /// Whether each stage's root is a private directory that outlives the
    /// steps that change it. Only then may a finished root be handed to
    /// the stage built on it or left with layers still being written from
    /// it, a layer writer read the root while the next step runs, a COPY
    /// hard-link unchanged files from a finished stage, and a step's cache
    /// record be written before the layers queued ahead of it.
    fn private(&self) -> bool;

    /// How many stages may build at once, given what was asked for.
    fn max_jobs(&self, wanted: usize) -> usize;

    /// Stage roots kept between builds, where this kind keeps any.
    fn kept(&self) -> Option<&kept::Snapshots>;

    /// The directory a new stage's files live in; `fresh` makes a private
    /// one in the build's work dir.
    fn new_root(
        &self,
        fresh: &mut dyn FnMut() -> Result<PathBuf, BuildError>,
    ) -> Result<PathBuf, BuildError>;

    /// Where a finished stage's files stay for the stages that read it,
    /// and how many of its layers are there: its own root, or (when the
    /// root belongs to the next stage) a fresh directory its layers are
    /// applied to when something reads it.
    fn finished_root(
        &self,
        root: PathBuf,
        applied: usize,
        fresh: &mut dyn FnMut() -> Result<PathBuf, BuildError>,
    ) -> Result<(PathBuf, usize), BuildError>;

    /// Makes the stage's root hold its layers. `only_reads`: the next step
    /// only reads the root until it settles, so work that reads it may go
    /// on meanwhile.
    fn materialize(
        &self,
        cx: &RootCx<'_>,
        target: Materialize<'_>,
        only_reads: bool,
    ) -> Result<(), BuildError>;

    /// A step reused from the cache left the root holding `layers`.
    fn holds(&self, _layers: &[Layer]) {}

    /// The container root a RUN runs in directly, without a sandbox.
    fn in_place(&self) -> Option<&in_place::InPlaceRoot> {
        None
    }
}
