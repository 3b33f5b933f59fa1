#!/bin/bash
# Side-by-side benchmark: chatrelay vs the classic Postfix + Dovecot stack (issue 11).
#
#   bench/run.sh            build release, run every workload against both, print the table
#   ONLY=chatrelay bench/run.sh    just chatrelay (ONLY=classic: just the classic stack)
#
# Environment: BENCH_DIR (default ../shared/bench from the repository root: mailbench.py,
# classic-stack/), CARGO_TARGET_DIR, OUT (results folder, default bench/results),
# SKIP_BUILD=1 (use the existing release binary), RELAY_BIN (use this chatrelay binary, no build),
# RELAY_PORT_BASE (chatrelay listens on BASE+25, +587, +465, +143, +993, +80, +443; default 20000),
# SKIP_P1=1 (no Delta Chat clients), P1_N, P1_ATTACH_N (5 MiB attachments, default 4; 0: none), P1_GROUP_N (group of three, default 10), SKIP_LOGINS=1 (no first-login/restart-storm rows, issue 30),
# LOGINS_N (accounts in those rows, default 1,000), SKIP_SCENARIOS=1 (no real-client scenarios:
# bench/scenarios, the ten tests of tests/interop/test_chat.py and three timed figures with their
# server CPU, issue 30; SCENARIO_ROUNDS rounds of each figure, default 3),
# N_LAT, N_RECONNECT, PREFILL, IDLE_CONNS, HIBERNATE_WAIT, STEP_TIMEOUT (see compare.py).
# The Rust load generator (bench/loadgen) runs P2, P2', P3, P3' and LG_IDLE_CONNS (default 10,000)
# idle connections after mailbench against each server: LOADGEN=path uses that binary, NO_LOADGEN=1
# skips it, else it is built (release). CLASSIC_IDLE_CONNS caps the classic stack's idle
# connections (default LG_IDLE_CONNS; the table marks a server that held fewer). LG_ONLY=1: only
# the loadgen steps, merged into existing results.
# Needs root for the classic stack (apt-get, /etc). Loopback only. Everything this script
# starts is stopped on exit; the whole run is bounded by RUN_TIMEOUT seconds (default 3600).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$REPO/../shared/bench}
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
export BENCH_DIR
OUT=${OUT:-$REPO/bench/results}
ONLY=${ONLY:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-3600}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
PB=${RELAY_PORT_BASE:-20000}
mkdir -p "$OUT"

# Bound the whole run: a watchdog kills this script's process group after RUN_TIMEOUT.
if [ -z "${BENCH_WATCHDOG:-}" ]; then
  export BENCH_WATCHDOG=1
  exec setsid timeout --foreground -k 10 "$RUN_TIMEOUT" "$0" "$@"
fi

WORK=$(mktemp -d /tmp/chatrelay-bench.XXXXXX)
RELAY_PID=""
CLASSIC_STARTED=""
cleanup() {
  if [ -n "$RELAY_PID" ] && kill -0 "$RELAY_PID" 2>/dev/null; then
    kill -TERM "$RELAY_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$RELAY_PID" 2>/dev/null || true
  fi
  if [ -n "$CLASSIC_STARTED" ]; then "$BENCH_DIR/classic-stack/stop.sh" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n "$(ulimit -Hn)"
echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r)"
if [ -n "${RELAY_BIN:-}" ]; then
  echo "# chatrelay binary $RELAY_BIN ($(stat -c %y "$RELAY_BIN" 2>/dev/null | cut -d. -f1)), runner at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
else
  echo "# chatrelay $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
fi

if [ -z "${NO_LOADGEN:-}" ]; then
  if [ -z "${LOADGEN:-}" ]; then
    echo "## building loadgen (release)"
    (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p loadgen)
    LOADGEN=$TARGET/release/loadgen
  fi
  [ -x "$LOADGEN" ] || { echo "loadgen binary $LOADGEN not found" >&2; exit 2; }
  export LOADGEN
else
  unset LOADGEN
fi
export LG_IDLE_CONNS=${LG_IDLE_CONNS:-10000}

wait_port() {  # port, tries of 10 ms
  for _ in $(seq 1 "${2:-1000}"); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    sleep 0.01
  done
  echo "port $1 did not open" >&2; return 1
}

