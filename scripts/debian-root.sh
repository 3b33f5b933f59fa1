#!/usr/bin/env bash
# Prints the path of a minimal Debian 12 root (debootstrap --variant=minbase from Debian's
# packages), made once and cached under ~/.cache so that later runs take no time. The tests never
# change it: they lay an overlay (or a copy) on top. Needs root and debootstrap.
set -euo pipefail
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
root="${DEBIAN_ROOT_CACHE:-$HOME/.cache/chatrelay-debian-$suite}"
if [ ! -f "$root/.complete" ]; then
    command -v debootstrap >/dev/null || { echo "debian-root: debootstrap is not installed" >&2; exit 1; }
    rm -rf "$root.tmp"
    mkdir -p "$(dirname "$root")"
    debootstrap --variant=minbase "$suite" "$root.tmp" "$mirror" >"$root.log" 2>&1 ||
        { echo "debian-root: debootstrap failed, see $root.log" >&2; exit 1; }
    # Downloaded archives are not needed again; the cache stays ~150 MB smaller.
    rm -rf "$root.tmp"/var/cache/apt/archives/*.deb
    rm -rf "$root"
    mv "$root.tmp" "$root"
    touch "$root/.complete"
fi
echo "$root"
