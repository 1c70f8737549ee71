#!/usr/bin/env bash
# multistage-c needs no generated data: copies src/ so every workload builds from CTX_DIR.
#   gen.sh CTX_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CTX=${1:?usage: gen.sh CTX_DIR}
rm -rf "$CTX"; mkdir -p "$CTX"
cp -r "$HERE/src" "$CTX/src"
find "$CTX" -exec touch -h -d @1704067200 {} +
