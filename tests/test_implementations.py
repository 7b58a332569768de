"""The switches the suite's second pass uses take effect: COWSQLPY_PUREPYTHON=1 loads the
pure-Python codec, COWSQLPY_LOOP=asyncio runs the background loop on stock asyncio."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "from cowsqlpy import codec; from cowsqlpy.runtime import background_loop; "
    "print(codec.IMPLEMENTATION, type(background_loop()).__module__.split('.')[0])"
)


@pytest.mark.parametrize(("env", "expected"), [
    ({"COWSQLPY_PUREPYTHON": "0", "COWSQLPY_LOOP": ""}, "cython uvloop"),
    ({"COWSQLPY_PUREPYTHON": "1", "COWSQLPY_LOOP": "asyncio"}, "python asyncio"),
])
def test_switches(env: dict[str, str], expected: str) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    assert out == expected


def test_this_run_says_which_implementations_it_tests() -> None:
    from cowsqlpy import codec
    from cowsqlpy.runtime import background_loop

    want_pure = os.environ.get("COWSQLPY_PUREPYTHON") == "1"
    assert codec.IMPLEMENTATION == ("python" if want_pure else "cython")
    stock = os.environ.get("COWSQLPY_LOOP") == "asyncio"
    assert type(background_loop()).__module__.startswith("asyncio" if stock else "uvloop")
