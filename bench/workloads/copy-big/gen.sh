#!/usr/bin/env bash
# Generates the copy-big context deterministically.
#   gen.sh CTX_DIR
# CTX_DIR/big.bin: exactly 1 GiB from a seeded PRNG (incompressible), mode 0644,
# mtime 2024-01-01T00:00:00Z. Takes ~10 s and 1 GiB of disk.
set -euo pipefail
CTX=${1:?usage: gen.sh CTX_DIR}
rm -rf "$CTX"; mkdir -p "$CTX"
python3 - "$CTX/big.bin" <<'PY'
import os, random, sys
path = sys.argv[1]
rng = random.Random(7002)
chunk = 8 << 20
with open(path, "wb") as f:
    for _ in range((1 << 30) // chunk):
        f.write(rng.randbytes(chunk))
os.chmod(path, 0o644)
os.utime(path, (1704067200, 1704067200))
PY
echo "copy-big: $(stat -c %s "$CTX/big.bin") bytes"
