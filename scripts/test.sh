#!/usr/bin/env bash
# The test suite, in two passes (README: "Set up and run the tests"):
#   1. everything, on the Cython codec and uvloop;
#   2. the layers that encode and decode frames or run on the event loop (codec, client,
#      DB-API and asyncio drivers, group commit, SQLAlchemy and Alembic, kvstore's cowsql://
#      backend and its async face, the demo's API) again on the pure-Python codec and stock asyncio
#      (COWSQLPY_PUREPYTHON=1 COWSQLPY_LOOP=asyncio). Pass 2 leaves out what neither switch
#      reaches (the mem:/raft:/etcd: kvstore backends, node and engine-guard tests) and the
#      long suites whose wire traffic pass 1 already covers on the same code paths (fusefs
#      mounts, the fault suite, fuzzers, the SQLAlchemy compliance suite), to stay in CI's
#      20 minutes. (The pure codec thus runs on stock asyncio, the Cython one on uvloop: each
#      switch is covered both ways, their fourth combination is not run.)
# Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
echo "== pass 1: Cython codec, uvloop"
"$PY" -m pytest -q --durations=15 "$@"  # the slowest tests: the 20-minute budget
echo "== pass 2: pure-Python codec, stock asyncio"
COWSQLPY_PUREPYTHON=1 COWSQLPY_LOOP=asyncio "$PY" -m pytest -q "$@" \
  tests/test_codec.py tests/test_codec_properties.py tests/test_implementations.py \
  tests/client tests/sql/test_aio.py tests/sql/test_sqlalchemy.py tests/sql/test_alembic.py \
  tests/test_batching.py tests/kvstore/test_kv_cowsql.py tests/kvstore/test_kv_aio.py \
  tests/demo/test_demo_api.py
