//! kiln-testkit: what the integration tests of every kiln crate share, so
//! each helper has one home. Test-only (`publish = false`, used only as a
//! dev-dependency); helpers panic with a message instead of returning
//! errors, because a failed helper is a failed test.
//!
//! - [`tools`]: required external tools (a missing one fails the test, it
//!   never skips), running them and reading their output.
//! - [`net`]: free loopback ports, waiting for a listener, child processes
//!   killed on drop.
//! - [`tree`]: comparable dumps of directory trees.
//! - [`tls`]: a certificate authority made for one test, and the server
//!   and client certificates it issues.
//! - [`registry`]: a CNCF distribution registry (plain, Basic auth, token
//!   auth, TLS, mutual TLS) on a loopback port.
//! - [`http`]: a tiny in-process HTTP/1.1 server with a handler, and a
//!   static file server (http or https) for a directory.
//! - [`isolation`]: [`isolation_matrix!`], one line that runs an end-to-end
//!   case under every isolation mode.

// Test support: a failed setup step is a failed test, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod http;
pub mod isolation;
pub mod net;
pub mod registry;
pub mod tls;
pub mod tools;
pub mod tree;
