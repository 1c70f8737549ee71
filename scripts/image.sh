#!/usr/bin/env bash
# Builds kiln's own image (images/kiln/Dockerfile) with kiln itself.
#
#   scripts/image.sh [--debug] [--binary PATH] [--tag NAME]
#                    [--output oci-archive:FILE.tar|oci:DIR|docker-archive:FILE.tar]...
#                    [--push REF]...
#
# Stages a build context (the binary, the shared libraries it needs, CA
# certificates, /etc files, Kaniko's paths) and runs `kiln build` on it with
# the same binary it packages. The build is reproducible: timestamps come
# from SOURCE_DATE_EPOCH, by default the time of the last git commit.
#
# A dynamically linked (glibc) binary is copied stripped, with its ELF
# interpreter and library search path rewritten (patchelf) to /kiln/lib,
# where the loader and exactly the libraries ldd lists go. A static (musl)
# binary is copied as it is and /kiln/lib stays empty.
#
# Default binary: $CARGO_TARGET_DIR/release/kiln (target/release/kiln),
# brought up to date with `cargo build --release -p kiln-cli` first. Default output:
# oci-archive:target/kiln-image.tar (kiln-image-debug.tar with --debug).
# Prints the image digest on stdout.
set -euo pipefail
umask 022
root="$(cd "$(dirname "$0")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

die() { echo "image.sh: $*" >&2; exit 1; }

debug=0 binary="" tag="" outputs=() pushes=()
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) debug=1 ;;
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary="$2"; shift ;;
    --binary=*) binary="${1#*=}" ;;
    --tag) [ $# -ge 2 ] || die "--tag needs a name"; tag="$2"; shift ;;
    --tag=*) tag="${1#*=}" ;;
    --output) [ $# -ge 2 ] || die "--output needs a destination"; outputs+=("$2"); shift ;;
    --output=*) outputs+=("${1#*=}") ;;
    --push) [ $# -ge 2 ] || die "--push needs an image reference"; pushes+=("$2"); shift ;;
    --push=*) pushes+=("${1#*=}") ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

for tool in patchelf strip ldd; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (apt-get install patchelf binutils libc-bin)"
done

if [ -z "$binary" ]; then
  # The image of this checkout: cargo rebuilds only what changed.
  binary="$target_dir/release/kiln"
  if command -v cargo >/dev/null 2>&1; then
    (cd "$root" && cargo build --release -q -p kiln-cli)
  fi
fi
[ -x "$binary" ] || die "$binary: not an executable file"
binary="$(readlink -f "$binary")"

variant=kiln
[ "$debug" -eq 1 ] && variant=debug
version="$("$binary" --version | awk '{print $2}')"
[ -n "$version" ] || die "$binary --version printed no version"
if [ -z "$tag" ]; then
  tag="kiln:$version"
  [ "$debug" -eq 1 ] && tag="kiln:$version-debug"
fi
if [ "${#outputs[@]}" -eq 0 ] && [ "${#pushes[@]}" -eq 0 ]; then
  mkdir -p "$root/target"
  if [ "$debug" -eq 1 ]; then
    outputs=("oci-archive:$root/target/kiln-image-debug.tar")
  else
    outputs=("oci-archive:$root/target/kiln-image.tar")
  fi
fi

# Reproducible timestamps: the caller's SOURCE_DATE_EPOCH, else the last
# commit's time, else 0.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH="$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)"
fi
export SOURCE_DATE_EPOCH
revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
created="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"

ctx="$(mktemp -d "${TMPDIR:-/tmp}/kiln-image-ctx.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
cp "$root/images/kiln/Dockerfile" "$ctx/Dockerfile"
mkdir -p "$ctx/lib" "$ctx/etc" "$ctx/kaniko/.docker" "$ctx/kiln-tmp/tmp"
# kiln's scratch space (TMPDIR): under /kiln, so in-place builds keep it,
# and sticky world-writable for a non-root kiln. (Copied as an entry of
# kiln-tmp/, so it keeps its own mode.)
chmod 0755 "$ctx/kiln-tmp"
chmod 1777 "$ctx/kiln-tmp/tmp"

