#!/usr/bin/env bash
# Packaging suite (issue 29): `chatrelay --version`, the Debian package (lintian, installed into a
# throwaway Debian 12 root, check-config there, reinstall keeps the config, purge asks nothing and
# removes it), and the container root filesystem (built as deploy/Containerfile does, also by
# podman where it works; the relay started from it as the non-root user answers /healthz 200).
# Packages the already-built debug binary (stripped), so no release build runs here; the release
# build itself is scripts/release.sh. Needs root for chroot; skips with a message where a tool
# cannot be had. Tools: scripts/packaging-tools.sh; the Debian root: scripts/debian-root.sh (cached).
set -uo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatrelay-target}"
passed=0 failed=0 skipped=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
skip() { echo "SKIPPED: $*"; skipped=$((skipped + 1)); }
finish() {
    echo "packaging: $passed passed, $failed failed, $skipped skipped"
    [ "$failed" = 0 ]
    exit
}

# PACKAGING_BIN=path tests another binary (e.g. a release build) without building.
bin="${PACKAGING_BIN:-$CARGO_TARGET_DIR/debug/chatrelay}"
[ -n "${PACKAGING_BIN:-}" ] || cargo build -q --locked -p relay --bin chatrelay || { bad "cargo build"; finish; }
work="$(mktemp -d)"
relay_pid=""
cleanup() {
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
is_root=0
[ "$(id -u)" = 0 ] && is_root=1
[ "$is_root" = 1 ] && { scripts/packaging-tools.sh || echo "packaging: some tools could not be installed"; }

# --- version and git revision -----------------------------------------------------------------
want_version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
got="$("$bin" --version)"
rev="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [ "$got" = "chatrelay $want_version ($rev)" ]; then ok "--version: $got"; else bad "--version: '$got', want 'chatrelay $want_version ($rev)'"; fi

# --- one unit file in the tree ----------------------------------------------------------------
units="$(git ls-files '*.service')"
if [ "$units" = "deploy/chatrelay.service" ]; then ok "one unit file: $units"; else bad "unit files: $units"; fi

# --- release.sh without a build: a target the toolchain lacks is skipped by name, and a run that
# builds nothing fails (the release build itself takes minutes and is not run here).
rel="$(scripts/release.sh --out "$work/rel" riscv64gc-unknown-linux-musl 2>&1)"
rc=$?
if [ "$rc" != 0 ] && grep -q '^skipped: riscv64gc-unknown-linux-musl (Rust target not installed' <<<"$rel"; then
    ok "release.sh skips a target the toolchain lacks, saying so"
else
    bad "release.sh with a missing target: rc $rc: $rel"
fi

# --- Debian package ---------------------------------------------------------------------------
t0=$SECONDS
if ! deb="$(DEB_COMPRESSION="gzip -z1" scripts/build-deb.sh "$bin" "$work/deb")"; then
    bad "build-deb.sh"
    finish
fi
contents="$(dpkg-deb -c "$deb" | awk '{ print $6 }')"
missing=""
for f in ./usr/bin/chatrelay ./lib/systemd/system/chatrelay.service ./etc/systemd/journald.conf.d/chatrelay.conf \
    ./usr/share/doc/chatrelay/copyright ./usr/share/man/man8/chatrelay.8.gz; do
    grep -qx "$f" <<<"$contents" || missing="$missing $f"
done
if [ -z "$missing" ] && cmp -s <(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./lib/systemd/system/chatrelay.service) deploy/chatrelay.service; then
    ok "package holds binary, the unit (as in deploy/), journald drop-in, docs ($((SECONDS - t0)) s)"
else
    bad "package contents: missing$missing or the unit differs from deploy/chatrelay.service"
fi
if [ "$(dpkg-deb -f "$deb" Package Architecture | tr '\n' ' ')" = "Package: chatrelay Architecture: amd64 " ] &&
    dpkg-deb -I "$deb" conffiles | grep -qx /etc/systemd/journald.conf.d/chatrelay.conf; then
    ok "control fields and conffiles"
else
    bad "control: $(dpkg-deb -f "$deb")"
fi

# lintian: every tag it reports must be one listed (and explained in docs/operator-guide.md).
if command -v lintian >/dev/null; then
    t0=$SECONDS
    tags="$(lintian --allow-root --no-tag-display-limit "$deb" 2>&1 | sed -n 's/^[EWIPX]: chatrelay[^:]*: \([^ ]*\).*/\1/p' | sort -u)"
    allowed="$(sed -e 's/#.*//' -e '/^ *$/d' tests/packaging/lintian-allowed.txt | awk '{ print $1 }')"
    unexpected="$(comm -23 <(echo "$tags" | sed '/^$/d') <(echo "$allowed" | sort -u))"
    if [ -z "$unexpected" ]; then
        ok "lintian: no tag beyond the explained ones ($(echo "$tags" | grep -c .) reported, $((SECONDS - t0)) s)"
    else
        bad "lintian tags not explained: $unexpected"
        lintian --allow-root "$deb" 2>&1 | head -40
    fi
else
    skip "lintian is not installed"
fi

# Installed into a throwaway Debian 12 root: an overlay on the cached debootstrap root.
if [ "$is_root" != 1 ]; then
    skip "install into a Debian root: needs root"
elif ! droot="$(scripts/debian-root.sh)"; then
    skip "install into a Debian root: no Debian root could be made (debootstrap)"
else
    t0=$SECONDS
    cp "$deb" "$work/chatrelay.deb"
    # In a private mount namespace: the overlay and /proc vanish with it, the cache stays as it is.
    out="$(unshare --mount --pid --fork bash -s "$droot" "$work" <<'IN' 2>&1
set -eu
droot="$1" work="$2"
mkdir -p "$work/upper" "$work/ow" "$work/root"
mount --make-rprivate /
# A copy where overlayfs cannot be mounted (slower, same result).
mount -t overlay overlay -o "lowerdir=$droot,upperdir=$work/upper,workdir=$work/ow" "$work/root" 2>/dev/null ||
    cp -a "$droot/." "$work/root/"
r="$work/root"
mount -t proc proc "$r/proc"
cp "$work/chatrelay.deb" "$r/tmp/"
inroot() { chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@" </dev/null; }
inroot env CHATRELAY_DOMAIN=chat.example.net dpkg -i /tmp/chatrelay.deb
echo "STEP installed"
inroot getent passwd chatrelay | grep -q ':/var/lib/chatrelay:/usr/sbin/nologin$' && echo "STEP user"
inroot chatrelay check-config --config /etc/chatrelay/chatrelay.toml | grep -q '^mail_domain = "chat.example.net"' && echo "STEP check-config"
[ "$(inroot stat -c '%U:%G %a' /etc/chatrelay/chatrelay.toml)" = "root:chatrelay 640" ] &&
    [ "$(inroot stat -c '%U:%G %a' /var/lib/chatrelay)" = "chatrelay:chatrelay 700" ] &&
    [ -f "$r/var/lib/chatrelay/dkim.pem" ] && echo "STEP owners"
# The service user can read its config (the unit runs check-config's code path at start).
inroot setpriv --reuid chatrelay --regid chatrelay --clear-groups chatrelay check-config --config /etc/chatrelay/chatrelay.toml >/dev/null && echo "STEP user-reads-config"
[ ! -e "$r/etc/systemd/system/multi-user.target.wants/chatrelay.service" ] && echo "STEP not-enabled"
# Reinstall (postinst with the old version): the edited config and the keys stay.
echo "# operator edit" >>"$r/etc/chatrelay/chatrelay.toml"
sum="$(md5sum <"$r/var/lib/chatrelay/dkim.pem")"
inroot env CHATRELAY_DOMAIN=other.example.net dpkg -i /tmp/chatrelay.deb
grep -q '^# operator edit' "$r/etc/chatrelay/chatrelay.toml" && [ "$sum" = "$(md5sum <"$r/var/lib/chatrelay/dkim.pem")" ] &&
    grep -q 'chat.example.net' "$r/etc/chatrelay/chatrelay.toml" && echo "STEP upgrade-keeps"
# Purge with no terminal and no answers: config, data and the conffile are gone.
inroot dpkg --purge chatrelay
[ ! -e "$r/etc/chatrelay" ] && [ ! -e "$r/var/lib/chatrelay" ] && [ ! -e "$r/usr/bin/chatrelay" ] &&
    [ ! -e "$r/etc/systemd/journald.conf.d/chatrelay.conf" ] && echo "STEP purged"
IN
)"
    steps="$(sed -n 's/^STEP //p' <<<"$out" | tr '\n' ' ')"
    if [ "$steps" = "installed user check-config owners user-reads-config not-enabled upgrade-keeps purged " ]; then
        ok "deb in a Debian 12 root: installs, check-config passes, reinstall keeps config and keys, purge clean ($((SECONDS - t0)) s)"
    else
        bad "deb in a Debian 12 root: steps reached: $steps"
        echo "$out" | tail -30
    fi
fi

# --- container image / root filesystem --------------------------------------------------------
# The compose example publishes exactly the ports the image exposes.
exposed="$(sed -n 's/^EXPOSE //p' deploy/Containerfile | tr ' ' '\n' | sort -n | tr '\n' ' ')"
published="$(sed -n 's/^ *- "\([0-9]*\):\1".*/\1/p' deploy/compose.yaml | sort -n | tr '\n' ' ')"
if [ "$exposed" = "25 80 143 443 465 587 993 " ] && [ "$published" = "$exposed" ]; then
    ok "Containerfile exposes and compose.yaml publishes: $exposed"
else
    bad "ports: EXPOSE '$exposed', compose '$published'"
fi
t0=$SECONDS
ctx="$work/container"
rootfs="$work/rootfs"
if [ "$is_root" = 1 ] && scripts/container-rootfs.sh "$bin" "$ctx" && mkdir -p "$rootfs" && tar -xf "$ctx/rootfs.tar" -C "$rootfs"; then
    ok "container root filesystem built ($(du -sh "$ctx/rootfs.tar" | cut -f1))"
else
    bad "container-rootfs.sh"
fi
if [ "$is_root" = 1 ] && command -v podman >/dev/null &&
    podman build -q --format docker -f deploy/Containerfile -t localhost/chatrelay-test:latest "$ctx" >"$work/podman.log" 2>&1; then
    # The image is built by an OCI tool; its own filesystem is what the relay starts from below
    # (running it with podman fails in sandboxes without rlimit rights, chroot works there too).
    cid="$(podman create --no-healthcheck localhost/chatrelay-test:latest)"
    mkdir -p "$work/image"
    podman export "$cid" | tar -xf - -C "$work/image"
    podman rm -f "$cid" >/dev/null
    cfg="$(podman image inspect localhost/chatrelay-test:latest --format '{{.Config.User}} {{json .Config.ExposedPorts}} {{json .Config.Volumes}} {{json .HealthCheck.Test}}')"
    podman rmi -f localhost/chatrelay-test:latest >/dev/null 2>&1
    if grep -q '^65532:65532 ' <<<"$cfg" && grep -q '"/data"' <<<"$cfg" && grep -q 'healthcheck' <<<"$cfg" &&
        [ "$(grep -o '"[0-9]*/tcp"' <<<"$cfg" | tr -dc '0-9\n' | sort -n | tr '\n' ' ')" = "25 80 143 443 465 587 993 " ]; then
        ok "podman builds the image: non-root, /data volume, all ports, healthcheck ($cfg)"
        rootfs="$work/image"
    else
        bad "image config: $cfg"
    fi
else
    skip "podman build (not root, not installed or not working here: $(tail -1 "$work/podman.log" 2>/dev/null)); starting the same tree from container-rootfs.sh"
fi
if [ "$is_root" != 1 ]; then
    skip "container start: chroot needs root"
else
    base=$((20000 + RANDOM % 30000))
    export CHATRELAY_DATA_DIR=/data RUST_LOG=warn CHATRELAY_TLS__MODE=self-signed CHATRELAY_DELIVERY__RESOLVER=127.0.0.1:9
    i=0
    for l in smtp submission submissions imap imaps http https metrics; do
        export "CHATRELAY_LISTEN__$(echo $l | tr a-z A-Z)=127.0.0.1:$((base + i))"
        i=$((i + 1))
    done
    https=$((base + 6)) metrics=$((base + 7))
    run() { chroot --userspec=65532:65532 "$rootfs" /usr/bin/chatrelay "$@"; }
    if run init chat.example.net --config /data/chatrelay.toml >/dev/null; then
        # chroot itself in the background (not the function): $! is then the relay's own pid.
        chroot --userspec=65532:65532 "$rootfs" /usr/bin/chatrelay serve --config /data/chatrelay.toml 2>"$work/serve.log" &
        relay_pid=$!
        code=000
        for _ in $(seq 1 100); do
            code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$metrics/healthz" || true)"
            [ "$code" = 200 ] && break
            sleep 0.2
        done
        user="$(ps -o uid= -p "$relay_pid" 2>/dev/null | tr -d ' ')"
        if [ "$code" = 200 ] && [ "$user" = 65532 ]; then ok "relay from the container tree runs as 65532 and /healthz answers 200 ($((SECONDS - t0)) s)"; else bad "container relay: /healthz $code, user $user; $(tail -5 "$work/serve.log")"; fi
        if run healthcheck --config /data/chatrelay.toml >/dev/null &&
            CHATRELAY_LISTEN__METRICS='[]' run healthcheck --config /data/chatrelay.toml >/dev/null; then
            ok "the image's HEALTHCHECK command passes (metrics listener, and HTTPS when there is none)"
        else
            bad "chatrelay healthcheck failed"
        fi
        kill -TERM "$relay_pid"
        wait "$relay_pid" 2>/dev/null
        relay_pid=""
        if CHATRELAY_LISTEN__METRICS="127.0.0.1:$metrics" run healthcheck --config /data/chatrelay.toml >/dev/null 2>&1; then bad "healthcheck passes with the relay stopped"; else ok "healthcheck fails once the relay is stopped"; fi
    else
        bad "chatrelay init in the container tree"
    fi
fi
finish
