#!/usr/bin/env bash
# Issue 30: the ten real-client scenarios of tests/interop/test_chat.py and three timed figures
# against one RELEASE chatrelay, with the server CPU each one cost (bench/scenarios/scenarios.py).
# Makes sure the interop venv exists (tests/interop/setup.sh: pinned deltachat-rpc-server 2.65);
# exit 3 (one line on stderr) when it cannot, so callers can skip the step.
#
#   bench/scenarios/run.sh [--bin PATH] [--json-out F] [--rounds N] [-k EXPR]
#
# The binary defaults to $RELAY_BIN, else $CARGO_TARGET_DIR/release/chatrelay.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
if ! venv="$(timeout 600 "$repo/tests/interop/setup.sh")" || [ ! -x "$venv/bin/deltachat-rpc-server" ]; then
    echo "scenarios skipped: the Delta Chat venv (tests/interop/setup.sh) could not be set up" >&2
    exit 3
fi
export PATH="$venv/bin:$PATH"
export RELAY_BIN="${RELAY_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/chatrelay-target}/release/chatrelay}"
exec timeout -k 10 "${SCENARIOS_TIMEOUT:-1500}" "$venv/bin/python" "$here/scenarios.py" "$@"
