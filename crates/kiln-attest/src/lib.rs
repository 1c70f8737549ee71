//! Supply-chain attestations that kiln produces about an image it built.
//!
//! * [`sbom`] scans a finished root filesystem (read-only, treated as hostile) for the
//!   packages that package managers recorded in it and writes an SPDX 2.3 JSON document.
//! * [`provenance`] turns a typed record of one build into an in-toto Statement v1 with
//!   a SLSA v1 provenance predicate, shaped as BuildKit shapes its own.
//!
//! Both are pure: they take their inputs (including the creation time) as parameters, so
//! the same inputs give byte-identical documents, which `SOURCE_DATE_EPOCH` builds rely
//! on. Wiring them into `kiln build` flags and the image exporter lives elsewhere.

pub mod provenance;
pub mod sbom;
mod time;
mod tree;

pub use time::rfc3339;
