#!/usr/bin/env bash
# Pushes the two base images the workloads build FROM to a registry on a fresh machine:
#   REGISTRY/library/busybox:latest   Debian's static busybox, applets as symlinks
#   REGISTRY/library/debian:bookworm  debootstrap --variant=minbase bookworm
#   sudo bench/base-images.sh [--seeds] [REGISTRY]     (default 127.0.0.1:5000)
# Starts a CNCF distribution registry there first if none answers (data under
# $KILN_BENCH_WORK/base-registry). Installs the Debian packages it needs. Idempotent.
# --seeds (opt-in; needs the Debian mirror and PyPI): also the seed-weather images' bases,
#   localhost:5000/library/python:3.13-slim and localhost:5000/astral-sh/uv:latest, made by
#   $KILN_SHARED/base-images/build-base-images.sh (default /work/shared/workloads). The seeds'
#   Dockerfiles name localhost:5000 literally, so REGISTRY must be that port on loopback.
set -euo pipefail
SEEDS=0
if [ "${1:-}" = --seeds ]; then SEEDS=1; shift; fi
REG=${1:-127.0.0.1:5000}
W=${KILN_BENCH_WORK:-/var/tmp/kiln-bench-suite}/base-images
mkdir -p "$W"
need=""
for pair in docker-registry:docker-registry skopeo:skopeo buildah:buildah busybox:busybox-static debootstrap:debootstrap; do
  command -v "${pair%%:*}" >/dev/null || need="$need ${pair#*:}"
done
if [ -n "$need" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need; fi

if ! curl -sf "http://$REG/v2/" >/dev/null; then
  D=${KILN_BENCH_WORK:-/var/tmp/kiln-bench-suite}/base-registry; mkdir -p "$D"
  printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s/data}}\nhttp: {addr: %s}\n' "$D" "$REG" > "$D/config.yml"
  setsid nohup docker-registry serve "$D/config.yml" >"$D/registry.log" 2>&1 &
  for _ in $(seq 50); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.2; done
  echo "started docker-registry on $REG (pid $!, data $D/data)"
fi

present() { skopeo inspect --raw --tls-verify=false "docker://$REG/$1" >/dev/null 2>&1; }
push_dir() {  # push_dir ROOTFS REF CMD
  local tarball=$W/rootfs.tar c
  tar -C "$1" --numeric-owner -cf "$tarball" .
  c=$(buildah from scratch)
  buildah add "$c" "$tarball" / >/dev/null
  buildah config --cmd "$3" --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  buildah commit -q "$c" "$REG/$2" >/dev/null
  buildah rm "$c" >/dev/null
  buildah push -q --tls-verify=false "$REG/$2"
  rm -f "$tarball"
}
if ! present library/busybox:latest; then
  r=$W/busybox; rm -rf "$r"; mkdir -p "$r/bin" "$r/etc" "$r/root" "$r/tmp"; chmod 1777 "$r/tmp"
  cp "$(command -v busybox)" "$r/bin/busybox"
  for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$r/etc/passwd"; printf 'root:x:0:\n' > "$r/etc/group"
  push_dir "$r" library/busybox:latest /bin/sh; echo "pushed $REG/library/busybox:latest"
fi
if ! present library/debian:bookworm; then
  r=$W/debian; rm -rf "$r"
  debootstrap --variant=minbase bookworm "$r" http://deb.debian.org/debian >"$W/debootstrap.log" 2>&1
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
  push_dir "$r" library/debian:bookworm bash; echo "pushed $REG/library/debian:bookworm"
fi
echo "$REG has library/busybox:latest and library/debian:bookworm"

[ "$SEEDS" = 1 ] || exit 0
case $REG in 127.0.0.1:5000|localhost:5000) ;;
  *) echo "--seeds: the seed Dockerfiles pull FROM localhost:5000, not $REG" >&2; exit 1 ;; esac
if present library/python:3.13-slim && present astral-sh/uv:latest; then
  echo "$REG has library/python:3.13-slim and astral-sh/uv:latest"; exit 0
fi
SHARED=${KILN_SHARED:-/work/shared/workloads}
S=$SHARED/base-images/build-base-images.sh
[ -f "$S" ] || { echo "--seeds: $S not found (set KILN_SHARED)" >&2; exit 1; }
command -v pip >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pip; }
SW=$W/seeds   # the shared script's scratch: rootfs, tarballs, a private buildah store
echo "building the seed bases with $S (log: $SW.log)"
WORK=$SW bash "$S" >"$SW.log" 2>&1 || { tail -n 20 "$SW.log" >&2; exit 1; }
buildah --root "$SW/cstore-base/root" --runroot /run/bench-base rmi -a -f >/dev/null 2>&1 || true
grep -o " $SW/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
rm -rf "$SW" /run/bench-base
present library/python:3.13-slim && present astral-sh/uv:latest
echo "$REG has library/python:3.13-slim and astral-sh/uv:latest"
