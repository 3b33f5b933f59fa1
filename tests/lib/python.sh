#!/usr/bin/env bash
# Sourced by the Python suites: make sure python3 with venv support exists, installing Debian's
# packages when they are missing (as root, or through sudo). Prints nothing on success.
ensure_python() {
    if command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        return 0
    fi
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing python3 and python3-venv from Debian's packages" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3 python3-venv >&2
}
