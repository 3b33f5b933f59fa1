#!/usr/bin/env bash
# CI smoke for the Rust load generator (bench/loadgen, issue 11): builds it in debug, starts the
# debug chatrelay on free loopback ports with a temp data dir, and runs `latency -n 5` and
# `throughput -k 2 -m 5`; loadgen fails (exit 1) if any message is refused, missing or not the
# one fetched. No timing assertions. Bounded: every loadgen wait has a timeout, the whole run
# a `timeout`, and the relay is always stopped.
# Binary: $RELAY_BIN, else $CARGO_TARGET_DIR/debug/chatrelay (built if missing).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"

(cd "$repo" && CARGO_TARGET_DIR="$target" cargo build -q -p loadgen)
if [ -z "${RELAY_BIN:-}" ] && [ ! -x "$target/debug/chatrelay" ]; then
    (cd "$repo" && CARGO_TARGET_DIR="$target" cargo build -q -p relay --bin chatrelay)
fi
bin="${RELAY_BIN:-$target/debug/chatrelay}"
lg="$target/debug/loadgen"

# relay.test and bench-password: loadgen's defaults (mailbench's users bench0001@relay.test).
. "$here/../lib/relay.sh"
RUST_LOG="${RUST_LOG:-warn}" relay_start "$bin" relay.test \
    "max_user_send_per_minute = 100000
max_user_send_burst_size = 100000" \
    "[delivery]
resolver = \"127.0.0.1:9\"
[push]
notify_url = \"\""

# The shared yardstick's gpg-made templates when present, else loadgen's synthetic body.
[ -d "${BENCH_DIR:-$repo/../shared/bench}/templates" ] && export BENCH_DIR="${BENCH_DIR:-$repo/../shared/bench}"
args=(--smtp-port "${ports[1]}" --imap-port "${ports[4]}" --server-pid "$pid" --timeout 20 --json-out "$work/out.json")
status=0
{
    timeout 120 "$lg" "${args[@]}" --sender-base 1 --rcpt-base 2 latency -n 5 --interval 0 &&
    timeout 120 "$lg" "${args[@]}" --sender-base 1 --rcpt-base 3 latency -n 3 --interval 0 --reconnect &&
    timeout 120 "$lg" "${args[@]}" --sender-base 11 --rcpt-base 21 throughput -k 2 -m 5 &&
    python3 - "$work/out.json" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert [r["bench"] for r in runs] == ["latency", "latency", "throughput-4k"], runs
assert runs[0]["median"]["fetched_ms"]["n"] == 5 and runs[1]["median"]["fetched_ms"]["n"] == 3
assert runs[2]["median"]["messages"] == 10
assert all(r["notes"]["smtp_pipelining"] for r in runs), "chatrelay advertises PIPELINING"
print("loadgen smoke: 5 + 3 latency samples and 10 throughput messages delivered and fetched")
PY
} || status=$?
if [ "$status" -ne 0 ]; then echo "---- relay log (tail) ----"; tail -n 40 "$work/relay.log"; fi
exit "$status"
