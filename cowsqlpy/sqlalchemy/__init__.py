"""SQLAlchemy 2 dialects for cowsqlpy: ``cowsql://`` (the DB-API driver) and
``cowsql+aio://`` (the asyncio driver), registered as SQLAlchemy entry points.

    from sqlalchemy import create_engine
    engine = create_engine("cowsql://127.0.0.1:9001/app?server=127.0.0.1:9002")

`make_url` / `create_engine` / `create_async_engine` here also take several bare
addresses in the host part (``cowsql://h1:9001,h2:9001/app``). See docs/sqlalchemy.md.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import URL, Engine
from sqlalchemy import create_engine as _sa_create_engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as _sa_create_async_engine

from .dialect import INTERNAL_TABLES, CowsqlDialect, connect_args, make_url, servers_of


def create_engine(url: str | URL, **kwargs: Any) -> Engine:
    """`sqlalchemy.create_engine` with `make_url`'s multi-host URLs."""
    return _sa_create_engine(make_url(url), **kwargs)


def create_async_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """`sqlalchemy.ext.asyncio.create_async_engine` with `make_url`'s multi-host URLs."""
    return _sa_create_async_engine(make_url(url), **kwargs)


__all__ = [
    "CowsqlDialect",
    "INTERNAL_TABLES",
    "connect_args",
    "create_async_engine",
    "create_engine",
    "make_url",
    "servers_of",
]
