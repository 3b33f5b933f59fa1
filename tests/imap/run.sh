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

work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Ports below the ephemeral range (32768+), so no client connection on this machine holds them.
read -r -a ports < <(python3 -c '
import random, socket
ports = []
while len(ports) < 8:
    p = random.randint(20000, 31999)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
    if p not in ports:
        ports.append(p)
print(" ".join(map(str, ports)))')

cat > "$work/chatrelay.toml" <<TOML
mail_domain = "chat.test"
data_dir = "$work/data"
max_load_1m = 100000.0
min_available_memory = "1B"
min_free_disk_space = "1B"
[listen]
smtp = "127.0.0.1:${ports[0]}"
submission = "127.0.0.1:${ports[1]}"
submissions = "127.0.0.1:${ports[2]}"
imap = "127.0.0.1:${ports[3]}"
imaps = "127.0.0.1:${ports[4]}"
http = "127.0.0.1:${ports[5]}"
https = "127.0.0.1:${ports[6]}"
metrics = "127.0.0.1:${ports[7]}"
[tls]
mode = "self-signed"
TOML

RUST_LOG="${RUST_LOG:-info}" "$bin" serve --config "$work/chatrelay.toml" 2>"$work/relay.log" &
pid=$!
for _ in $(seq 200); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', ${ports[4]}), 0.2)" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/relay.log"; exit 1; }
    sleep 0.1
done

export IMAP_HOST=127.0.0.1 IMAP_PORT="${ports[3]}" IMAPS_PORT="${ports[4]}" MAIL_DOMAIN=chat.test
status=0
(cd "$here" && timeout 300 python3 -m unittest -v test_*.py) 2>&1 || status=$?
if [ "$status" -ne 0 ]; then echo "---- relay log (tail) ----"; tail -n 40 "$work/relay.log"; fi
exit "$status"
