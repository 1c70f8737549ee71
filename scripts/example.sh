#!/usr/bin/env bash
# Builds kiln and the example image in examples/hello (FROM scratch plus
# Debian's static busybox) into an OCI layout, with no daemon and no
# registry, then shows what was built.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p kiln-cli
install -m 0755 "$(command -v busybox)" examples/hello/busybox
./target/release/kiln build -t hello:latest --output type=oci,dest=target/hello-oci examples/hello
skopeo inspect --config oci:target/hello-oci:latest | head -n 40
