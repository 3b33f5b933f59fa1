#!/usr/bin/env bash
# Soak test (issue 12): run one relay with steady traffic (submission + MX ingress + HTTP) for
# SOAK_SECONDS (default 3600), record its RSS every 10 s to a CSV, print a summary.
#   SOAK_SECONDS=600 scripts/soak.sh
#   SOAK_BIN=target/release/chatrelay SOAK_RATE=8 SOAK_OUT=/tmp/soak scripts/soak.sh
# Loopback only; everything it starts is stopped on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS="${SOAK_SECONDS:-3600}"
RATE="${SOAK_RATE:-4}"
INTERVAL="${SOAK_INTERVAL:-10}"
OUT="${SOAK_OUT:-$(mktemp -d /tmp/chatrelay-soak.XXXXXX)}"
mkdir -p "$OUT"
BIN="${SOAK_BIN:-}"
if [ -z "$BIN" ]; then
  T="${CARGO_TARGET_DIR:-$ROOT/target}"
  if [ -x "$T/release/chatrelay" ]; then BIN="$T/release/chatrelay"; else
    (cd "$ROOT" && cargo build -p relay --bin chatrelay >/dev/null); BIN="$T/debug/chatrelay"; fi
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P25=$(free_port); P587=$(free_port); P465=$(free_port); P143=$(free_port); P993=$(free_port)
P80=$(free_port); P443=$(free_port); PM=$(free_port)
cat > "$OUT/chatrelay.toml" <<TOML
mail_domain = "chat.test"
data_dir = "$OUT/data"
max_load_1m = 100000.0
min_available_memory = "1M"
min_free_disk_space = "1M"
max_user_send_per_minute = 100000
max_user_send_burst_size = 100000
[listen]
smtp = "127.0.0.1:$P25"
submission = "127.0.0.1:$P587"
submissions = "127.0.0.1:$P465"
imap = "127.0.0.1:$P143"
imaps = "127.0.0.1:$P993"
http = "127.0.0.1:$P80"
https = "127.0.0.1:$P443"
metrics = "127.0.0.1:$PM"
[tls]
mode = "self-signed"
[delivery]
# Nothing listens here: remote deliveries defer at once and no DNS query leaves the machine.
resolver = "127.0.0.1:9"
TOML
RUST_LOG="${SOAK_LOG:-info}" env -u SOAK_BIN "$BIN" serve --config "$OUT/chatrelay.toml" 2> "$OUT/relay.log" &
RELAY=$!
GEN=""
cleanup() {
  [ -n "$GEN" ] && kill "$GEN" 2>/dev/null || true
  kill -TERM "$RELAY" 2>/dev/null || true
  wait "$RELAY" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 200); do
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$P443),0.2)" 2>/dev/null && break; sleep 0.1
done
python3 "$ROOT/scripts/soak_traffic.py" 127.0.0.1 chat.test "$P25" "$P465" "$P443" "$SECS" \
  "$ROOT/relay/tests/fixtures/filter/encrypted.eml" "$RATE" > "$OUT/traffic.json" &
GEN=$!
CSV="$OUT/rss.csv"
echo "elapsed_s,rss_kib,fds,threads" > "$CSV"
START=$(date +%s)
while kill -0 "$GEN" 2>/dev/null; do
  kill -0 "$RELAY" 2>/dev/null || { echo "relay died; see $OUT/relay.log"; exit 1; }
  rss=$(awk '/^VmRSS:/{print $2}' "/proc/$RELAY/status")
  thr=$(awk '/^Threads:/{print $2}' "/proc/$RELAY/status")
  fds=$(ls "/proc/$RELAY/fd" | wc -l)
  echo "$(( $(date +%s) - START )),$rss,$fds,$thr" >> "$CSV"
  sleep "$INTERVAL"
done
wait "$GEN" || true
GEN=""
echo "traffic: $(cat "$OUT/traffic.json")"
python3 - "$CSV" <<'PY'
import csv, sys
rows = [(int(r["elapsed_s"]), int(r["rss_kib"]), int(r["fds"])) for r in csv.DictReader(open(sys.argv[1]))]
if not rows: sys.exit("no samples")
rss = [r[1] for r in rows]
q = max(1, len(rows) // 4)
first, last = sum(rss[:q]) / q, sum(rss[-q:]) / q
print(f"samples: {len(rows)} over {rows[-1][0]} s")
print(f"RSS KiB: start {rss[0]}, min {min(rss)}, max {max(rss)}, end {rss[-1]}; first-quarter mean {first:.0f}, last-quarter mean {last:.0f} ({(last-first)/first*100:+.1f} %)")
print(f"fds: start {rows[0][2]}, max {max(r[2] for r in rows)}, end {rows[-1][2]}")
PY
grep -c -i "panicked" "$OUT/relay.log" | sed 's/^/panics in relay log: /' || true
echo "CSV: $CSV; log: $OUT/relay.log"
