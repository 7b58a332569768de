"""The ``cowsql://`` URL and the sharing of one `CowsqlCore` per loop, cluster and database."""

from __future__ import annotations

import asyncio
import threading
import urllib.parse
from typing import Any

from cowsqlpy.store import NodeStore
from cowsqlpy.tls import TLSConfig

from ...errors import InvalidArgument
from . import tuning as C
from .core import CowsqlCore

# One core per (loop, servers, database, options) in this process, shared by its handles
# (one connection pool, one group committer, one watch poller) unless opened with private=1.
_cores: dict[tuple[Any, ...], CowsqlCore] = {}
_cores_lock = threading.Lock()

OPTIONS = {"session_ttl", "timeout", "private", "auto_compact", "read", "cert", "key", "ca",
           "server_name"}


async def open_backend(url: str, *, store: NodeStore | None = None) -> CowsqlCore:
    """The store named by ``url`` on the running loop; ``store`` (a cowsqlpy node
    store) replaces the URL's host list and follows membership changes."""
    u = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(u.query))
    unknown = set(q) - OPTIONS
    if unknown:
        raise InvalidArgument(f"cowsql: unknown options {sorted(unknown)}")
    servers = [e.strip() for e in u.netloc.split(",") if e.strip()]
    if not servers and store is None:
        raise InvalidArgument(f"cowsql: no server in {url!r}")
    for e in servers:
        host, sep, port = e.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise InvalidArgument(f"cowsql: server {e!r} must be HOST:PORT")
    database = urllib.parse.unquote(u.path.lstrip("/"))
    if not database or "/" in database:
        raise InvalidArgument(f"cowsql: the URL must name one database: cowsql://HOST:PORT/DB, "
                              f"got {url!r}")
    auto_compact = q.get("auto_compact", "0")
    if not auto_compact.isdigit():
        raise InvalidArgument(f"cowsql: auto_compact must be a number of revisions, "
                              f"got {auto_compact!r}")
    read = q.get("read", "linearizable")
    if read not in ("linearizable", "serializable"):
        raise InvalidArgument(f"cowsql: read must be linearizable or serializable, got {read!r}")
    try:
        timeout = float(q.get("timeout", C.DEFAULT_TIMEOUT))
        session_ttl = int(q["session_ttl"]) if "session_ttl" in q else None
    except ValueError as exc:
        raise InvalidArgument(f"cowsql: {exc}") from None
    private = q.get("private", "0").lower() in ("1", "true", "yes")
    tls = None
    if "cert" in q or "key" in q:
        if not ("cert" in q and "key" in q):
            raise InvalidArgument("cowsql: TLS needs both cert= and key= (the cluster certificate)")
        tls = TLSConfig(q["cert"], q["key"], q.get("ca"), q.get("server_name"))
    elif "ca" in q or "server_name" in q:
        raise InvalidArgument("cowsql: ca= and server_name= go with cert= and key=")
    return await shared_core(store if store is not None else servers, database, timeout,
                             int(auto_compact), read == "linearizable", private, session_ttl, tls)


async def shared_core(servers: list[str] | NodeStore, database: str, timeout: float,
                      auto_compact: int, linearizable: bool, private: bool,
                      session_ttl: int | None, tls: TLSConfig | None = None) -> CowsqlCore:
    where = tuple(sorted(servers)) if isinstance(servers, list) else ("store", id(servers))
    key: tuple[Any, ...] = (asyncio.get_running_loop(), where, database, timeout, auto_compact,
                            linearizable, session_ttl, tls)
    if private:
        key += (object(),)
    with _cores_lock:
        core = _cores.get(key)
        if core is not None and not core.closing:
            core.refs += 1
            return core
    core = CowsqlCore(servers, database, timeout, auto_compact, linearizable, tls)
    core.session_ttl = session_ttl
    try:
        await asyncio.wait_for(core.start(), timeout + 30)
    except BaseException:
        await core.close()
        raise
    with _cores_lock:
        other = _cores.get(key)
        if other is not None and not other.closing:   # a concurrent open won: use its core
            other.refs += 1
            winner = other
        else:
            _cores[key] = winner = core
            core.on_last_close = lambda: _forget(key, core)
    if winner is not core:
        await core.close()
    return winner


def _forget(key: tuple[Any, ...], core: CowsqlCore) -> None:
    with _cores_lock:
        if _cores.get(key) is core:
            del _cores[key]
