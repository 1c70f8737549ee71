#!/usr/bin/env bash
# S3 build context benchmark: kiln build s3://… (fetch + extract) against
# `aws s3 cp` + `tar xzf` of the same object from the same moto_server on loopback.
#   bench/s3-context/run.sh [--kiln PATH] [--rounds 3] [--files 20000] [--mb 200] [--work DIR]
# See bench/s3-context/README.md.
set -euo pipefail
command -v moto_server >/dev/null 2>&1 || python3 -m pip install -q 'moto[server]'
command -v aws >/dev/null 2>&1 || python3 -m pip install -q awscli
[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time (Debian package: time)" >&2; exit 1; }
exec python3 "$(cd "$(dirname "$0")" && pwd)/s3bench.py" "$@"
