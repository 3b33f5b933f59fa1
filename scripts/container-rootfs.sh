#!/usr/bin/env bash
# The container image's root filesystem, as DIR/rootfs.tar, from a chatrelay binary:
#   scripts/container-rootfs.sh BINARY DIR
# deploy/Containerfile is `FROM scratch` plus `ADD rootfs.tar /` (a tar, because COPY would make
# /data root's: ADD keeps the owners in the archive), so the tests (tests/packaging) start the relay
# from exactly this tree with chroot where no OCI runtime works. Contents: the binary,
# passwd/group with the non-root user chatrelay (uid/gid 65532), /data (the volume), /tmp. A static
# (musl) binary needs nothing else; for a dynamic one (the tests use the debug build) its ELF
# interpreter and libraries are copied too, which is what a distroless "cc" base would hold.
set -euo pipefail
bin="${1:?usage: container-rootfs.sh BINARY DIR}"
out="${2:?usage: container-rootfs.sh BINARY DIR}"
[ -x "$bin" ] || { echo "container-rootfs.sh: $bin is not an executable" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "container-rootfs.sh: run as root (the tree has files of two owners)" >&2; exit 1; }
mkdir -p "$out"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
chmod 0755 "$dir"
install -d -m 0755 "$dir/usr/bin" "$dir/etc"
install -d -m 1777 "$dir/tmp"
install -d -m 0700 -o 65532 -g 65532 "$dir/data"
strip --strip-unneeded -o "$dir/usr/bin/chatrelay" "$bin" 2>/dev/null || cp "$bin" "$dir/usr/bin/chatrelay"
chmod 0755 "$dir/usr/bin/chatrelay"
printf 'root:x:0:0:root:/root:/sbin/nologin\nchatrelay:x:65532:65532:chatrelay:/data:/sbin/nologin\n' >"$dir/etc/passwd"
printf 'root:x:0:\nchatrelay:x:65532:\n' >"$dir/etc/group"
# hickory reads the resolver from here; a container runtime mounts its own over it.
printf 'nameserver 127.0.0.1\n' >"$dir/etc/resolv.conf"
if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
    interp="$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
    for lib in "$interp" $(ldd "$bin" | awk '$3 ~ /^\// { print $3 }'); do
        install -D -m 0755 "$lib" "$dir$lib"
    done
fi
tar --numeric-owner -C "$dir" -cf "$out/rootfs.tar" .
