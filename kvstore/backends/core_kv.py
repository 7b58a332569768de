"""`CoreBackedKV`: KV whose work is done by an asyncio core on a background loop (`etcd://`,
`cowsql://`); subclasses say how one of the core's coroutines runs (`_run`). It needs no
MVCC replica, so these backends do not import msgpack."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any

from ..api import KV
from ..types import Compare, DeleteResult, LeaseInfo, Op, PutResult, RangeResult, TxnResult


class CoreBackedKV(KV):
    core: Any  # has async put/range/delete/txn/compact/grant/revoke/keepalive/lease_info

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        raise NotImplementedError

    def _put(self, key: bytes, value: bytes, lease: int, prev_kv: bool) -> PutResult:
        return self._run(self.core.put(key, value, lease, prev_kv))

    def _range(self, start: bytes, end: bytes, limit: int, revision: int, keys_only: bool,
               count_only: bool) -> RangeResult:
        return self._run(self.core.range(start, end, limit, revision, keys_only, count_only))

    def _delete(self, start: bytes, end: bytes, prev_kv: bool) -> DeleteResult:
        return self._run(self.core.delete(start, end, prev_kv))

    def _txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> TxnResult:
        return self._run(self.core.txn(compare, success, failure))

    def _compact(self, revision: int) -> None:
        self._run(self.core.compact(revision))

    def _grant(self, ttl: int) -> tuple[int, int]:
        return self._run(self.core.grant(ttl))

    def _revoke(self, lease: int) -> None:
        self._run(self.core.revoke(lease))

    def _keepalive(self, lease: int) -> int:
        return self._run(self.core.keepalive(lease))

    def _lease_info(self, lease: int) -> LeaseInfo:
        return self._run(self.core.lease_info(lease))
