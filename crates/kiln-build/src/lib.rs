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

pub mod chmod;
pub mod copy;
pub mod fetch;
pub mod snapshot;
pub mod unpack;
pub mod users;
