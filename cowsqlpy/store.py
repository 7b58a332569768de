"""Node stores: where a client keeps the list of cluster nodes it may dial.

Two stores, as go-cowsql's client has: in memory, and a SQLite file (through
apsw) kept in a node's data dir so the list survives restarts. Both are
thread-safe and cheap; they hold `NodeInfo(id, address, role)` rows. The file
store also reads (and writes) go-dqlite's older schema, ``servers(address)``,
which Canonical's ``dqlite -s file://`` shell keeps: its nodes are voters of
unknown id.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from .protocol import SPARE, STANDBY, VOTER, NodeInfo

_ROLE_ORDER = {VOTER: 0, STANDBY: 1, SPARE: 2, None: 3}


@runtime_checkable
class NodeStore(Protocol):
    def get(self) -> list[NodeInfo]:
        """The known nodes (possibly empty)."""
        ...

    def set(self, nodes: Iterable[NodeInfo]) -> None:
        """Replace the known nodes."""
        ...


def _normalise(nodes: Iterable[NodeInfo | tuple[int, str, int | None] | str]) -> list[NodeInfo]:
    out: list[NodeInfo] = []
    for n in nodes:
        if isinstance(n, str):
            out.append(NodeInfo(0, n, VOTER))  # an address alone: id unknown, assume voter
        else:
            out.append(NodeInfo(*n))
    return out


def dial_order(nodes: Iterable[NodeInfo]) -> list[NodeInfo]:
    """Voters first, then stand-bys, then spares (only voters know the leader)."""
    return sorted(nodes, key=lambda n: _ROLE_ORDER.get(n.role, 3))


class MemoryNodeStore:
    """A node list held in memory; `MemoryNodeStore(["127.0.0.1:9001", ...])` works."""

    def __init__(self, nodes: Iterable[NodeInfo | tuple[int, str, int | None] | str] = ()) -> None:
        self._lock = threading.Lock()
        self._nodes = _normalise(nodes)

    def get(self) -> list[NodeInfo]:
        with self._lock:
            return list(self._nodes)

    def set(self, nodes: Iterable[NodeInfo | tuple[int, str, int | None] | str]) -> None:
        normalised = _normalise(nodes)
        with self._lock:
            self._nodes = normalised

    def __repr__(self) -> str:
        return f"MemoryNodeStore({[n.address for n in self.get()]})"


class NotANodeStoreError(ValueError):
    """The file is not a node store (not SQLite, or no ``servers`` table with addresses)."""


class SqliteNodeStore:
    """A node list in a SQLite file (apsw), as go-cowsql keeps `servers` in its data dir.

    :param create: make the file and its table when missing (a node's own store);
        False opens an existing store only (a shell pointed at a file).
    :raises NotANodeStoreError: `create` is False and the file holds no node store.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        import apsw  # only this store needs it

        self.path = os.fspath(path)
        self._lock = threading.Lock()
        flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
        try:
            self._db = apsw.Connection(self.path, flags=flags)
            self._db.setbusytimeout(5000)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(servers)")}
        except apsw.Error as exc:
            raise NotANodeStoreError(f"{self.path} is not a node store: {exc}") from None
        if not columns and create:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS servers (id INTEGER NOT NULL, address TEXT PRIMARY KEY, role INTEGER)"
            )
            columns = {"id", "address", "role"}
        if "address" not in columns:
            self._db.close()
            raise NotANodeStoreError(f"{self.path} is not a node store: no servers(address) table")
        # go-dqlite's schema: servers(address) alone.
        self._addresses_only = not {"id", "role"} <= columns

    def get(self) -> list[NodeInfo]:
        with self._lock:
            if self._addresses_only:
                return [NodeInfo(0, str(a), VOTER) for (a,) in self._db.execute("SELECT address FROM servers ORDER BY address")]
            rows = self._db.execute("SELECT id, address, role FROM servers ORDER BY address").fetchall()
        return [NodeInfo(int(i) & ((1 << 64) - 1), str(a), None if r is None else int(r)) for i, a, r in rows]  # type: ignore[arg-type]

    def set(self, nodes: Iterable[NodeInfo | tuple[int, str, int | None] | str]) -> None:
        normalised = _normalise(nodes)
        with self._lock, self._db:
            self._db.execute("DELETE FROM servers")
            if self._addresses_only:
                self._db.executemany("INSERT OR REPLACE INTO servers (address) VALUES (?)", [(n.address,) for n in normalised])
                return
            # SQLite integers are signed: store ids as their signed 64-bit twin.
            self._db.executemany(
                "INSERT OR REPLACE INTO servers (id, address, role) VALUES (?, ?, ?)",
                [(n.id - (1 << 64) if n.id >= 1 << 63 else n.id, n.address, n.role) for n in normalised],
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SqliteNodeStore({self.path!r})"


__all__ = ["NodeStore", "MemoryNodeStore", "SqliteNodeStore", "NotANodeStoreError", "dial_order", "NodeInfo"]
