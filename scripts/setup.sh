#!/usr/bin/env bash
# Installs what building and testing kiln needs on a Debian/Ubuntu machine:
# the real tools the tests use to check kiln's output (skopeo, umoci, podman,
# buildah, runc), busybox for the example images, and pigz/zstd/xz/bzip2 for
# the compression tests. Idempotent; needs root (or sudo) for apt.
set -euo pipefail
need=()
for pair in skopeo:skopeo umoci:umoci podman:podman buildah:buildah runc:runc \
            busybox:busybox-static pigz:pigz zstd:zstd xz:xz-utils bzip2:bzip2 \
            newuidmap:uidmap git:git python3:python3 curl:curl openssl:openssl \
            docker-registry:docker-registry patchelf:patchelf strip:binutils \
            debootstrap:debootstrap; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo (Rust toolchain) is required: https://rustup.rs" >&2
  exit 1
fi
# Emulators for the kiln-context object store tests (S3: moto server,
# Azure Blob: Azurite, GCS: gcp-storage-emulator); all bind 127.0.0.1.
command -v moto_server >/dev/null 2>&1 || python3 -m pip install -q 'moto[server]'
command -v gcp-storage-emulator >/dev/null 2>&1 || python3 -m pip install -q gcp-storage-emulator
command -v azurite-blob >/dev/null 2>&1 || npm install -g -s azurite
# Offline Kubernetes schema validation of deploy/ (scripts/test.sh).
command -v kubernetes-validate >/dev/null 2>&1 || python3 -m pip install -q kubernetes-validate
# SPDX validator for kiln-attest's SBOM tests.
command -v pyspdxtools >/dev/null 2>&1 || python3 -m pip install -q spdx-tools
echo "setup: ok"
