#!/usr/bin/env bash
# Builds an isoflop image without pulling a base image (no container registry needed):
#   1. a Debian bookworm root file system from Debian's packages (mmdebstrap, the host's apt
#      sources), with ca-certificates and the isoflop user (uid 10001): the base layer;
#   2. the binary (and, for the worker, libtorch from the torch==2.11.0 wheel) as layers on top
#      (umoci), the entrypoint, user and environment in the image config;
#   3. written as an OCI archive (a tar of an OCI image layout) that `skopeo copy
#      oci-archive:FILE docker://REGISTRY/...`, `podman load` or `ctr import` take.
#
#   deploy/images/build-offline.sh coordinator OUT_DIR [ISOFLOP_BINARY]
#   deploy/images/build-offline.sh worker OUT_DIR [ISOFLOP_BINARY [SITE_PACKAGES]]
#
# coordinator: ISOFLOP_BINARY defaults to a build without the trainer (cargo build --release
# -p isoflop-cli --no-default-features), which needs no libtorch. worker: the full build, and
# torch/lib and nvidia/ of SITE_PACKAGES (default: $ISOFLOP_VENV's, where torch==2.11.0 is). Needs root (mmdebstrap's root mode,
# umoci unpack), mmdebstrap and umoci (Debian packages). Prints each step's time and the sizes.
set -euo pipefail
usage="usage: build-offline.sh coordinator|worker OUT_DIR [ISOFLOP_BINARY [SITE_PACKAGES]]"
kind=${1:?$usage}
out=${2:?$usage}
root="$(cd "$(dirname "$0")/../.." && pwd)"
case "$kind" in coordinator|worker) ;; *) echo "build-offline: expected coordinator or worker, not $kind" >&2; exit 2;; esac
for tool in mmdebstrap umoci; do
    command -v "$tool" >/dev/null || { echo "build-offline: $tool is required (apt-get install $tool)" >&2; exit 1; }
done
version=$(awk -F'"' '/^version = / {print $2; exit}' "$root/Cargo.toml")
t0=$(date +%s)
step() { echo "build-offline: $* ($(( $(date +%s) - t0 )) s)" >&2; }

binary=${3:-}
if [ -z "$binary" ]; then
    # shellcheck source=scripts/env.sh
    source "$root/scripts/env.sh"
    features=()
    [ "$kind" = coordinator ] && features=(--no-default-features)
    (cd "$root" && cargo build --release --locked -p isoflop-cli "${features[@]}" >&2)
    mkdir -p "$out"
    binary="$out/.isoflop-$kind"
    cp "$CARGO_TARGET_DIR/release/isoflop" "$binary"
    # Put the full build back where bin/isoflop and the tests expect it (a fresh build: a copy).
    [ "$kind" = coordinator ] && (cd "$root" && cargo build --release --locked -p isoflop-cli >&2)
    step "built isoflop ${features[*]:-with the trainer}"
fi
[ -x "$binary" ] || { echo "build-offline: $binary is not an executable" >&2; exit 2; }

mkdir -p "$out"
work=$(mktemp -d "$out/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. The base layer: Debian's essential packages and CA certificates, from the host's apt
#    sources (a deb822 or one-line sources file each).
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && grep -qE '^(deb |Types:)' "$f" && sources+=("$f")
done
[ "${#sources[@]}" -gt 0 ] || { echo "build-offline: no apt sources on this machine" >&2; exit 1; }
include=ca-certificates,libgcc-s1
# libtorch is C++ (and OpenMP).
[ "$kind" = worker ] && include="$include,libstdc++6,libgomp1"
mmdebstrap --quiet --mode=root --variant=essential --include="$include" --format=tar \
    --customize-hook='echo "isoflop:x:10001:10001:isoflop:/home/isoflop:/usr/sbin/nologin" >>"$1/etc/passwd"' \
    --customize-hook='echo "isoflop:x:10001:" >>"$1/etc/group"' \
    --customize-hook='install -d -o 10001 -g 10001 -m 0750 "$1/home/isoflop"' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    bookworm "$work/base.tar" "${sources[@]}" >&2
step "Debian bookworm root file system: $(du -m "$work/base.tar" | cut -f1) MiB"

layout="$work/layout"
tag="$version"
image="$layout:$tag"
umoci init --layout "$layout"
umoci new --image "$image"
umoci raw add-layer --image "$image" "$work/base.tar"

# 2. The binary (stripped of its debug line tables), and libtorch for the worker.
mkdir -p "$work/bin"
objcopy --strip-debug "$binary" "$work/bin/isoflop"
chmod 0755 "$work/bin/isoflop"
umoci insert --image "$image" "$work/bin/isoflop" /usr/local/bin/isoflop
env=(--config.env "PATH=/usr/local/bin:/usr/bin:/bin" --config.env "HOME=/home/isoflop")
if [ "$kind" = worker ]; then
    # torch/lib and the NVIDIA wheels' libraries, keeping their relative layout (libtorch_cuda
    # finds them by its $ORIGIN run path), where the worker Dockerfile puts them.
    site=${4:-$(ls -d "${ISOFLOP_VENV:-$HOME/.cache/isoflop/venv}"/lib/python3*/site-packages | head -n 1)}
    [ -f "$site/torch/lib/libtorch_cpu.so" ] || { echo "build-offline: no torch/lib/libtorch_cpu.so in $site" >&2; exit 2; }
    dest=/opt/isoflop/venv/lib/python3.11/site-packages
    umoci insert --image "$image" "$site/torch/lib" "$dest/torch/lib"
    [ -d "$site/nvidia" ] && umoci insert --image "$image" "$site/nvidia" "$dest/nvidia"
    env+=(--config.env "LD_LIBRARY_PATH=$dest/torch/lib")
    step "libtorch layers from $site"
fi
umoci config --image "$image" \
    --config.user 10001:10001 --config.workingdir /home/isoflop \
    --config.entrypoint /usr/local/bin/isoflop --config.cmd --help \
    "${env[@]}" \
    --config.label "org.opencontainers.image.title=isoflop-$kind" \
    --config.label "org.opencontainers.image.version=$version" \
    --architecture amd64 --os linux
umoci gc --layout "$layout"

# 3. The OCI archive.
archive="$out/isoflop-$kind-$version.oci.tar"
tar -C "$layout" -cf "$archive" .
step "wrote $archive: $(du -m "$archive" | cut -f1) MiB (layers: $(ls "$layout/blobs/sha256" | wc -l) blobs)"
echo "$archive"
