#!/usr/bin/env bash
# An S3-compatible server for the scale-out tests (issue 27): moto's server from PyPI, in a venv
# under ~/.cache (created once, reused after).
#   scripts/s3-server.sh start DIR   start it on a free loopback port; prints
#                                    `RELAYTEST_S3_ENDPOINT=http://127.0.0.1:PORT`
#   scripts/s3-server.sh stop DIR    stop it and remove DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
venv="${CHATRELAY_S3_VENV:-$HOME/.cache/chatrelay-s3-venv}"
# Pinned so a new moto cannot change the test engine under us.
want="moto[server]==5.2.5"

case "$cmd" in
start)
    . "$here/../tests/lib/python.sh"
    ensure_python
    if [ ! -x "$venv/bin/moto_server" ] || [ "$(cat "$venv/.want" 2>/dev/null)" != "$want" ]; then
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$want" >&2
        echo "$want" > "$venv/.want"
    fi
    mkdir -p "$dir"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    # No setsid: it forks when it is a group leader, and $! would then not be the server.
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/server.log" 2>&1 < /dev/null &
    echo $! > "$dir/pid"
    for _ in $(seq 1 100); do
        if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
            echo "RELAYTEST_S3_ENDPOINT=http://127.0.0.1:$port"
            exit 0
        fi
        sleep 0.1
    done
    echo "moto server did not start:" >&2
    cat "$dir/server.log" >&2
    exit 1
    ;;
stop)
    if [ -f "$dir/pid" ]; then kill "$(cat "$dir/pid")" 2>/dev/null || true; fi
    rm -rf "$dir"
    ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
