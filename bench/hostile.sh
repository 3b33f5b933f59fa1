#!/usr/bin/env bash
# Issue 26 benchmark row (not a test; nothing is asserted): port-25 greeting and delivery-to-IDLE
# latency of a normal client, first on a quiet relay, then while 8 hostile connections run the
# worst commands (bench/hostile.py attack). Prints one markdown row per phase.
#
#   bench/hostile.sh        RELAY_BIN (default $CARGO_TARGET_DIR/release/chatrelay), LOADGEN
#                           (default $CARGO_TARGET_DIR/release/loadgen), N (samples, default 100)
#
# Loopback only; the relay and the attackers are always stopped; bounded by `timeout`.
# On the PostgreSQL backend (a flood or the attack on node 1, the client on node 2): the last part
# of bench/scaleout.sh, which starts the nodes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
bin="${RELAY_BIN:-$target/release/chatrelay}"
lg="${LOADGEN:-$target/release/loadgen}"
n="${N:-100}"
[ -x "$bin" ] && [ -x "$lg" ] || { echo "need $bin and $lg (cargo build --release -p relay -p loadgen)" >&2; exit 2; }

. "$repo/tests/lib/relay.sh"
RUST_LOG="${RUST_LOG:-warn}" relay_start "$bin" relay.test \
    "max_user_send_per_minute = 100000
max_user_send_burst_size = 100000" \
    "[delivery]
resolver = \"127.0.0.1:9\"
[push]
notify_url = \"\""
attacker=""
stop_attacker() { [ -n "$attacker" ] && kill "$attacker" 2>/dev/null; wait "$attacker" 2>/dev/null || true; }
trap 'stop_attacker; relay_cleanup' EXIT

rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status"; }
args=(--smtp-port "${ports[1]}" --imap-port "${ports[4]}" --server-pid "$pid" --timeout 60)
phase() {  # name
    local g d
    g=$(timeout 600 python3 "$here/hostile.py" greet --smtp "${ports[0]}" -n "$n")
    timeout 600 "$lg" "${args[@]}" --sender-base 1 --rcpt-base 2 --json-out "$work/$1.json" \
        latency -n "$n" --interval 0.02 >/dev/null
    d=$(python3 -c 'import json,sys; l=[json.loads(x) for x in open(sys.argv[1]) if x.strip()][-1]; e=l["median"]["idle_exists_ms"]; print("%.2f | %.2f" % (e["median"], e["p99"]))' "$work/$1.json")
    python3 -c 'import json,sys; g=json.loads(sys.argv[1]); print("| %s | %.2f | %.2f | %s | %s MiB |" % (sys.argv[2], g["median"], g["p99"], sys.argv[3], sys.argv[4]))' "$g" "$1" "$d" "$(rss)"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), chatrelay $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), N=$n"
echo "| phase | greeting p50 ms | greeting p99 ms | delivery p50 ms | delivery p99 ms | relay RSS after |"
echo "|---|---|---|---|---|---|"
phase idle
python3 "$here/hostile.py" attack --imap "${ports[3]}" --imaps "${ports[4]}" \
    --user "hostile01@relay.test" --password "bench-password" --ready "$work/ready" 2>"$work/attack.log" &
attacker=$!
for _ in $(seq 600); do [ -f "$work/ready" ] && break; sleep 0.1; done
[ -f "$work/ready" ] || { echo "attackers did not start: $(cat "$work/attack.log")" >&2; exit 1; }
phase "8 hostile"
stop_attacker
attacker=""
