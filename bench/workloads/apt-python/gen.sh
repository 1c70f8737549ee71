#!/usr/bin/env bash
# Assembles the apt-python context.
#   gen.sh CTX_DIR
# CTX_DIR/app: the app (from this folder); CTX_DIR/ca: the host's extra CA certificates
# (/usr/local/share/ca-certificates/*.crt), so pip trusts an intercepting HTTPS proxy.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CTX=${1:?usage: gen.sh CTX_DIR}
rm -rf "$CTX"; mkdir -p "$CTX/ca"
cp -r "$HERE/app" "$CTX/app"
shopt -s nullglob
for c in /usr/local/share/ca-certificates/*.crt; do cp "$c" "$CTX/ca/"; done
find "$CTX" -exec touch -h -d @1704067200 {} +
