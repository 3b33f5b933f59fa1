#!/usr/bin/env bash
# Issue 27: chatrelay nodes on a shared PostgreSQL. Starts a throwaway cluster (installing Debian's
# postgresql if needed), runs the scale-out integration tests against it, stops it.
# Skipped, with the reason, only where PostgreSQL cannot be installed.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatrelay-target}"
export CARGO_TERM_COLOR=never
work="$(mktemp -d /tmp/chatrelay-scaleout.XXXXXX)"
chmod 755 "$work"
cleanup() { "$root/scripts/pg-cluster.sh" stop "$work/pg" || true; rm -rf "$work"; }
trap cleanup EXIT
if ! out="$("$root/scripts/pg-cluster.sh" start "$work/pg")"; then
    echo "SKIPPED: tests/scaleout: PostgreSQL could not be installed or started (see above)"
    exit 0
fi
export "${out?}"
echo "PostgreSQL: $RELAYTEST_PG_URL"
cd "$root"
cargo test -p relay --locked --test it -- scaleout --test-threads=2 --nocapture
