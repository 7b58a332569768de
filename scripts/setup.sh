#!/usr/bin/env bash
# Idempotent set-up on Debian 12: system packages, .venv, the project built with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

# From bookworm-backports: the engine and go-cowsql's reference tools.
BACKPORTS_PACKAGES=(
  libcowsql-dev libcowsql0 libraft0                     # the engine: cowsql 1.15 with raft 0.22
  go-cowsql                                             # cowsql shell, cowsql-demo, cowsql-benchmark (interop, benchmarks)
)
APT_PACKAGES=(
  build-essential pkg-config python3-dev python3-venv   # C toolchain for the extensions
  libsqlite3-dev
  libssl-dev                                             # OpenSSL headers: the fronts' TLS Raft pipes in C (native/tls_relay.c)
  go-dqlite                                              # Canonical's dqlite, dqlite-demo (legacy 1.11.1 interop anchor)
  etcd-server etcd-client                               # kvstore etcd backend and benchmark anchor
  wrk                                                    # HTTP benchmark
  chromium                                               # demo status page test
  fuse3 fio rsync sqlite3 git                            # fusefs: mounts, its benchmark, everyday tools in tests
)

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing_from() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
  done
}

# bookworm-backports, from the same mirror as the machine's own bookworm sources (a local
# mirror keeps working), unless some apt source already names it.
enable_backports() {
  if grep -rqs -E '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return 1
  fi
  local mirror
  mirror=$(grep -rhs -E '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | awk '{print $2}' | grep -v -- '-security' | head -n1)
  if [ -z "$mirror" ]; then
    mirror=$(grep -hs -E '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
               | grep -v -- '-security' | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' | head -n1)
  fi
  if [ -z "$mirror" ]; then
    echo "setup.sh: cannot find the Debian mirror in /etc/apt; add bookworm-backports by hand" >&2
    exit 1
  fi
  echo "setup.sh: enabling bookworm-backports from $mirror"
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
}

mapfile -t missing_bpo < <(missing_from "${BACKPORTS_PACKAGES[@]}")
mapfile -t missing < <(missing_from "${APT_PACKAGES[@]}")
if ((${#missing_bpo[@]} + ${#missing[@]})); then
  enable_backports || true
  $SUDO apt-get update -q
  if ((${#missing_bpo[@]})); then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
      -t bookworm-backports "${missing_bpo[@]}"
  fi
  if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q -e '.[test]'
# Fail here, not in the tests, if either native module did not build.
.venv/bin/python -c 'import cowsqlpy._engine, cowsqlpy._ccodec; print("cowsqlpy: engine binding and Cython codec built")'
