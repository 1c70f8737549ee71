#!/usr/bin/env bash
# kiln's benchmark suite: builds each workload with kiln and with buildah, cold and warm,
# alternating, and writes bench/results/<timestamp>.{json,md} (+ latest.md).
#   sudo bench/run.sh [--rounds 3] [--workloads copy-many-small,...] [--shared DIR [--seeds]] ...
# See bench/README.md; `bench/run.sh --help` lists every option.
set -euo pipefail
exec python3 "$(cd "$(dirname "$0")" && pwd)/harness.py" "$@"
