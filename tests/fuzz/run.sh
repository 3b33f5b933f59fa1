#!/usr/bin/env bash
# Fuzz smoke run for CI (issue 12): every cargo-fuzz target for a few seconds with the seed
# corpora from the fixtures. Long runs are done by hand (fuzz/smoke.sh, docs/robustness.md).
# Installs cargo-fuzz from crates.io when it is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo-fuzz" ]; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz >&2
fi
export PATH="$HOME/.cargo/bin:$PATH"
# The bound is against a hang, not a speed check: a cold fuzz build (release + ASan of the whole
# dependency tree) takes most of it on a busy 2-core machine.
exec timeout 2400 "$root/fuzz/smoke.sh" "${FUZZ_SECONDS:-10}"
