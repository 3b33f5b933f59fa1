#!/usr/bin/env bash
# Install the TURN test client (turnutils_uclient and turnutils_peer from Debian's coturn) for the
# embedded TURN server's tests (issue 28). Idempotent, quick when installed. The package's own
# turnserver is never started (its Debian service is disabled by default and nothing here runs it).
set -euo pipefail
if command -v turnutils_uclient >/dev/null && command -v turnutils_peer >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "coturn.sh: apt-get not found; cannot install coturn's turnutils" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo -n"
# Other installers may hold the dpkg lock for a while: wait up to 2 minutes.
$SUDO apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends coturn >/dev/null 2>&1 || {
    $SUDO apt-get -o DPkg::Lock::Timeout=120 update -qq >/dev/null 2>&1 || true
    $SUDO apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends coturn >/dev/null
}
# Debian starts no turnserver unless TURNSERVER_ENABLED is set; make sure none runs from us.
command -v turnutils_uclient >/dev/null && command -v turnutils_peer >/dev/null
