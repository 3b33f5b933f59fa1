#!/usr/bin/env bash
# Install or upgrade chatrelay on a fresh Debian 12 VPS, as root:
#   deploy/install.sh chat.example.org [path/to/chatrelay]
# Creates the user, installs the binary, runs `chatrelay init` (first time only), installs the
# hardened unit and the journald privacy settings, starts the service and prints the DNS records.
# Running it again upgrades the binary and keeps config and data.
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

config=/etc/chatrelay/chatrelay.toml
data=/var/lib/chatrelay

id chatrelay >/dev/null 2>&1 || useradd --system --home-dir "$data" --no-create-home --shell /usr/sbin/nologin chatrelay

install -m 0755 "$bin" /usr/local/bin/chatrelay.new
mv -f /usr/local/bin/chatrelay.new /usr/local/bin/chatrelay

install -d -m 0755 /etc/chatrelay
if [ ! -e "$config" ]; then
    CHATRELAY_DATA_DIR="$data" /usr/local/bin/chatrelay init "$domain" --config "$config"
    sed -i "s|^data_dir = .*|data_dir = \"$data\"|" "$config"
fi
install -d -m 0700 "$data"
chown -R chatrelay:chatrelay "$data"

# PRIV-10: logs in RAM only, kept at most 3 days.
install -d -m 0755 /etc/systemd/journald.conf.d
cat > /etc/systemd/journald.conf.d/chatrelay.conf <<'CONF'
[Journal]
Storage=volatile
MaxRetentionSec=3d
CONF

install -m 0644 "$here/chatrelay.service" /etc/systemd/system/chatrelay.service
if [ -d /run/systemd/system ]; then
    systemctl restart systemd-journald || true
    systemctl daemon-reload
    systemctl enable chatrelay.service
    systemctl restart chatrelay.service
else
    echo "systemd is not running here; the unit is installed. Start the relay with:" >&2
    echo "  sudo -u chatrelay /usr/local/bin/chatrelay serve --config $config" >&2
fi

/usr/local/bin/chatrelay check-config --config "$config" >/dev/null
echo "chatrelay is running. Publish these DNS records:"
/usr/local/bin/chatrelay dns --config "$config" || true
