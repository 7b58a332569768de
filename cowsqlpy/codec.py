"""The wire codec: picks the Cython implementation or its pure-Python twin, in one place.

* ``COWSQLPY_PUREPYTHON=1`` forces the pure-Python twin (`cowsqlpy.protocol.pure`).
* Otherwise the Cython module (`cowsqlpy._ccodec`) is used. If it cannot be imported the
  twin is used and a warning names the cause, unless ``COWSQLPY_REQUIRE_CYTHON=1`` (the test
  suite sets it by default), which turns the failure into ImportError.

`IMPLEMENTATION` says which one loaded: ``"cython"`` or ``"python"``.

The server-side helpers `encode_response`, `encode_rows` and `decode_request` (tests and
fake servers) always come from the pure module.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType
from typing import TYPE_CHECKING

from cowsqlpy.protocol import Failure, NodeInfo

log = logging.getLogger("cowsqlpy.codec")

MODULES = {"cython": "cowsqlpy._ccodec", "python": "cowsqlpy.protocol.pure"}


def load(name: str) -> ModuleType:
    """Import one implementation by name ("cython" or "python"), for tests and benchmarks.

    :raises ImportError: the implementation is not available (e.g. not built).
    """
    return importlib.import_module(MODULES[name])


def _select() -> tuple[str, ModuleType]:
    if os.environ.get("COWSQLPY_PUREPYTHON") == "1":
        return "python", load("python")
    try:
        return "cython", load("cython")
    except ImportError as exc:
        if os.environ.get("COWSQLPY_REQUIRE_CYTHON") == "1":
            raise ImportError(
                f"COWSQLPY_REQUIRE_CYTHON=1 but the Cython codec failed to import: {exc} "
                "(build it with: python setup.py build_ext --inplace)"
            ) from exc
        log.warning("Cython codec unavailable (%s); using the slower pure-Python codec", exc)
        return "python", load("python")


IMPLEMENTATION, _impl = _select()

if TYPE_CHECKING:
    from cowsqlpy.protocol.pure import (
        FrameReader,
        decode_response,
        decode_rows,
        encode_params,
        encode_request,
        handshake,
    )
else:
    handshake = _impl.handshake
    encode_request = _impl.encode_request
    encode_params = _impl.encode_params
    FrameReader = _impl.FrameReader
    decode_response = _impl.decode_response
    decode_rows = _impl.decode_rows

from cowsqlpy.protocol.pure import decode_request, encode_response, encode_rows  # noqa: E402

__all__ = [
    "IMPLEMENTATION",
    "load",
    "Failure",
    "NodeInfo",
    "handshake",
    "encode_request",
    "encode_params",
    "FrameReader",
    "decode_response",
    "decode_rows",
    "encode_response",
    "encode_rows",
    "decode_request",
]
