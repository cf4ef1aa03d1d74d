#!/usr/bin/env bash
# Sets up everything `make demo`, `make test` and `make bench` need on a fresh Debian machine:
# the virtual environment with the project and its test extras, and the Debian packages the
# integration tests start (installed only when missing, and only when we are root).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
APT_PACKAGES=(${ORDERTRAIL_APT_PACKAGES:-chromium prometheus prometheus-alertmanager})

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# The install compiles the tracer's hot path with mypyc (setup.py, docs/performance.md): that takes
# a C compiler and the Python headers. Without them it installs pure Python (and says so).
if [ -z "${ORDERTRAIL_PURE_PYTHON:-}" ] || [ "${ORDERTRAIL_PURE_PYTHON}" = 0 ]; then
  command -v cc >/dev/null || command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("include"))')
  [ -f "$include/Python.h" ] || missing+=(python3-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: missing Debian packages ${missing[*]} (run as root to install them)" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
echo "ordertrail: the tracer's hot path is $(.venv/bin/python -c 'import tracer.native as n; print(n.status())')"
