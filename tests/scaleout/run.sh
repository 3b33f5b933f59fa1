#!/usr/bin/env bash
# Issue 27: chatrelay nodes on a shared PostgreSQL and an S3-compatible object store. Starts a
# throwaway cluster (installing Debian's postgresql if needed) and moto's S3 server (from PyPI, in
# a venv under ~/.cache), runs the scale-out integration tests against them, stops them.
# Skipped, with the reason, only where PostgreSQL cannot be installed; the object-store test
# alone is skipped (with its reason) where moto cannot be installed.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatrelay-target}"
export CARGO_TERM_COLOR=never
work="$(mktemp -d /tmp/chatrelay-scaleout.XXXXXX)"
chmod 755 "$work"
cleanup() {
    "$root/scripts/pg-cluster.sh" stop "$work/pg" || true
    "$root/scripts/s3-server.sh" stop "$work/s3" || true
    rm -rf "$work"
}
trap cleanup EXIT
if ! out="$("$root/scripts/pg-cluster.sh" start "$work/pg")"; then
    echo "SKIPPED: tests/scaleout: PostgreSQL could not be installed or started (see above)"
    exit 0
fi
export "${out?}"
echo "PostgreSQL: $RELAYTEST_PG_URL"
if s3="$("$root/scripts/s3-server.sh" start "$work/s3")"; then
    export "${s3?}"
    # moto accepts any credentials; the relay reads them from the environment.
    export AWS_ACCESS_KEY_ID=chatrelay-test AWS_SECRET_ACCESS_KEY=chatrelay-test-secret
    echo "S3: $RELAYTEST_S3_ENDPOINT"
else
    echo "SKIPPED: the object-store test: moto could not be installed or started (see above)"
fi
cd "$root"
cargo test -p relay --locked --test it -- scaleout --test-threads=2 --nocapture
# The Delta Chat suite with the clients on two nodes of one cluster (conftest.py reads
# RELAYTEST_PG_URL); skipped with the reason where its venv cannot be installed.
if "$root/tests/interop/setup.sh" >/dev/null; then
    "$root/tests/interop/run.sh" test_chat.py
else
    echo "SKIPPED: the Delta Chat suite on two nodes: its venv could not be installed"
fi
