#!/usr/bin/env bash
# Create (or reuse) the venv with the pinned Delta Chat client and pytest. Prints the venv path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../lib/python.sh"
ensure_python
venv="${RELAY_VENV:-$HOME/.cache/chatrelay-venv}"
stamp="$venv/.requirements.sha"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
    echo "$want" > "$stamp"
fi
echo "$venv"
