"""Backend registry: one table from URL scheme to the module and class that
implement it. Modules are imported lazily, so a backend whose dependencies are
missing (``raft`` without pysyncobj, ``etcd`` without aetcd, ``cowsql`` without
cowsqlpy's client) gives a clear :class:`~kvstore.errors.BackendUnavailable` only
when it is opened.

Each backend module exposes ``async def open_backend(url: str) -> Backend``
(:mod:`kvstore.backend`), called on the loop the backend will run on.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable, InvalidArgument, UnsupportedScheme

if TYPE_CHECKING:
    from ..backend import Backend

#: scheme -> import path of the backend module.
BACKENDS: dict[str, str] = {
    "mem": "kvstore.backends.mem",
    "raft": "kvstore.backends.raft",
    "etcd": "kvstore.backends.etcd",
    "cowsql": "kvstore.backends.cowsql",
}


def register(scheme: str, module: str) -> None:
    """Register (or replace) the module serving ``scheme``."""
    BACKENDS[scheme.lower()] = module


def scheme_of(url: str) -> str:
    if not isinstance(url, str):
        raise UnsupportedScheme(f"a kvstore URL must be a str, not {type(url).__name__}")
    scheme, sep, _ = url.partition(":")
    if not sep or not scheme:
        raise UnsupportedScheme(f"{url!r} has no scheme; use one of {sorted(BACKENDS)}")
    return scheme.lower()


async def open_backend(url: str, *, store: Any = None) -> Backend:
    scheme = scheme_of(url)
    modname = BACKENDS.get(scheme)
    if modname is None:
        raise UnsupportedScheme(
            f"unknown kvstore scheme {scheme!r} in {url!r}; known: {sorted(BACKENDS)}")
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name is not None and (modname == e.name or modname.startswith(e.name + ".")):
            raise BackendUnavailable(
                f"the {scheme!r} backend ({modname}) is not available in this build") from e
        raise BackendUnavailable(
            f"the {scheme!r} backend ({modname}) needs the missing module {e.name!r}") from e
    if store is not None:
        if scheme != "cowsql":
            raise InvalidArgument(f"store= names cowsql nodes; the {scheme!r} backend takes none")
        return await mod.open_backend(url, store=store)
    return await mod.open_backend(url)
