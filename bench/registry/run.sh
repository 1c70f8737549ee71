#!/usr/bin/env bash
# Registry transfer benchmark: push and pull of one 1 GiB, 10-layer image over loopback
# to a local CNCF distribution registry, kiln against `skopeo copy`, alternating, 3
# rounds, medians in MB/s. See bench/registry/README.md.
#   bench/registry/run.sh            # KILN=path/to/kiln ROUNDS=3 WORK=/var/tmp/... to change
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KILN=${KILN:-$ROOT/target/release/kiln}
ROUNDS=${ROUNDS:-3}
LAYERS=${LAYERS:-10}
TOTAL_BYTES=${TOTAL_BYTES:-1073741824}
WORK=${WORK:-/var/tmp/kiln-bench-registry}

for tool in "$KILN" skopeo docker-registry python3; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (cargo build --release -p kiln-cli; scripts/setup.sh)" >&2; exit 1; }
done
mkdir -p "$WORK"
REG_PID=""
cleanup() { if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

now() { python3 -c 'import time; print(f"{time.monotonic():.6f}")'; }

# A fresh registry (empty storage) on a free loopback port; sets REG_HOST.
start_registry() {
  cleanup
  local dir=$WORK/registry
  rm -rf "$dir"; mkdir -p "$dir"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  REG_HOST=127.0.0.1:$port
  cat > "$dir/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: $REG_HOST
YML
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "registry did not start: $(cat "$dir/log")" >&2; exit 1
}

# 1. The image: LAYERS random (incompressible) files, one COPY each, as an OCI layout.
IMAGE=$WORK/image
if [ ! -f "$IMAGE/index.json" ]; then
  echo "making the ${TOTAL_BYTES}-byte, ${LAYERS}-layer image in $IMAGE" >&2
  ctx=$WORK/image-ctx
  rm -rf "$ctx"; mkdir -p "$ctx"
  per=$((TOTAL_BYTES / LAYERS))
  echo "FROM scratch" > "$ctx/Dockerfile"
  for i in $(seq 1 "$LAYERS"); do
    head -c "$per" /dev/urandom > "$ctx/blob$i"
    echo "COPY blob$i /blob$i" >> "$ctx/Dockerfile"
  done
  "$KILN" build --progress quiet --cache-dir "$WORK/prep-cache" --compression-level 1 \
    -t bench:v1 --output "type=oci,dest=$IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
fi
BYTES=$(python3 - "$IMAGE" <<'PY'
import json, sys, os
d = sys.argv[1]
top = json.load(open(os.path.join(d, "index.json")))
m = json.load(open(os.path.join(d, "blobs/sha256", top["manifests"][0]["digest"].split(":")[1])))
print(sum(l["size"] for l in m["layers"]) + m["config"]["size"])
PY
)

# kiln pushes through `kiln build` of `FROM oci-layout://IMAGE:v1` with the cache dir
# the image was built in (the layout's blobs are hard links into it), warmed once so
# that the timed runs only push: the import finds every blob present.
PUSH_CTX=$WORK/push-ctx; mkdir -p "$PUSH_CTX"
echo "FROM oci-layout://$IMAGE:v1" > "$PUSH_CTX/Dockerfile"
"$KILN" build --progress quiet --cache-dir "$WORK/prep-cache" --output "type=oci,dest=$WORK/warm-out" "$PUSH_CTX" >/dev/null
rm -rf "$WORK/warm-out"

push_kiln() {
  "$KILN" build --progress quiet --cache-dir "$WORK/prep-cache" --push -t "$REG_HOST/bench/kiln:v1" "$PUSH_CTX" >/dev/null
}
push_skopeo() {
  skopeo copy --quiet --dest-tls-verify=false "oci:$IMAGE:v1" "docker://$REG_HOST/bench/skopeo:v1"
}
# Pulls start from nothing: an empty kiln cache dir, an absent skopeo destination.
pull_kiln() {
  rm -rf "$WORK/kiln-pull-cache" "$WORK/kiln-pull-out"
  "$KILN" build --progress quiet --cache-dir "$WORK/kiln-pull-cache" \
    --output "type=oci,dest=$WORK/kiln-pull-out" "$PULL_CTX" >/dev/null
}
pull_skopeo() {
  rm -rf "$WORK/skopeo-pull"
  skopeo copy --quiet --src-tls-verify=false "docker://$REG_HOST/bench/src:v1" "oci:$WORK/skopeo-pull:v1"
}

RESULTS=$WORK/times.tsv
: > "$RESULTS"
timed() { # op tool
  local t0 t1
  t0=$(now); "$1_$2"; t1=$(now)
  echo -e "$1\t$2\t$(python3 -c "print(f'{$t1-$t0:.3f}')")" | tee -a "$RESULTS" >&2
  # Not timed: free the disk a pull filled.
  rm -rf "$WORK/kiln-pull-cache" "$WORK/kiln-pull-out" "$WORK/skopeo-pull"
}

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="kiln skopeo"; else order="skopeo kiln"; fi
  for tool in $order; do start_registry; timed push "$tool"; done
done
start_registry
skopeo copy --quiet --dest-tls-verify=false "oci:$IMAGE:v1" "docker://$REG_HOST/bench/src:v1"
PULL_CTX=$WORK/pull-ctx; mkdir -p "$PULL_CTX"
echo "FROM $REG_HOST/bench/src:v1" > "$PULL_CTX/Dockerfile"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="kiln skopeo"; else order="skopeo kiln"; fi
  for tool in $order; do timed pull "$tool"; done
done
rm -rf "$WORK/kiln-pull-cache" "$WORK/kiln-pull-out" "$WORK/skopeo-pull"

python3 - "$RESULTS" "$BYTES" "$ROUNDS" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines() if l]
size = int(sys.argv[2])
print(f"image: {size/1e6:.0f} MB in blobs; {sys.argv[3]} rounds, medians\n")
print("| operation | kiln s | skopeo s | kiln MB/s | skopeo MB/s | kiln ≤ skopeo (time) |")
print("|---|---|---|---|---|---|")
for op in ("push", "pull"):
    med = {t: statistics.median(float(r[2]) for r in rows if r[0] == op and r[1] == t) for t in ("kiln", "skopeo")}
    print(f"| {op} | {med['kiln']:.2f} | {med['skopeo']:.2f} | {size/1e6/med['kiln']:.0f} | {size/1e6/med['skopeo']:.0f} | {'yes' if med['kiln'] <= med['skopeo'] else 'no'} |")
PY
