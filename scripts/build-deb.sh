#!/usr/bin/env bash
# Builds the Debian package from a chatrelay binary with dpkg-deb (no debian/ source tree and no
# cargo-deb: docs/decisions.md "Debian package").
#   scripts/build-deb.sh BINARY OUTDIR [DEBIAN_REVISION]
# Prints the path of the .deb. The binary may be the static musl one (scripts/release.sh) or a
# glibc one; for a dynamic binary the libc6 version it needs is read from its symbol versions.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:?usage: build-deb.sh BINARY OUTDIR [REVISION]}"
out="${2:?usage: build-deb.sh BINARY OUTDIR [REVISION]}"
rev="${3:-1}"
[ -x "$bin" ] || { echo "build-deb.sh: $bin is not an executable" >&2; exit 1; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-$rev"
case "$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')" in
    *X86-64*) arch=amd64 ;;
    *AArch64*) arch=arm64 ;;
    *) echo "build-deb.sh: unknown architecture of $bin" >&2; exit 1 ;;
esac

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
umask 022
# For a published package set DEB_MAINTAINER to a real contact; the default is a placeholder.
maintainer="${DEB_MAINTAINER:-chatrelay developers <chatrelay@example.org>}"
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/systemd/journald.conf.d" \
    "$stage/usr/share/doc/chatrelay/examples" "$stage/usr/share/man/man8"
# Debian ships binaries stripped (policy 10.1); a debug build shrinks from ~300 MB to ~30 MB.
strip --strip-unneeded --remove-section=.comment --remove-section=.note -o "$stage/usr/bin/chatrelay" "$bin"
chmod 0755 "$stage/usr/bin/chatrelay"
install -m 0644 deploy/chatrelay.service "$stage/lib/systemd/system/chatrelay.service"
# A conffile: an operator who wants the journal on disk edits it and dpkg keeps the edit.
install -m 0644 deploy/journald-chatrelay.conf "$stage/etc/systemd/journald.conf.d/chatrelay.conf"
install -m 0644 config/chatrelay.toml "$stage/usr/share/doc/chatrelay/examples/chatrelay.toml"
# Uncompressed: the unit's Documentation= names this file.
install -m 0644 docs/operator-guide.md "$stage/usr/share/doc/chatrelay/operator-guide.md"
cat >"$stage/usr/share/doc/chatrelay/copyright" <<'COPY'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: chatrelay

Files: *
Copyright: 2026 The chatrelay developers
License: MIT or Apache-2.0
 chatrelay may be used under the terms of either license, at your option.
 .
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
 .
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in all
 copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
 SOFTWARE.
COPY
date="$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
printf 'chatrelay (%s) unstable; urgency=medium\n\n  * Release %s; see CHANGELOG.md of the source.\n\n -- %s  %s\n' \
    "$version" "$version" "$maintainer" "$date" | gzip -9n >"$stage/usr/share/doc/chatrelay/changelog.Debian.gz"
cat <<'MAN' | gzip -9n >"$stage/usr/share/man/man8/chatrelay.8.gz"
.TH CHATRELAY 8 "" "chatrelay" "System Administration"
.SH NAME
chatrelay \- a chatmail relay in one binary
.SH SYNOPSIS
.B chatrelay
.I COMMAND
.RB [ \-\-config
.IR FILE ]
.SH DESCRIPTION
chatrelay is an SMTP, IMAP and HTTPS server for Delta Chat accounts that accepts only
end-to-end encrypted messages. The package's unit runs
.B chatrelay serve
as the user chatrelay with /etc/chatrelay/chatrelay.toml; data lives in /var/lib/chatrelay.
.SH COMMANDS
.TP
.B serve
run every listener; SIGTERM drains and exits, SIGHUP reloads the config.
.TP
.BI init " DOMAIN"
write a commented config, data_dir, the DKIM key and the keyed-hash secret.
.TP
.B check-config
validate the config and print the effective settings.
.TP
.B dns
print the DNS records to publish and check them.
.TP
.B healthcheck
ask the running relay's /healthz.
.TP
.BR accounts ", " queue ", " expire
manage accounts, the outbound queue and expiry.
.PP
.B chatrelay help
.I COMMAND
lists each command's options.
.SH FILES
/etc/chatrelay/chatrelay.toml, /var/lib/chatrelay, /usr/share/doc/chatrelay/operator-guide.md
MAN

# Dependencies: none for a static binary; else libc6 at least the newest GLIBC_x.y it uses.
depends="passwd"
if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
    glibc="$(readelf -W --dyn-syms "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
    depends="libc6 (>= $glibc), $depends"
    readelf -d "$bin" | grep -q 'libgcc_s' && depends="libgcc-s1, $depends"
