#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (real relays on loopback), then the
# Python suites (real clients) when their tools can be installed. Used by README and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatrelay-target}"
export CARGO_TERM_COLOR=never

echo "== cargo build"
cargo build --workspace --all-targets --locked
# The TURN test's real client (coturn's turnutils, issue 28); the test skips with a message without it.
tests/lib/coturn.sh || echo "== coturn's turnutils could not be installed; the TURN client test will skip"
tests/lib/haproxy.sh || echo "== haproxy could not be installed; the PROXY v2 test against HAProxy will skip"
echo "== cargo test"
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"

for suite in tests/*/run.sh; do
    [ -x "$suite" ] || continue
    echo "== $suite"
    "$suite"
done
echo "== all tests passed"
