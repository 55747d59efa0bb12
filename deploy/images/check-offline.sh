#!/usr/bin/env bash
# Checks an image written by build-offline.sh without a container engine: unpacks its layers
# (umoci) and runs `isoflop --version` in its root file system as the image's user (chroot), with
# the image's environment; for the coordinator, also that no libtorch is in it. Needs root.
#
#   deploy/images/check-offline.sh ARCHIVE
set -euo pipefail
archive=${1:?usage: check-offline.sh ARCHIVE}
root="$(cd "$(dirname "$0")/../.." && pwd)"
version=$(awk -F'"' '/^version = / {print $2; exit}' "$root/Cargo.toml")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/layout"
tar -C "$work/layout" -xf "$archive"
umoci unpack --image "$work/layout:$version" "$work/bundle" >/dev/null
config="$work/bundle/config.json"
uid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["user"]["uid"])' "$config")
mapfile -t env < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["process"]["env"]))' "$config")
[ "$uid" != 0 ] || { echo "check-offline: the image runs as root" >&2; exit 1; }
got=$(chroot --userspec="$uid:$uid" "$work/bundle/rootfs" /usr/bin/env -i "${env[@]}" isoflop --version)
echo "check-offline: isoflop --version in the image, as uid $uid: $got"
[ "$got" = "isoflop $version" ] || { echo "check-offline: expected isoflop $version" >&2; exit 1; }
if [[ "$archive" == *coordinator* ]]; then
    if find "$work/bundle/rootfs" -name 'libtorch*' | grep -q .; then
        echo "check-offline: the coordinator image holds libtorch" >&2
        exit 1
    fi
    chroot --userspec="$uid:$uid" "$work/bundle/rootfs" /usr/bin/env -i "${env[@]}" isoflop serve --help >/dev/null
    echo "check-offline: no libtorch; isoflop serve --help runs"
fi
if [[ "$archive" == *worker* ]]; then
    chroot --userspec="$uid:$uid" "$work/bundle/rootfs" /usr/bin/env -i "${env[@]}" isoflop worker --check-device --device cpu
fi
echo "check-offline: rootfs $(du -sm "$work/bundle/rootfs" | cut -f1) MiB unpacked, archive $(du -m "$archive" | cut -f1) MiB"