fi
size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
cat >"$stage/DEBIAN/control" <<CTRL
Package: chatrelay
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $depends
Section: mail
Priority: optional
Description: chatmail relay for Delta Chat in one binary
 chatrelay is an SMTP, IMAP and HTTPS server for chatmail: accounts are
 created on first login, only end-to-end encrypted messages are accepted,
 messages are delivered with IMAP IDLE and push notifications and deleted
 after a retention period. One binary, one systemd unit, one data directory.
 .
 The first installation writes /etc/chatrelay/chatrelay.toml for the host's
 name (or CHATRELAY_DOMAIN) and the keys; the service is started by the
 operator after reviewing it.
CTRL
echo /etc/systemd/journald.conf.d/chatrelay.conf >"$stage/DEBIAN/conffiles"

cat >"$stage/DEBIAN/postinst" <<'SH'
#!/bin/sh
set -e
CONFIG=/etc/chatrelay/chatrelay.toml
DATA=/var/lib/chatrelay
if [ "$1" = configure ]; then
    if ! getent passwd chatrelay >/dev/null; then
        useradd --system --user-group --home-dir "$DATA" --no-create-home \
            --shell /usr/sbin/nologin --comment "chatrelay chatmail relay" chatrelay
    fi
    # First installation only ($2 is empty): the config and the keys. An upgrade or reinstall
    # never touches them, nor does an installation over a kept config (remove, then install).
    if [ -z "$2" ] && [ ! -e "$CONFIG" ]; then
        domain="${CHATRELAY_DOMAIN:-$(hostname --fqdn 2>/dev/null || hostname)}"
        # Every CHATRELAY_* variable is a config key for chatrelay itself; this one is not.
        unset CHATRELAY_DOMAIN
        if CHATRELAY_DATA_DIR="$DATA" chatrelay init "$domain" --config "$CONFIG" >/dev/null; then
            sed -i "s|^data_dir = .*|data_dir = \"$DATA\"|" "$CONFIG"
            chown root:chatrelay "$CONFIG"
            chmod 0640 "$CONFIG"
            # init made the directory and its key files just now; nothing else is in it.
            chown chatrelay:chatrelay "$DATA" "$DATA"/*
            echo "chatrelay: wrote $CONFIG for $domain. Review it, publish the records of"
            echo "  'chatrelay dns', then: systemctl enable --now chatrelay"
        else
            echo "chatrelay: 'chatrelay init' failed; run it by hand (docs/operator-guide.md)" >&2
        fi
    fi
    install -d -m 0700 -o chatrelay -g chatrelay "$DATA"
fi
# Not enabled on the first installation (the config needs review); an enabled service stays so.
if [ "$1" = configure ] || [ "$1" = abort-upgrade ] || [ "$1" = abort-deconfigure ] || [ "$1" = abort-remove ]; then
    if command -v deb-systemd-helper >/dev/null; then
        deb-systemd-helper unmask chatrelay.service >/dev/null || true
        if deb-systemd-helper --quiet was-enabled chatrelay.service; then
            deb-systemd-helper enable chatrelay.service >/dev/null || true
        else
            deb-systemd-helper update-state chatrelay.service >/dev/null || true
        fi
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        # The journald drop-in (PRIV-10) takes effect when journald starts again.
        [ -n "$2" ] || systemctl try-restart systemd-journald.service >/dev/null 2>&1 || true
        if [ -n "$2" ] && command -v deb-systemd-invoke >/dev/null; then
            deb-systemd-invoke try-restart chatrelay.service >/dev/null || true
        fi
    fi
fi
exit 0
SH
cat >"$stage/DEBIAN/prerm" <<'SH'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ] && command -v deb-systemd-invoke >/dev/null; then
    deb-systemd-invoke stop chatrelay.service >/dev/null || true
fi
exit 0
SH
cat >"$stage/DEBIAN/postrm" <<'SH'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = purge ]; then
    # Purge asks nothing: the config postinst wrote and all data (mailboxes, keys) go. The user
    # stays, as Debian does for system users (files elsewhere may still carry its id).
    rm -rf /etc/chatrelay /var/lib/chatrelay
    if command -v deb-systemd-helper >/dev/null; then
        deb-systemd-helper purge chatrelay.service >/dev/null || true
        deb-systemd-helper unmask chatrelay.service >/dev/null || true
    fi
fi
exit 0
SH
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
    | grep -v ' etc/' >"$stage/DEBIAN/md5sums"
mkdir -p "$out"
deb="$out/chatrelay_${version}_$arch.deb"
# The tests pass DEB_COMPRESSION="gzip -z1": the same package, made in a fraction of the time.
read -r -a z <<<"${DEB_COMPRESSION:-xz}"
dpkg-deb --root-owner-group "-Z${z[0]}" "${z[@]:1}" --build "$stage" "$deb" >/dev/null
echo "$deb"
