#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the scale-out tests (issue 27).
#   scripts/pg-cluster.sh start DIR   install Debian's postgresql if missing, initdb DIR as an
#                                     unprivileged user, start it on a free loopback port, create
#                                     database "chatrelay"; prints `RELAYTEST_PG_URL=...`
#   scripts/pg-cluster.sh stop DIR    stop it (pg_ctl stop -m immediate) and remove DIR
# Idempotent and quick when PostgreSQL is installed. Listens on 127.0.0.1 only; trust auth.
set -euo pipefail
cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}

# The server refuses to run as root: use Debian's `postgres` user, else a user of our own.
pg_user() {
    if [ "$(id -u)" != 0 ]; then id -un; return; fi
    if id postgres >/dev/null 2>&1; then echo postgres; return; fi
    id chatrelay-pg >/dev/null 2>&1 || useradd --system --no-create-home chatrelay-pg
    echo chatrelay-pg
}

as_user() {
    local u="$1"; shift
    if [ "$(id -un)" = "$u" ]; then "$@"; else runuser -u "$u" -- "$@"; fi
}

case "$cmd" in
start)
    if ! bin="$(pg_bin)"; then
        [ "$(id -u)" = 0 ] || { echo "PostgreSQL is not installed and we are not root" >&2; exit 1; }
        echo "installing postgresql from Debian's packages" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        bin="$(pg_bin)"
    fi
    user="$(pg_user)"
    mkdir -p "$dir"
    chown "$user" "$dir" 2>/dev/null || true
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_user "$user" "$bin/initdb" -D "$dir/data" -U chatrelay -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    # fsync stays on: the tests kill nodes, not the machine, but the durability claim is the
    # engine's. max_connections covers three nodes' pools plus listeners.
    as_user "$user" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    echo "$port" > "$dir/port"
    "$bin/psql" -h 127.0.0.1 -p "$port" -U chatrelay -d postgres -qtAc "CREATE DATABASE chatrelay" >/dev/null
    echo "RELAYTEST_PG_URL=postgres://chatrelay@127.0.0.1:$port/chatrelay"
    ;;
stop)
    bin="$(pg_bin)" || exit 0
    if [ -f "$dir/data/PG_VERSION" ]; then
        as_user "$(pg_user)" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
