#!/usr/bin/env bash
# Install the system packages the appliance needs, only when they are missing.
# Debian/Ubuntu: uses apt-get (with sudo when not root). Safe to run repeatedly.
set -euo pipefail
PY="${1:-python3}"
missing=()
if ! ldconfig -p 2>/dev/null | grep -q 'libzbar\.so\.0'; then missing+=(libzbar0); fi
# the central's PostgreSQL tests run initdb/pg_ctl from the Debian package (not on PATH)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then missing+=(postgresql); fi
# the ops room's browser tests drive Debian's chromium (Playwright's own download cannot work offline)
if [ ! -x /usr/bin/chromium ]; then missing+=(chromium); fi
# the service tests check the lane's systemd unit with systemd-analyze verify (Debian's systemd package)
if ! command -v systemd-analyze >/dev/null 2>&1; then missing+=(systemd); fi
if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    missing+=("python${ver}-venv")
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing system packages: ${missing[*]} and no apt-get here; install them with your package manager" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "error: need root to install ${missing[*]}: run 'sudo apt-get install ${missing[*]}'" >&2; exit 1
    fi
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
