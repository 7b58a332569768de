# Shortcuts for the README's two commands (which do not need make).
.PHONY: setup test demo lint bench clean

setup:
	./scripts/setup.sh

test: setup
	./scripts/test.sh

demo: setup
	.venv/bin/python -m demo.local

lint:
	.venv/bin/ruff check cowsqlpy kvstore demo tests bench
	.venv/bin/mypy

# The recorded benchmarks (docs/benchmarks.md), one after the other: ~25 minutes.
bench: setup
	.venv/bin/python bench/bench_codec.py
	.venv/bin/python bench/bench_client.py --duration 8
	.venv/bin/python bench/bench_failover.py --runs 10
	.venv/bin/python bench/bench_kv.py --duration 3
	.venv/bin/python bench/bench_demo.py --duration 5 --failover-runs 5

clean:
	rm -rf build .venv cowsqlpy/*.so cowsqlpy/_engine.c native/_ccodec.c
