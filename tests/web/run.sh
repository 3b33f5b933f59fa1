#!/usr/bin/env bash
# Browser test of the onboarding page (issue 5, HTTP-5..7): a real headless Chromium renders
# https://127.0.0.1:PORT/ of a self-signed relay; the QR code is decoded from the screenshot and
# must be a dclogin: link for 127.0.0.1 with the relay's imaps/submissions ports and ic=3.
#
# Needs: $CARGO_TARGET_DIR/debug/chatrelay (cargo build -p relay). Installs Debian's chromium if
# /usr/bin/chromium is missing, and zxing-cpp + pillow in a venv. Bounded; exits non-zero on failure.
# Output: the screenshot stays in $OUT (default: tests/web/out/) for a human to look at.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/chatrelay"
OUT="${OUT:-$HERE/out}"
VENV="${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/chatrelay-web-venv}"
mkdir -p "$OUT"

fail() { echo "FAIL: $*" >&2; exit 1; }
[ -x "$BIN" ] || fail "no relay binary at $BIN (cargo build -p relay)"

if [ ! -x /usr/bin/chromium ]; then
    echo "installing chromium (apt)"
    timeout 900 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi
. "$ROOT/tests/lib/python.sh"
ensure_python
if ! "$VENV/bin/python" -c "import zxingcpp, PIL" 2>/dev/null; then
    echo "creating QR decoder venv in $VENV"
    python3 -m venv "$VENV"
    timeout 600 "$VENV/bin/pip" install -q zxing-cpp pillow
fi

# Ports below the ephemeral range (32768+), so no client connection on this machine holds them.
free_port() { python3 -c '
import random, socket
while True:
    p = random.randint(20000, 31999)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
    print(p)
    break'; }

TMP="$(mktemp -d)"
RELAY_PID=""
cleanup() {
    if [ -n "$RELAY_PID" ]; then kill -TERM "$RELAY_PID" 2>/dev/null || true; wait "$RELAY_PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

declare -A P
for name in smtp submission submissions imap imaps http https; do P[$name]=$(free_port); done
cat > "$TMP/chatrelay.toml" <<TOML
mail_domain = "chat.test"
data_dir = "$TMP/data"
max_load_1m = 100000.0
min_available_memory = "1M"
min_free_disk_space = "1M"
[delivery]
resolver = "127.0.0.1:9"
[listen]
smtp = "127.0.0.1:${P[smtp]}"
submission = "127.0.0.1:${P[submission]}"
submissions = "127.0.0.1:${P[submissions]}"
imap = "127.0.0.1:${P[imap]}"
imaps = "127.0.0.1:${P[imaps]}"
http = "127.0.0.1:${P[http]}"
https = "127.0.0.1:${P[https]}"
[tls]
mode = "self-signed"
[push]
notify_url = ""
TOML

"$BIN" serve --config "$TMP/chatrelay.toml" 2>"$OUT/relay.log" &
RELAY_PID=$!
for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',${P[https]}),0.2)" 2>/dev/null; then break; fi
    kill -0 "$RELAY_PID" 2>/dev/null || fail "relay exited: $(cat "$OUT/relay.log")"
    sleep 0.1
done

URL="https://127.0.0.1:${P[https]}/"
SHOT="$OUT/index.png"
rm -f "$SHOT"
echo "screenshot of $URL"
timeout 120 /usr/bin/chromium --headless --no-sandbox --disable-gpu --ignore-certificate-errors \
    --no-first-run --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$TMP/profile" --window-size=412,1100 \
    --screenshot="$SHOT" "$URL" >"$OUT/chromium.log" 2>&1 || fail "chromium failed: $(tail -5 "$OUT/chromium.log")"
[ -s "$SHOT" ] || fail "no screenshot"

"$VENV/bin/python" - "$SHOT" "${P[imaps]}" "${P[submissions]}" <<'PY'
import sys, urllib.parse
import zxingcpp
from PIL import Image
shot, imaps, subs = sys.argv[1], sys.argv[2], sys.argv[3]
codes = zxingcpp.read_barcodes(Image.open(shot))
qr = [c.text for c in codes if c.format == zxingcpp.BarcodeFormat.QRCode]
assert len(qr) == 1, f"expected one QR code in the screenshot, found {len(qr)}"
text = qr[0]
print("decoded:", text)
assert text.startswith("dclogin:"), text
addr, _, query = text[len("dclogin:"):].partition("/?")
local, _, domain = addr.partition("@")
assert domain == "chat.test" and len(local) == 9 and local.isalnum() and local == local.lower(), addr
q = dict(urllib.parse.parse_qsl(query, strict_parsing=True))
expect = {"ih": "127.0.0.1", "sh": "127.0.0.1", "ip": imaps, "sp": subs, "ic": "3", "is": "ssl", "ss": "ssl", "v": "1"}
for k, v in expect.items():
    assert q.get(k) == v, f"{k}={q.get(k)!r}, want {v!r}"
assert len(q.get("p", "")) >= 20 and q["p"].isalnum(), "password"
print("OK: QR decodes to a dclogin: link for 127.0.0.1 with the relay's ports and ic=3")
PY
# The other pages, for a human look (no decoding; chromium must still render them).
for page in info privacy delete; do
    timeout 120 /usr/bin/chromium --headless --no-sandbox --disable-gpu --ignore-certificate-errors \
        --no-first-run --disable-background-networking --disable-component-update --disable-sync \
        --hide-scrollbars --user-data-dir="$TMP/profile" --window-size=412,1400 \
        --screenshot="$OUT/$page.png" "$URL$page" >>"$OUT/chromium.log" 2>&1 || fail "chromium failed on /$page"
    [ -s "$OUT/$page.png" ] || fail "no screenshot of /$page"
done
echo "screenshots kept in $OUT"
