#!/usr/bin/env bash
# Builds kiln and the example image in examples/hello (FROM scratch plus
# Debian's static busybox, two RUN steps) into an OCI layout, with no daemon
# and no registry, then shows what was built.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p kiln-cli
kiln="${CARGO_TARGET_DIR:-target}/debug/kiln"
install -m 0755 "$(command -v busybox)" examples/hello/busybox
mkdir -p target
"$kiln" build -t hello:latest --output type=oci,dest=target/hello-oci examples/hello
skopeo inspect --config oci:target/hello-oci:latest | head -n 40
