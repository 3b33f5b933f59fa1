#!/usr/bin/env bash
# Sourced by the suites that need a running relay: start chatrelay on free loopback ports with a
# temp data dir, and always stop it (and remove the dir) on exit.
#
#   relay_start BIN DOMAIN [TOP_LEVEL_TOML] [TABLES_TOML]
#
# Sets `work` (temp dir; the log is $work/relay.log), `pid` and `ports` (smtp, submission,
# submissions, imap, imaps, http, https, metrics). TOP_LEVEL_TOML is added before the first
# table, TABLES_TOML after the last. RUST_LOG defaults to `info`.

relay_cleanup() {
    if [ -n "${pid:-}" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    [ -n "${work:-}" ] && rm -rf "$work"
}

# Eight distinct ports below the ephemeral range (32768+), so no client connection on this
# machine holds them, each free to bind right now.
relay_pick_ports() {
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
}

relay_start() {
    local bin="$1" domain="$2" top="${3:-}" tables="${4:-}"
    work="$(mktemp -d)"
    pid=""
    trap relay_cleanup EXIT
    relay_pick_ports
    cat > "$work/chatrelay.toml" <<TOML
mail_domain = "$domain"
data_dir = "$work/data"
max_load_1m = 100000.0
min_available_memory = "1B"
min_free_disk_space = "1B"
limits.new_accounts_burst = 100000
$top
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
$tables
TOML
    RUST_LOG="${RUST_LOG:-info}" "$bin" serve --config "$work/chatrelay.toml" 2>"$work/relay.log" &
    pid=$!
    for _ in $(seq 200); do
        (exec 3<>/dev/tcp/127.0.0.1/"${ports[4]}") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$work/relay.log"; exit 1; }
        sleep 0.1
    done
    echo "chatrelay did not open its IMAPS port within 20 s" >&2
    tail -n 40 "$work/relay.log" >&2
    exit 1
}
