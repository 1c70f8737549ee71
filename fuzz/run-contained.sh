#!/bin/sh
# Runs a built fuzz target inside a throwaway container whose root holds
# only the target binary and the libraries it links, so an input that
# escapes the temp root (the property layer_apply checks) cannot write to
# the machine. Usage, from fuzz/:
#   ./run-contained.sh TARGET [libFuzzer flags...]
# Corpus: corpus/TARGET, crashes: artifacts/TARGET (both on the host).
set -eu
target=$1
shift
bin=target/x86_64-unknown-linux-gnu/release/$target
[ -x "$bin" ] || { echo "build first: cargo +nightly fuzz build $target" >&2; exit 1; }
root=$(mktemp -d /tmp/kiln-fuzz-root.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/corpus" "$root/artifacts" "$root/proc" "$root/dev" "$root/sys"
cp "$bin" "$root/bin/fuzz"
# libFuzzer's -fork mode starts its workers through /bin/sh.
cp -L /bin/sh "$root/bin/sh"
{ ldd "$bin"; ldd /bin/sh; } | awk '/=>/ && $3 ~ /^\// {print $3} /^\t\// {print $1}' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
mkdir -p "corpus/$target" "artifacts/$target"
podman run --rm --runtime runc --cgroup-manager=cgroupfs \
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    --network none --cap-drop MKNOD --security-opt no-new-privileges \
    --tmpfs /tmp:rw,size=512m \
    -v "$PWD/corpus/$target:/corpus" -v "$PWD/artifacts/$target:/artifacts" \
    --rootfs "$root" \
    /bin/fuzz /corpus -artifact_prefix=/artifacts/ "$@"
