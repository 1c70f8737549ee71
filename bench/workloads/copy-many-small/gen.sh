#!/usr/bin/env bash
# Generates the copy-many-small context deterministically.
#   gen.sh CTX_DIR
# CTX_DIR/files: 25 dirs x 16 subdirs x 50 files = 20,000 files of 200..5,999 bytes
# (~60 MB): every third file random bytes, the others hex text. Seeded PRNG, fixed
# modes (0644 files, 0755 dirs) and mtimes (2024-01-01T00:00:00Z): identical every run.
set -euo pipefail
CTX=${1:?usage: gen.sh CTX_DIR}
rm -rf "$CTX"; mkdir -p "$CTX"
python3 - "$CTX/files" <<'PY'
import os, random, sys
top = sys.argv[1]
rng = random.Random(7001)
T = 1704067200
n = 0
for a in range(25):
    for b in range(16):
        d = os.path.join(top, f"a{a:02d}", f"b{b:02d}")
        os.makedirs(d)
        for c in range(50):
            size = 200 + rng.randrange(5800)
            if n % 3 == 0:
                name, data = f"blob{c:02d}.dat", rng.randbytes(size)
            else:
                name, data = f"text{c:02d}.txt", rng.randbytes(size // 2 + 1).hex()[:size].encode()
            n += 1
            p = os.path.join(d, name)
            with open(p, "wb") as f:
                f.write(data)
            os.chmod(p, 0o644)
            os.utime(p, (T, T))
for dp, _, _ in os.walk(top, topdown=False):
    os.chmod(dp, 0o755)
    os.utime(dp, (T, T))
print(f"copy-many-small: {n} files")
PY
