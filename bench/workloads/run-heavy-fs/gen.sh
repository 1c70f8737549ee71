#!/usr/bin/env bash
# run-heavy-fs needs no context files: creates an empty context dir.
#   gen.sh CTX_DIR
set -euo pipefail
CTX=${1:?usage: gen.sh CTX_DIR}
rm -rf "$CTX"; mkdir -p "$CTX"
