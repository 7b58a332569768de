"""`ReplicaBackend`: the blocking primitives over a `kvstore.replica.Replica` fed with MVCC
commands (`mem:` applies them locally, `raft://` through the Raft log); subclasses say how
a command is applied (`_apply`) and how a read catches up (`_sync`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..backend import BlockingBackend
from ..replica import Replica, delete_result, put_result, txn_result
from ..types import Compare, DeleteResult, LeaseInfo, Op, PutResult, RangeResult, TxnResult
from ..watch import WatchStream


class ReplicaBackend(BlockingBackend):
    replica: Replica

    def _apply(self, cmd: list[Any]) -> Any:
        raise NotImplementedError

    def _sync(self) -> None:
        """Bring the local replica up to date before a read (nothing to do for mem:)."""

    def b_put(self, key: bytes, value: bytes, lease: int, prev_kv: bool) -> PutResult:
        return put_result(self._apply(["put", key, value, lease, prev_kv]))

    def b_range(self, start: bytes, end: bytes, limit: int, revision: int, keys_only: bool,
                count_only: bool) -> RangeResult:
        self._sync()
        return self.replica.range(start, end, limit, revision, keys_only, count_only)

    def b_delete(self, start: bytes, end: bytes, prev_kv: bool) -> DeleteResult:
        return delete_result(self._apply(["del", start, end, prev_kv]))

    def b_txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
              ) -> TxnResult:
        return txn_result(self._apply(["txn", [c.to_list() for c in compare],
                                       [o.to_list() for o in success],
                                       [o.to_list() for o in failure]]))

    def b_compact(self, revision: int) -> None:
        self._apply(["compact", revision])

    def b_grant(self, ttl: int) -> tuple[int, int]:
        r = self._apply(["grant", 0, ttl])
        return r[1], r[2]

    def b_revoke(self, lease: int) -> None:
        self._apply(["revoke", lease])

    def b_keepalive(self, lease: int) -> int:
        return int(self._apply(["keepalive", lease])[1])

    def b_lease_info(self, lease: int) -> LeaseInfo:
        self._sync()
        return self.replica.lease_info(lease)

    def b_watch(self, start: bytes, end: bytes, start_revision: int) -> WatchStream:
        if start_revision == 0:
            self._sync()
        return self.replica.watch(start, end, start_revision)

    def b_revision(self) -> int:
        self._sync()
        return self.replica.revision
