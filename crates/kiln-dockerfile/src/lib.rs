//! kiln's Dockerfile frontend: everything that turns Dockerfile text into
//! typed, located instructions, with no I/O.
//!
//! - [`parser`] reads directives, continuations, heredocs, flags and every
//!   instruction into the [`ast`] and never panics: errors are [`ParseError`]s
//!   naming file, line and column.
//! - [`expand`] implements Docker's shell-like word expansion (`$V`,
//!   `${V:-w}`, `${V#p}`, …) used at build time with the stage's environment.
//! - [`pattern`] and [`dockerignore`] implement Docker's path patterns
//!   (`**`, `!` exceptions, last match wins), shared by `.dockerignore` and
//!   `COPY --exclude`.
//! - [`mount`] parses `RUN --mount` specifications.
//! - [`lint`] holds BuildKit's lint rules (`SecretsUsedInArgOrEnv`) as pure
//!   checks on the syntax tree.

pub mod ast;
pub mod dockerignore;
pub mod error;
pub mod expand;
pub mod lint;
pub mod mount;
pub mod parser;
pub mod pattern;

pub use ast::*;
pub use error::ParseError;
pub use parser::parse;
