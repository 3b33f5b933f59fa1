#!/usr/bin/env bash
# P1 with real Delta Chat clients: make sure the interop venv exists (tests/interop/setup.sh,
# pinned deltachat-rpc-server/-client), then run bench/p1/p1.py with the given arguments.
# Exit 3 (and one line on stderr) when the venv cannot be set up, so callers can skip P1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
if ! venv="$(timeout 600 "$repo/tests/interop/setup.sh")" || [ ! -x "$venv/bin/deltachat-rpc-server" ]; then
    echo "P1 skipped: the Delta Chat venv (tests/interop/setup.sh) could not be set up" >&2
    exit 3
fi
export PATH="$venv/bin:$PATH"
exec timeout -k 10 "${P1_TIMEOUT:-900}" "$venv/bin/python" "$here/p1.py" "$@"
