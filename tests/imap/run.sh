#!/usr/bin/env bash
# Run the Python imaplib tests against a freshly started chatrelay on loopback.
# Self-contained and bounded: temp data dir, free ports, the relay is always stopped.
# Binary: $RELAY_BIN, else $CARGO_TARGET_DIR/debug/chatrelay, else target/debug/chatrelay.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${RELAY_BIN:-${CARGO_TARGET_DIR:-$here/../../target}/debug/chatrelay}"
[ -x "$bin" ] || { echo "chatrelay binary not found at $bin (cargo build -p relay first)"; exit 2; }

. "$here/../lib/python.sh"
ensure_python

. "$here/../lib/relay.sh"
relay_start "$bin" chat.test

export IMAP_HOST=127.0.0.1 IMAP_PORT="${ports[3]}" IMAPS_PORT="${ports[4]}" MAIL_DOMAIN=chat.test
status=0
(cd "$here" && timeout 300 python3 -m unittest -v test_*.py) 2>&1 || status=$?
if [ "$status" -ne 0 ]; then echo "---- relay log (tail) ----"; tail -n 40 "$work/relay.log"; fi
exit "$status"
