#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every crate's unit and
# integration tests (the end-to-end ones drive the real kiln binary and
# check its output with skopeo, umoci and podman).
set -euo pipefail
cd "$(dirname "$0")/.."
kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
