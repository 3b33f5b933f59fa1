#!/usr/bin/env bash
# Real Delta Chat clients against chatrelay (issue 9). Installs its venv on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$("$here/setup.sh")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatrelay-target}"
export RELAY_BIN="${RELAY_BIN:-$CARGO_TARGET_DIR/debug/chatrelay}"
export PATH="$venv/bin:$PATH"
cd "$here"
exec timeout 1200 "$venv/bin/python" -m pytest -x -q -s -p no:cacheprovider "$@"
