"""A thread-safe recorder of operation histories for the checkers.

    history = History()
    op = history.invoke("client-1", {"f": "write", "key": "x", "value": 1})
    try:
        conn.execute(...)
    except OutcomeUnknownError:
        history.unknown(op, "leadership lost")   # may or may not have happened
    except OperationalError:
        history.fail(op, "not leader")           # certainly did not happen
    else:
        history.ok(op, None)
    history.save("/tmp/history.json")             # re-check later: History.load(path)

Times come from `time.monotonic()`; an operation still pending when the
history is read counts as unknown. Inputs and outputs must be JSON values
(dicts, lists, str, int, float, bool, None) so a failing history can be saved
and checked again.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAIL", "OK", "PENDING", "UNKNOWN", "History", "Operation"]

OK = "ok"
FAIL = "fail"  # certainly took no effect
UNKNOWN = "unknown"  # may or may not have taken effect
PENDING = "pending"
_STATUSES = (OK, FAIL, UNKNOWN, PENDING)


@dataclass
class Operation:
    """One operation: what a client asked (`input`), when (`call`, `ret`:
    monotonic seconds; `ret` is None while pending or when the outcome is
    unknown), how it ended (`status`) and what it returned (`output`)."""

    id: int
    client: str
    input: Any
    call: float
    ret: float | None = None
    status: str = PENDING
    output: Any = None
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client": self.client,
            "input": self.input,
            "call": self.call,
            "ret": self.ret,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Operation:
        if d.get("status") not in _STATUSES:
            raise ValueError(f"operation {d.get('id')}: bad status {d.get('status')!r}")
        return cls(
            int(d["id"]),
            str(d["client"]),
            d["input"],
            float(d["call"]),
            None if d.get("ret") is None else float(d["ret"]),
            d["status"],
            d.get("output"),
            d.get("error"),
            dict(d.get("meta") or {}),
        )


class History:
    """Operations recorded by many threads; `invoke` then exactly one of
    `ok`/`fail`/`unknown` per operation."""

    def __init__(self, operations: Iterable[Operation] = ()) -> None:
        self._lock = threading.Lock()
        self._ops: list[Operation] = list(operations)

    def invoke(self, client: str, inp: Any, **meta: Any) -> Operation:
        with self._lock:
            op = Operation(len(self._ops), str(client), inp, time.monotonic(), meta=dict(meta))
            self._ops.append(op)
        return op

    def _complete(self, op: Operation, status: str, output: Any, error: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            if op.status != PENDING:
                raise ValueError(f"operation {op.id} already completed ({op.status})")
            op.ret = now if status != UNKNOWN else None
            op.status, op.output, op.error = status, output, error

    def ok(self, op: Operation, output: Any = None) -> None:
        self._complete(op, OK, output, None)

    def fail(self, op: Operation, error: object = None) -> None:
        """The operation certainly took no effect."""
        self._complete(op, FAIL, None, None if error is None else str(error))

    def unknown(self, op: Operation, error: object = None) -> None:
        """The operation may or may not have taken effect."""
        self._complete(op, UNKNOWN, None, None if error is None else str(error))

    def call(self, client: str, inp: Any, fn: Callable[[], Any],
             definite: Callable[[BaseException], bool] = lambda exc: False) -> Operation:
        """Record `fn()` as one operation: ok with its result, or, if it raises an
        `Exception`, failed when ``definite(exc)`` (it certainly applied nothing)
        else unknown. The exception is recorded, not raised; returns the operation."""
        op = self.invoke(client, inp)
        try:
            out = fn()
        except Exception as exc:
            self.fail(op, repr(exc)) if definite(exc) else self.unknown(op, repr(exc))
            return op
        self.ok(op, out)
        return op

    @contextmanager
    def record(
        self, client: str, inp: Any, definite: tuple[type[BaseException], ...] = ()
    ) -> Iterator[Operation]:
        """``with history.record(c, inp) as op: ...; history.ok(op, out)``. An exception
        that escapes completes the op as failed if it is one of `definite` (the
        caller knows such errors apply nothing), else as unknown; it is re-raised."""
        op = self.invoke(client, inp)
        try:
            yield op
        except definite as exc:
            if op.status == PENDING:
                self.fail(op, repr(exc))
            raise
        except BaseException as exc:
            if op.status == PENDING:
                self.unknown(op, repr(exc))
            raise
        if op.status == PENDING:
            raise ValueError(f"operation {op.id} left pending: call ok() inside the block")

    def operations(self) -> list[Operation]:
        """A snapshot; pending operations appear as unknown."""
        with self._lock:
            out = []
            for op in self._ops:
                copy = Operation(**vars(op))
                if copy.status == PENDING:
                    copy.status = UNKNOWN
                out.append(copy)
            return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    # -- JSON --

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": "cowsqlpy-history-1",
                "operations": [op.to_json() for op in self.operations()],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> History:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != "cowsqlpy-history-1":
            raise ValueError("not a cowsqlpy history (format cowsqlpy-history-1)")
        return cls(Operation.from_json(d) for d in data["operations"])

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        with open(path) as f:
            return cls.from_json(f.read())
