#!/usr/bin/env bash
# Generates the noop-rebuild context deterministically.
#   gen.sh CTX_DIR
# CTX_DIR/tree: 10 x 10 dirs x 50 files = 5,000 hex text files of 150..2,199 bytes
# (~6 MB); CTX_DIR/scripts from this folder. Seeded PRNG, fixed modes and mtimes.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CTX=${1:?usage: gen.sh CTX_DIR}
rm -rf "$CTX"; mkdir -p "$CTX"
cp -r "$HERE/scripts" "$CTX/scripts"
python3 - "$CTX/tree" <<'PY'
import os, random, sys
top = sys.argv[1]
rng = random.Random(7003)
T = 1704067200
for a in range(10):
    for b in range(10):
        d = os.path.join(top, f"t{a:02d}", f"u{b:02d}")
        os.makedirs(d)
        for c in range(50):
            size = 150 + rng.randrange(2050)
            p = os.path.join(d, f"f{c:02d}.txt")
            with open(p, "wb") as f:
                f.write(rng.randbytes(size // 2 + 1).hex()[:size].encode())
            os.chmod(p, 0o644)
            os.utime(p, (T, T))
for dp, _, _ in os.walk(top, topdown=False):
    os.chmod(dp, 0o755)
    os.utime(dp, (T, T))
PY
chmod 0644 "$CTX"/scripts/*
find "$CTX/scripts" -exec touch -h -d @1704067200 {} +
echo "noop-rebuild: $(find "$CTX/tree" -type f | wc -l) files"
