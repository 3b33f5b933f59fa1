#!/usr/bin/env bash
# Release artifacts (issue 29): a static Linux binary per architecture with its SHA-256, and the
# Debian package built from the x86_64 one.
#   scripts/release.sh [--out DIR] [--no-deb] [TARGET...]
# TARGETs default to x86_64-unknown-linux-musl and aarch64-unknown-linux-musl. A target whose Rust
# standard library or C cross compiler is missing is skipped with a message (rustup target add
# TARGET; apt-get install musl-tools for x86_64; an aarch64 musl C compiler for aarch64), so the
# script does what the toolchain allows and says what it left out. A skipped default musl target
# falls back to the glibc one (dynamic; for aarch64 `gcc-aarch64-linux-gnu` from Debian), whose
# minimum glibc is printed and written beside it. Output in DIR (default dist/):
#   chatrelay-VERSION-ARCH-linux-LIBC, .sha256 beside each, chatrelay_VERSION-1_DEBARCH.deb,
#   SHA256SUMS
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
deb=1
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --no-deb) deb=0; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
fallback=0
[ ${#targets[@]} -gt 0 ] || { targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl); fallback=1; }

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chatrelay-target}"
mkdir -p "$out"
built=()
skipped=()

# The C compiler for a target's C parts (ring, the bundled SQLite); empty when none is installed.
c_compiler() {
    case "$1" in
        x86_64-unknown-linux-musl) for c in x86_64-linux-musl-gcc musl-gcc; do command -v "$c" && return; done ;;
        aarch64-unknown-linux-musl) for c in aarch64-linux-musl-gcc; do command -v "$c" && return; done ;;
        x86_64-unknown-linux-gnu) command -v cc && return ;;
        aarch64-unknown-linux-gnu) command -v aarch64-linux-gnu-gcc && return ;;
    esac
    return 0
}

i=0
while [ $i -lt ${#targets[@]} ]; do
    t="${targets[$i]}"
    i=$((i + 1))
    arch="${t%%-*}"
    why=""
    cc="$(c_compiler "$t")"
    if ! rustup target list --installed 2>/dev/null | grep -qx "$t"; then
        why="Rust target not installed: rustup target add $t"
    elif [ -z "$cc" ]; then
        why="no C compiler for it"
    fi
    if [ -n "$why" ]; then
        skipped+=("$t ($why)")
        [ "$fallback" = 1 ] && [ "${t##*-}" = musl ] && targets+=("${t%-musl}-gnu")
        continue
    fi
    tu="$(echo "$t" | tr 'a-z-' 'A-Z_')"
    tl="$(echo "$t" | tr '-' '_')"
    echo "== building $t with $cc"
    # The C compiler for the C parts; the linker only for a glibc cross build (musl-gcc as the
    # linker would make a dynamic musl binary; rustc links musl targets statically by itself).
    linker=()
    case "$t" in *-gnu) [ "$arch" = "$(uname -m)" ] || linker=("CARGO_TARGET_${tu}_LINKER=$cc") ;; esac
    env "CC_$tl=$cc" "${linker[@]}" cargo build --release --locked -p relay --bin chatrelay --target "$t"
    bin="$CARGO_TARGET_DIR/$t/release/chatrelay"
    libc="${t##*-}"
    name="chatrelay-$version-$arch-linux-$libc"
    cp "$bin" "$out/$name"
    # Line tables stay in the build dir; the artifact carries symbols only (smaller download).
    stripper=strip
    command -v "$arch-linux-gnu-strip" >/dev/null && stripper="$arch-linux-gnu-strip"
    "$stripper" --strip-debug "$out/$name" 2>/dev/null || true
    # A musl artifact must have no ELF interpreter: it runs on any Linux of the same architecture.
    if [ "$libc" = musl ] && readelf -l "$out/$name" | grep -q 'Requesting program interpreter'; then
        echo "release.sh: $out/$name is not static" >&2
        exit 1
    fi
    if [ "$libc" = gnu ]; then
        glibc="$(readelf -W --dyn-syms "$out/$name" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
        echo "$name needs glibc $glibc or newer" | tee "$out/$name.glibc"
    fi
    # Smoke test: the artifact starts (a foreign architecture under qemu-user where installed).
    run=("$out/$name")
    if [ "$arch" != "$(uname -m)" ]; then
        run=()
        command -v "qemu-$arch" >/dev/null && run=("qemu-$arch" -L "/usr/$arch-linux-gnu" "$out/$name")
    fi
    if [ ${#run[@]} -gt 0 ]; then
        "${run[@]}" --version || { echo "release.sh: $out/$name does not start" >&2; exit 1; }
    fi
    (cd "$out" && sha256sum "$name" >"$name.sha256")
    built+=("$out/$name")
    if [ "$deb" = 1 ] && { [ "$arch" = x86_64 ] || [ "$libc" = musl ]; }; then
        scripts/build-deb.sh "$out/$name" "$out"
    fi
done

(cd "$out" && rm -f SHA256SUMS && for f in chatrelay-* chatrelay_*.deb; do
    [ -f "$f" ] && case "$f" in *.sha256 | *.glibc) ;; *) sha256sum "$f" >>SHA256SUMS ;; esac
done) || true
for b in "${built[@]}"; do echo "built: $b"; done
for s in "${skipped[@]}"; do echo "skipped: $s"; done
[ ${#built[@]} -gt 0 ] || { echo "release.sh: nothing built" >&2; exit 1; }
