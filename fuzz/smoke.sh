#!/usr/bin/env bash
# Run every fuzz target for N seconds each (default 20), sequentially, with seed corpora made
# from relay/tests/fixtures. By hand only (not in CI). Needs cargo-fuzz (`cargo install
# cargo-fuzz`) and a nightly toolchain, or RUSTC_BOOTSTRAP=1 with stable.
#   fuzz/smoke.sh            # 20 s per target
#   fuzz/smoke.sh 180        # 3 min per target
#   TARGETS="filter" fuzz/smoke.sh 60
# Crashes land in fuzz/artifacts/<target>/; the script exits non-zero if any target crashed.
set -euo pipefail
SECS="${1:-20}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
TARGETS="${TARGETS:-smtp_input filter filter_differential config http_forms imap_input stun}"
JOBS="${JOBS:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/target-fuzz}"
TOOLCHAIN=""
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then TOOLCHAIN="+nightly"; else export RUSTC_BOOTSTRAP=1; fi

seed() {
  local t="$1" dir="$HERE/corpus/$1"
  mkdir -p "$dir"
  [ -n "$(ls -A "$dir" 2>/dev/null)" ] && return 0
  local fx="$ROOT/relay/tests/fixtures/filter"
  case "$t" in
    filter) cp "$fx"/*.eml "$dir"/ ;;
    filter_differential)
      # Whole messages (first byte even) and splices into the encrypted fixture (odd).
      for f in "$fx"/*.eml; do { printf '\0'; cat "$f"; } > "$dir/$(basename "$f")"; done
      printf '\1\3Content-Type: text/plain\r\n' > "$dir/splice-ct"
      printf '\1\1From: <victim@chat.test>\r\n' > "$dir/splice-from"
      printf '\1\x14-----END PGP MESSAGE-------b0undary4fixture--\r\n' > "$dir/splice-midline" ;;
    imap_input)
      cp "$fx"/*.eml "$dir"/
      printf 'a UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO)])\r\n' > "$dir/fetch"
      printf 'b SETMETADATA INBOX (/private/devicetoken {5}\r\nabcde)\r\n' > "$dir/meta"
      printf 'c APPEND INBOX (\\Seen) {3+}\r\nabc\r\n' > "$dir/append"
      printf 'd SEARCH OR UNSEEN FROM "x" NOT LARGER 100\r\n' > "$dir/search" ;;
    smtp_input)
      for f in "$fx"/*.eml; do
        { printf 'EHLO client.example\r\nMAIL FROM:<alice@fixture.test> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<bob@chat.test>\r\nDATA\r\n\r\n'
          sed 's/$/\r/' "$f"; printf '.\r\n'; } > "$dir/$(basename "$f")"
      done
      printf 'AUTH PLAIN AGFAYgBj\r\nVRFY x\r\nRCPT TO:<@a,@b:c@d>\r\nMAIL FROM:<"q"@x>\r\n\r\n..\r\n.\r\n' > "$dir/cmds" ;;
    config)
      for f in "$ROOT"/config/*.toml; do [ -f "$f" ] && cp "$f" "$dir/"; done
      printf 'mail_domain = "chat.test"\nmax_message_size = "30M"\ndelete_mails_after = "20d"\n[listen]\nsmtp = ["[::]:25"]\n' > "$dir/min.toml" ;;
    stun)
      # A Binding request, and an Allocate with USERNAME, REQUESTED-TRANSPORT and MESSAGE-INTEGRITY.
      printf '\x00\x01\x00\x00\x21\x12\xa4\x42fuzzfuzzfuzz' > "$dir/binding"
      printf '\x00\x03\x00\x2c\x21\x12\xa4\x42fuzzfuzzfuzz\x00\x06\x00\x05alice\x00\x00\x00\x00\x19\x00\x04\x11\x00\x00\x00\x00\x08\x00\x14aaaaaaaaaaaaaaaaaaaa' > "$dir/allocate" ;;
    http_forms)
      printf '\0email=a%%40b.c&password=x+y' > "$dir/form"
      printf '\1{"email":"a@b.c","password":"p"}' > "$dir/json"
      printf '\2email=%%ff%%fe&password' > "$dir/bad" ;;
  esac
}

cd "$ROOT"
cargo $TOOLCHAIN fuzz build --fuzz-dir "$HERE" >/dev/null
status=0
for t in $TARGETS; do
  seed "$t"
  echo "== $t: ${SECS}s"
  if ! cargo $TOOLCHAIN fuzz run --fuzz-dir "$HERE" "$t" "$HERE/corpus/$t" -- \
      -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -jobs="$JOBS" -print_final_stats=1 2>&1 \
      | grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|Test unit written)|panicked'; then
    :
  fi
  if [ -n "$(ls -A "$HERE/artifacts/$t" 2>/dev/null)" ]; then
    echo "!! $t: artifacts in fuzz/artifacts/$t"; status=1
  fi
done
exit $status
