#!/usr/bin/env bash
# Install HAProxy (Debian's package) for the PROXY protocol v2 test against an independent
# sender (issue 27): the relay behind a real load balancer. Idempotent, quick when installed.
# The package's own service is not used; the test runs haproxy in the foreground with its own
# configuration on loopback.
set -euo pipefail
if command -v haproxy >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "haproxy.sh: apt-get not found; cannot install haproxy" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo -n"
# Other installers may hold the dpkg lock for a while: wait up to 2 minutes.
$SUDO apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends haproxy >/dev/null 2>&1 || {
    $SUDO apt-get -o DPkg::Lock::Timeout=120 update -qq >/dev/null 2>&1 || true
    $SUDO apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends haproxy >/dev/null
}
# Where the package started its service (no policy-rc.d), stop it: nothing here uses it.
if command -v invoke-rc.d >/dev/null; then $SUDO invoke-rc.d haproxy stop >/dev/null 2>&1 || true; fi
command -v haproxy >/dev/null
