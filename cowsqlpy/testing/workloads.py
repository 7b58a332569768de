"""Workload adapters: run an operation of a checker's vocabulary against a real
store and record it, so tests and the torture runner share one translation.

* `kv_apply(kv, inp)` runs a `KVModel` operation on a `kvstore.KV` handle
  (public API only; kvstore is imported lazily: cowsqlpy does not depend on it).
* `event_json(event)` turns a `kvstore.Event` into the dict `watchcheck` reads.
* `sql_register_apply(conn, inp)` runs a `RegisterModel` operation as SQL on
  a DB-API connection (autocommit) against `REGISTER_SCHEMA`.
* `KVOpGenerator` draws random KV operations with unique put values (so a
  watch event names the put it came from).
"""

from __future__ import annotations

import random
from typing import Any

__all__ = [
    "REGISTER_SCHEMA",
    "KVOpGenerator",
    "event_json",
    "kv_apply",
    "kv_error_is_definite",
    "sql_error_is_definite",
    "sql_register_apply",
]


def _b(s: str) -> bytes:
    return s.encode()


def _s(b: bytes | None) -> str | None:
    return None if b is None else b.decode()


def kv_apply(kv: Any, inp: dict[str, Any]) -> dict[str, Any]:
    """Run one `KVModel` operation on `kv` and return its output dict."""
    import kvstore

    f = inp["f"]
    if f == "get":
        k = _b(inp["key"])
        r = kv.get_range(k, k + b"\0")
        kv0 = r.kvs[0] if r.kvs else None
        return {
            "value": _s(kv0.value) if kv0 else None,
            "mod": kv0.mod_revision if kv0 else 0,
            "rev": r.revision,
        }
    if f == "range":
        r = kv.get_range(_b(inp["start"]), _b(inp["end"]))
        return {"kvs": [[_s(x.key), _s(x.value)] for x in r.kvs], "rev": r.revision}
    if f == "put":
        return {"rev": kv.put(_b(inp["key"]), _b(inp["value"]), lease=inp.get("lease") or None).revision}
    if f == "grant":
        return {"id": kv.grant(inp["ttl"]).id}
    if f == "revoke":
        kv.revoke(inp["id"])
        return {}
    if f == "delete":
        k = _b(inp["key"])
        d = kv.delete_range(k, k + b"\0")
        return {"deleted": d.deleted, "rev": d.revision}
    if f == "txn":
        targets = {
            "value": kvstore.CompareTarget.VALUE,
            "version": kvstore.CompareTarget.VERSION,
            "create": kvstore.CompareTarget.CREATE,
            "mod": kvstore.CompareTarget.MOD,
        }
        cmps = [
            kvstore.compare(_b(k), op, _b(x) if t == "value" else x, targets[t])
            for k, t, op, x in inp["cmp"]
        ]

        def ops(branch: list[list[Any]]) -> list[Any]:
            out: list[Any] = []
            for o in branch:
                if o[0] == "put":
                    out.append(kvstore.Put(_b(o[1]), _b(o[2])))
                elif o[0] == "get":
                    out.append(kvstore.Get(_b(o[1])))
                else:
                    out.append(kvstore.Delete(_b(o[1])))
            return out

        t = kv.txn(cmps, ops(inp.get("then", [])), ops(inp.get("else", [])))
        results: list[Any] = []
        for res in t.responses:
            if isinstance(res, kvstore.RangeResult):
                results.append(_s(res.kvs[0].value) if res.kvs else None)
            elif isinstance(res, kvstore.DeleteResult):
                results.append(res.deleted)
            else:
                results.append(None)
        return {"ok": t.succeeded, "rev": t.revision, "results": results}
    raise ValueError(f"unknown KV op {f!r}")


def kv_error_is_definite(exc: BaseException) -> bool:
    """A kvstore error that certainly applied nothing (bad arguments, closed
    handle); every other failure of a write counts as unknown."""
    import kvstore

    return isinstance(exc, kvstore.InvalidArgument | kvstore.InvalidType | kvstore.ClosedError)


def event_json(event: Any) -> dict[str, Any]:
    """A `kvstore.Event` as the dict `cowsqlpy.testing.watchcheck` checks."""
    import kvstore

    kv, prev = event.kv, event.prev_kv
    return {
        "type": "put" if event.type is kvstore.EventType.PUT else "delete",
        "key": _s(kv.key),
        "value": _s(kv.value) if event.type is kvstore.EventType.PUT else None,
        "rev": kv.mod_revision,
        "create": kv.create_revision,
        "version": kv.version,
        "prev": None
        if prev is None
        else {
            "value": _s(prev.value),
            "mod": prev.mod_revision,
            "create": prev.create_revision,
            "version": prev.version,
        },
    }