# The binary, and for a dynamic one its loader and libraries.
install -m 0755 "$binary" "$ctx/kiln"
strip --strip-all "$ctx/kiln"
interp="$(patchelf --print-interpreter "$ctx/kiln" 2>/dev/null || true)"
if [ -n "$interp" ]; then
  libs=("$interp")
  while read -r lib; do libs+=("$lib"); done < <(
    ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
  # glibc loads name-service modules at run time; ldd cannot see them.
  libdir="$(dirname "$(ldd "$binary" | awk '$1 == "libc.so.6" {print $3}')")"
  libs+=("$libdir/libnss_files.so.2" "$libdir/libnss_dns.so.2")
  for lib in "${libs[@]}"; do
    [ -e "$lib" ] || die "$lib: not found (needed by $binary)"
    install -m 0755 "$(readlink -f "$lib")" "$ctx/lib/$(basename "$lib")"
  done
  patchelf --set-interpreter "/kiln/lib/$(basename "$interp")" \
           --force-rpath --set-rpath /kiln/lib "$ctx/kiln"
fi

# Kaniko's paths: /kaniko/executor is kiln under the name `executor`
# (kiln reads its command line style from that name).
ln -s /kiln/kiln "$ctx/kaniko/executor"
ca="${KILN_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
[ -s "$ca" ] || die "$ca: no CA bundle (apt-get install ca-certificates, or set KILN_CA_BUNDLE)"
# The bundle lives under /kiln, which kiln's in-place mode never touches;
# Kaniko's /kaniko/ssl/certs (where Jobs mount extra CAs) and /etc/ssl/certs
# link to it.
install -D -m 0644 "$ca" "$ctx/kiln-ssl/certs/ca-certificates.crt"
mkdir -p "$ctx/etc/ssl/certs" "$ctx/kaniko/ssl/certs"
ln -s /kiln/ssl/certs/ca-certificates.crt "$ctx/etc/ssl/certs/ca-certificates.crt"
ln -s /kiln/ssl/certs/ca-certificates.crt "$ctx/kaniko/ssl/certs/ca-certificates.crt"
chmod 0755 "$ctx/kaniko" "$ctx/kaniko/.docker"
echo "This container is kiln's image: kiln may build in place here (its own root filesystem is expendable)." \
  > "$ctx/in-place-container"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$ctx/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ctx/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$ctx/etc/nsswitch.conf"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$ctx/etc/hosts"
chmod 0644 "$ctx/in-place-container" "$ctx/etc/passwd" "$ctx/etc/group" "$ctx/etc/nsswitch.conf" "$ctx/etc/hosts"
if [ "$debug" -eq 1 ]; then
  bb="${KILN_BUSYBOX:-$(command -v busybox || true)}"
  [ -n "$bb" ] || die "busybox is required for --debug (apt-get install busybox-static)"
  file -L "$bb" 2>/dev/null | grep -q 'statically linked' || die "$bb: not a static busybox (apt-get install busybox-static)"
  install -m 0755 "$bb" "$ctx/busybox"
fi
# Sources carry fixed times and modes, so the same inputs give the same
# layers whatever the checkout's umask or clock.
find "$ctx" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

args=(build --file "$ctx/Dockerfile" --target "$variant" --tag "$tag" --reproducible
      --progress plain
      --build-arg "KILN_VERSION=$version" --build-arg "KILN_REVISION=$revision"
      --build-arg "KILN_CREATED=$created")
for o in "${outputs[@]}"; do
  case "$o" in
    oci-archive:*.tar) args+=(--output "type=oci,dest=${o#oci-archive:}") ;;
    oci-archive:*) die "$o: an OCI archive's file name must end in .tar" ;;
    oci:*) args+=(--output "type=oci,dest=${o#oci:}") ;;
    docker-archive:*) args+=(--output "type=docker,dest=${o#docker-archive:}") ;;
    *) die "$o: expected oci-archive:FILE.tar, oci:DIR or docker-archive:FILE.tar" ;;
  esac
done
for p in "${pushes[@]}"; do
  args+=(--output "type=image,name=$p,push=true")
done
args+=("$ctx")

start=$(date +%s.%N)
"$binary" "${args[@]}"
end=$(date +%s.%N)
echo "image.sh: built $tag ($variant) with $binary in $(awk "BEGIN {printf \"%.1f\", $end - $start}")s" >&2
