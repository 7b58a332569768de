#!/usr/bin/env bash
# Idempotent set-up on Debian 12: system packages, .venv, the project built with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential pkg-config python3-dev python3-venv   # C toolchain for the extensions
  libdqlite-dev libdqlite0 libsqlite3-dev               # the engine
  go-dqlite                                              # Canonical's dqlite, dqlite-demo, dqlite-benchmark (interop, benchmarks)
  etcd-server etcd-client                               # kvstore etcd backend and benchmark anchor
  wrk                                                    # HTTP benchmark
  chromium                                               # demo status page test
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q -e '.[test]'
# Fail here, not in the tests, if either native module did not build.
.venv/bin/python -c 'import cowsqlpy._engine, cowsqlpy._ccodec; print("cowsqlpy: engine binding and Cython codec built")'
