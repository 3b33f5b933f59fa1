#!/usr/bin/env bash
# Installs what tests/packaging needs from Debian's packages: debootstrap (the throwaway Debian
# root), lintian, and podman for the container build where it works. Idempotent and
# quick when everything is there. Exits non-zero only if apt itself cannot be used; the suite then
# skips the parts whose tools are missing, saying so.
set -uo pipefail
need=()
for pair in debootstrap:debootstrap lintian:lintian podman:podman readelf:binutils curl:curl; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[ ${#need[@]} -eq 0 ] && exit 0
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || { echo "packaging-tools: cannot install ${need[*]} (not root or no apt-get)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
# Fresh lists only when an install fails with the ones there.
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
