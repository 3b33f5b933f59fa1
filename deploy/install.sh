#!/usr/bin/env bash
# Install or upgrade chatrelay on a fresh Debian 12 VPS, as root:
#   deploy/install.sh chat.example.org [path/to/chatrelay]
# Creates the user, installs the binary, runs `chatrelay init` (first time only), installs the
# hardened unit and the journald privacy settings, starts the service and prints the DNS records.
# Running it again upgrades the binary and keeps config and data.
# INSTALL_ROOT=/some/dir installs into that tree instead of / (used by the project's tests).
set -euo pipefail

domain="${1:?usage: install.sh DOMAIN [BINARY]}"
here="$(cd "$(dirname "$0")" && pwd)"
bin="${2:-}"
if [ -z "$bin" ]; then
    for cand in "$here/chatrelay" "$here/../target/release/chatrelay" "${CARGO_TARGET_DIR:-$HOME/.cache/chatrelay-target}/release/chatrelay"; do
        [ -x "$cand" ] && bin="$cand" && break
    done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "install.sh: no chatrelay binary found; build with 'cargo build --release' or pass its path" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

root="${INSTALL_ROOT:-}"
config=/etc/chatrelay/chatrelay.toml
data=/var/lib/chatrelay

# The service user (no login, no home directory of its own beyond the data dir).
if [ -n "$root" ]; then
    grep -q '^chatrelay:' "$root/etc/passwd" 2>/dev/null ||
        useradd --prefix "$root" --system --home-dir "$data" --no-create-home --shell /usr/sbin/nologin chatrelay
    owner="$(awk -F: '$1 == "chatrelay" { print $3 ":" $4 }' "$root/etc/passwd")"
else
    id chatrelay >/dev/null 2>&1 || useradd --system --home-dir "$data" --no-create-home --shell /usr/sbin/nologin chatrelay
    owner="chatrelay:chatrelay"
fi

# Replace the binary atomically, so a running service keeps its old inode until restarted.
install -d -m 0755 "$root/usr/local/bin"
install -m 0755 "$bin" "$root/usr/local/bin/chatrelay.new"
mv -f "$root/usr/local/bin/chatrelay.new" "$root/usr/local/bin/chatrelay"

install -d -m 0755 "$root/etc/chatrelay"
if [ ! -e "$root$config" ]; then
    CHATRELAY_DATA_DIR="$root$data" "$root/usr/local/bin/chatrelay" init "$domain" --config "$root$config"
    sed -i "s|^data_dir = .*|data_dir = \"$data\"|" "$root$config"
fi
install -d -m 0700 "$root$data"
chown -R "$owner" "$root$data"

# PRIV-10: logs in RAM only, kept at most 3 days.
install -d -m 0755 "$root/etc/systemd/journald.conf.d"
install -m 0644 "$here/journald-chatrelay.conf" "$root/etc/systemd/journald.conf.d/chatrelay.conf"

install -d -m 0755 "$root/etc/systemd/system"
# The one unit in the tree names the packaged path /usr/bin; this install lives in /usr/local.
sed 's|^ExecStart=/usr/bin/chatrelay |ExecStart=/usr/local/bin/chatrelay |' "$here/chatrelay.service" \
    >"$root/etc/systemd/system/chatrelay.service"
chmod 0644 "$root/etc/systemd/system/chatrelay.service"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl restart systemd-journald || true
    systemctl daemon-reload
    systemctl enable chatrelay.service
    systemctl restart chatrelay.service
else
    echo "systemd is not running for this tree; the unit is installed. Start the relay with:" >&2
    echo "  systemctl enable --now chatrelay   (or: sudo -u chatrelay chatrelay serve --config $config)" >&2
fi

"$root/usr/local/bin/chatrelay" check-config --config "$root$config" >/dev/null
echo "chatrelay is installed. Publish these DNS records:"
CHATRELAY_DATA_DIR="$root$data" "$root/usr/local/bin/chatrelay" dns --config "$root$config" || true
