#!/usr/bin/env bash
# Installs what the project needs into ./.venv (or $VENV).
#   bootstrap.sh run   the server on SQLite: pure-Python wheels only, no C toolchain
#   bootstrap.sh test  everything: Debian packages (when root and missing), all extras
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
        return 1
    fi
    echo "bootstrap: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv
fi

if [ "$mode" = test ]; then
    apt_install pkg-config libmariadb-dev gcc python3-dev mariadb-server redis-server \
        nginx libnginx-mod-stream openssl procps
    # promtool and systemd-analyze check conf/ (tests/ops/test_conf.py)
    apt_install prometheus systemd
    # The browser tests drive Debian's chromium with Playwright (the web-test
    # extra); nothing ever runs `playwright install` or downloads a browser.
    apt_install chromium
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
if [ "$mode" = test ]; then
    "${pip[@]}" -e '.[dev]'
else
    "${pip[@]}" -e .
fi