run_chatrelay() {
  if [ -n "${RELAY_BIN:-}" ]; then
    BIN=$RELAY_BIN
  else
    if [ -z "${SKIP_BUILD:-}" ]; then
      echo "## building chatrelay (release)"
      (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p relay --bin chatrelay)
    fi
    BIN=$TARGET/release/chatrelay
  fi
  mkdir -p "$WORK/data"
  # relay.test so mailbench's defaults (bench%04d@relay.test) work; ports 20xxx (RELAY_PORT_BASE)
  # next to the classic stack's 10xxx; gates open and the send rate effectively unlimited for throughput.
  cat > "$WORK/chatrelay.toml" <<EOF
mail_domain = "relay.test"
data_dir = "$WORK/data"
max_load_1m = 100000.0
min_available_memory = "1M"
min_free_disk_space = "1M"
max_user_send_per_minute = 10000000
max_user_send_burst_size = 10000000
max_imap_connections = 20000
max_smtp_connections = 20000
limits.new_accounts_burst = 10000000

[listen]
smtp = "127.0.0.1:$((PB + 25))"
submission = "127.0.0.1:$((PB + 587))"
submissions = "127.0.0.1:$((PB + 465))"
imap = "127.0.0.1:$((PB + 143))"
imaps = "127.0.0.1:$((PB + 993))"
http = "127.0.0.1:$((PB + 80))"
https = "127.0.0.1:$((PB + 443))"

[tls]
mode = "self-signed"

[delivery]
resolver = "127.0.0.1:9"

[push]
notify_url = ""
EOF
  # Cold start is exec → IMAPS accepting on an initialised data dir (an operator's restart); the
  # very first start also generates the TLS and DKIM keys and is printed separately.
  local t0 t1 first cold
  for pass in first restart; do
    t0=$(date +%s%N)
    RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$WORK/chatrelay.toml" >>"$WORK/chatrelay.log" 2>&1 &
    RELAY_PID=$!
    wait_port $((PB + 993)) 2000
    t1=$(date +%s%N)
    wait_port $((PB + 587)) 100
    cold=$(( (t1 - t0) / 1000000 ))
    [ "$pass" = first ] || break
    first=$cold
    kill -TERM "$RELAY_PID"
    for _ in $(seq 1 100); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.1; done
  done
  echo "## chatrelay pid $RELAY_PID, cold start ${cold} ms (exec → IMAPS port accepting; the first start, generating keys, took ${first} ms)"
  python3 "$REPO/bench/compare.py" run chatrelay "$OUT/chatrelay.json" --cold-start-ms "$cold" -- \
    --smtp-port $((PB + 587)) --imap-port $((PB + 993)) --server-pid "$RELAY_PID"
  [ -n "${SKIP_P1:-}" ] || python3 "$REPO/bench/compare.py" p1 chatrelay "$OUT/chatrelay.json" -- \
    --imap-port $((PB + 993)) --smtp-port $((PB + 465)) --server-pid "$RELAY_PID"
  kill -TERM "$RELAY_PID"
  for _ in $(seq 1 100); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$RELAY_PID" 2>/dev/null; then echo "chatrelay did not stop on SIGTERM" >&2; fi
  RELAY_PID=""
  # Issue 30: the real-client scenarios on a relay of their own (same binary, fresh data dir).
  if [ -z "${SKIP_SCENARIOS:-}" ]; then
    RELAY_BIN=$BIN "$REPO/bench/scenarios/run.sh" --rounds "${SCENARIO_ROUNDS:-3}" \
      --json-out "$OUT/scenarios.json" --merge-into "$OUT/chatrelay.json" || echo "## scenarios: rc $?"
  fi
  # Issue 30: first logins with relay-issued (/new) and user-chosen passwords, and restart
  # storms; logins.py starts and restarts the relay itself on the same config and data dir.
  if [ -z "${SKIP_LOGINS:-}" ] && [ -n "${LOADGEN:-}" ]; then
    python3 "$REPO/bench/logins.py" --bin "$BIN" --config "$WORK/chatrelay.toml" --imap-port $((PB + 993)) \
      --https-port $((PB + 443)) --out "$OUT/chatrelay.json" --log "$WORK/chatrelay.log"
  fi
}

run_classic() {
  echo "## starting the classic stack ($BENCH_DIR/classic-stack)"
  CLASSIC_STARTED=1
  # Users for loadgen: its 64-sender P3 (bench2001..2164) and the idle ones (idle00001..).
  export NUSERS=2200
  "$BENCH_DIR/classic-stack/start.sh" >/dev/null
  if [ -n "${LOADGEN:-}" ]; then
    "$BENCH_DIR/classic-stack/add-users.sh" "${CLASSIC_IDLE_CONNS:-$LG_IDLE_CONNS}" 'idle%05d' >/dev/null
  fi
  "$BENCH_DIR/classic-stack/reset.sh" >/dev/null   # empty maildirs, queue, logs; restarts
  sleep 2
  LG_IDLE_CONNS=${CLASSIC_IDLE_CONNS:-$LG_IDLE_CONNS} \
  python3 "$REPO/bench/compare.py" run classic "$OUT/classic.json" -- \
    --smtp-port 10587 --imap-port 10993 \
    --server-pidfile /run/dovecot/master.pid --server-pidfile /var/spool/postfix/pid/master.pid
  [ -n "${SKIP_P1:-}" ] || python3 "$REPO/bench/compare.py" p1 classic "$OUT/classic.json" -- \
    --imap-port 10993 --smtp-port 10465 \
    --server-pidfile /run/dovecot/master.pid --server-pidfile /var/spool/postfix/pid/master.pid
  "$BENCH_DIR/classic-stack/stop.sh" >/dev/null
  CLASSIC_STARTED=""
}

[ "$ONLY" = classic ] || run_chatrelay
[ "$ONLY" = chatrelay ] || run_classic

if [ -f "$OUT/chatrelay.json" ] && [ -f "$OUT/classic.json" ]; then
  echo
  python3 "$REPO/bench/compare.py" table "$OUT/chatrelay.json" "$OUT/classic.json" | tee "$OUT/table.md"
fi
