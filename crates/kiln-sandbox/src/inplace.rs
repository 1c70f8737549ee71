//! In-place isolation: kiln runs `RUN` steps directly in the container it
//! was started in, for clusters that allow neither user namespaces nor
//! privileges (no overlayfs, no mounts, no `unshare`).
//!
//! The stage's base layers are extracted over the container's own root, the
//! command runs there ([`run_direct`]), and the step's changes are found by
//! comparing stat walks of the root ([`scan`], then [`changes`] after each
//! step). Paths that are not the image's to change (`/proc`, `/sys`, `/dev`,
//! every mount point, kiln's own directory, `--ignore-path`s) are kept out by
//! an [`IgnoreSet`]. Switching stages clears the root with [`wipe_root`].
//!
//! Every function takes the root as a parameter, so all of this runs (and is
//! tested) on any directory; only [`container_evidence`] looks at the real
//! machine, and it is what the caller must consult before pointing any of
//! this at `/`.

mod direct;
mod evidence;
mod ignore;
mod walk;
mod wipe;

pub use direct::{run_direct, DirectResult, DirectSpec};
pub use evidence::{container_evidence, IN_PLACE_MARKER};
pub use ignore::{parse_mountinfo, IgnoreSet, MountInfoEntry};
pub use walk::{changes, racy_window_ns, scan, Baseline, FileKind, Record, RACY_WINDOW_NS};
pub use wipe::wipe_root;
