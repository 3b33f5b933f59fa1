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

fail() { echo "FAIL: $*" >&2; [ -n "${work:-}" ] && tail -n 40 "$work/relay.log" >&2; exit 1; }
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

. "$ROOT/tests/lib/relay.sh"
relay_start "$BIN" chat.test "" "[delivery]
resolver = \"127.0.0.1:9\"
[push]
notify_url = \"\""
https_port="${ports[6]}"
for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$https_port") 2>/dev/null && break
    sleep 0.1
done

URL="https://127.0.0.1:$https_port/"
SHOT="$OUT/index.png"
rm -f "$SHOT"
echo "screenshot of $URL"
timeout 120 /usr/bin/chromium --headless --no-sandbox --disable-gpu --ignore-certificate-errors \
    --no-first-run --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$work/profile" --window-size=412,1100 \
    --screenshot="$SHOT" "$URL" >"$OUT/chromium.log" 2>&1 || fail "chromium failed: $(tail -5 "$OUT/chromium.log")"
[ -s "$SHOT" ] || fail "no screenshot"

"$VENV/bin/python" - "$SHOT" "${ports[4]}" "${ports[2]}" <<'PY'
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
        --hide-scrollbars --user-data-dir="$work/profile" --window-size=412,1400 \
        --screenshot="$OUT/$page.png" "$URL$page" >>"$OUT/chromium.log" 2>&1 || fail "chromium failed on /$page"
    [ -s "$OUT/$page.png" ] || fail "no screenshot of /$page"
done
cp "$work/relay.log" "$OUT/relay.log"
echo "screenshots kept in $OUT"
