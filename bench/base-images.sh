#!/usr/bin/env bash
# Pushes the two base images the workloads build FROM to a registry on a fresh machine:
#   REGISTRY/library/busybox:latest   Debian's static busybox, applets as symlinks
#   REGISTRY/library/debian:bookworm  debootstrap --variant=minbase bookworm
#   sudo bench/base-images.sh [REGISTRY]     (default 127.0.0.1:5000)
# Starts a CNCF distribution registry there first if none answers (data under
# $KILN_BENCH_WORK/base-registry). Installs the Debian packages it needs. Idempotent.
set -euo pipefail
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
