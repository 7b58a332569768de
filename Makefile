# Shortcuts for the README's two commands (which do not need make).
.PHONY: setup test demo lint bench clean

setup:
	./scripts/setup.sh

test: setup
	.venv/bin/python -m pytest -q

demo: setup
	.venv/bin/python -m demo.local

lint:
	.venv/bin/ruff check cowsqlpy kvstore demo tests bench
	.venv/bin/mypy

bench: setup
	.venv/bin/python bench/run_all.py

clean:
	rm -rf build .venv cowsqlpy/*.so cowsqlpy/_engine.c native/_ccodec.c