class KVOpGenerator:
    """Random `KVModel` operations over a few keys under `prefix`; every put
    writes a value never written before. With `leases`, also grants (a TTL far
    longer than any run: the model has no expiry), puts on a granted lease and
    revokes; tell it what a grant returned with `observe`."""

    LEASE_TTL = 3600

    def __init__(self, rng: random.Random, prefix: str = "k/", keys: int = 4, client: str = "c",
                 leases: bool = True) -> None:
        self.rng, self.prefix, self.client, self.use_leases = rng, prefix, client, leases
        self.keys = [f"{prefix}{i}" for i in range(keys)]
        self.leases: list[int] = []
        self._n = 0

    def value(self) -> str:
        self._n += 1
        return f"{self.client}-{self._n}"

    def observe(self, inp: dict[str, Any], output: Any) -> None:
        """Feed back an acknowledged op's output (a grant's lease id)."""
        if inp["f"] == "grant" and isinstance(output, dict) and "id" in output:
            self.leases.append(output["id"])

    def next(self) -> dict[str, Any]:
        r, key = self.rng.random(), self.rng.choice(self.keys)
        if self.use_leases and r < 0.06:
            if not self.leases:
                return {"f": "grant", "ttl": self.LEASE_TTL}
            if r < 0.02:
                return {"f": "revoke", "id": self.leases.pop(self.rng.randrange(len(self.leases)))}
            return {"f": "put", "key": key, "value": self.value(), "lease": self.rng.choice(self.leases)}
        if r < 0.35:
            return {"f": "get", "key": key}
        if r < 0.65:
            return {"f": "put", "key": key, "value": self.value()}
        if r < 0.72:
            return {"f": "delete", "key": key}
        if r < 0.80:
            return {"f": "range", "start": self.prefix, "end": self.prefix + "\x7f"}
        other = self.rng.choice(self.keys)
        cmp = self.rng.choice([[key, "version", "=", self.rng.randint(0, 2)],
                               [key, "mod", ">", self.rng.randint(0, 5)],
                               [key, "create", "=", 0]])
        then: list[list[Any]] = [["put", key, self.value()]]
        if other != key:
            then.append(["get", other])
        return {"f": "txn", "cmp": [cmp], "then": then, "else": [["get", key]]}


# -- SQL register ----------------------------------------------------------------------------------

REGISTER_SCHEMA = "CREATE TABLE IF NOT EXISTS reg (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"


def sql_register_apply(conn: Any, inp: dict[str, Any]) -> Any:
    """Run a `RegisterModel` op (integer values, None deletes) as one autocommit statement."""
    f, key = inp["f"], inp["key"]
    if f == "read":
        row = conn.execute("SELECT v FROM reg WHERE k = ?", (key,)).fetchone()
        return None if row is None else row[0]
    if f == "write":
        if inp["value"] is None:
            conn.execute("DELETE FROM reg WHERE k = ?", (key,))
        else:
            conn.execute(
                "INSERT INTO reg (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                (key, inp["value"]),
            )
        return None
    if f == "cas":
        cur = conn.execute(
            "UPDATE reg SET v = ? WHERE k = ? AND v = ?", (inp["new"], key, inp["old"])
        )
        return cur.rowcount == 1
    raise ValueError(f"unknown register op {f!r}")


def sql_error_is_definite(exc: BaseException) -> bool:
    """A DB-API error that certainly committed nothing: not-leader, no leader, a lost
    connection or transaction (the driver resolves lost replies of writes itself
    and raises `OutcomeUnknownError` only when it cannot), SQLITE_BUSY (raised at
    a statement before COMMIT: another core holds the write lock), bad SQL.
    Anything else counts as unknown."""
    from ..errors import (
        BusyError,
        ConnectionLostError,
        NoLeaderError,
        NotLeaderError,
        OutcomeUnknownError,
        ProgrammingError,
        TransactionLostError,
    )

    if isinstance(exc, OutcomeUnknownError):
        return False
    definite = NotLeaderError | NoLeaderError | ConnectionLostError | TransactionLostError | BusyError | ProgrammingError
    return isinstance(exc, definite)
