"""Hypothesis state machine per backend against a small reference model:
puts, deletes, ranges, tas, txn, reads at past revisions, compaction, leases
(granted, revoked, expired)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

import kvstore
from cowsqlpy.runtime import run_sync
from kvstore import Delete, Put, Value

_MACHINE_IDS = itertools.count()
EXAMPLES = {"mem": 40, "raft": 8, "etcd": 8, "cowsql": 10}
NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
VALUES = st.binary(max_size=4) | st.sampled_from([b"", b"x", b"y"])


def force_expire(env, lease_id: int) -> None:
    """Drive the same expiry path the backend's own timer uses."""
    kv = env.kv
    if env.name == "mem":
        kvstore.backends.mem  # noqa: B018 - imported by open()
        kv.backend.store.apply(["expire", [lease_id]])
    elif env.name == "raft":
        kv.backend._submit(["expire", [lease_id]])
    elif env.name == "cowsql":
        run_sync(kv.backend.expire([lease_id]))  # the reaper's op, for one lease
    else:
        kv.revoke(lease_id)  # etcd: expiry is a revoke done by the server


def make_machine(env):
    class KVMachine(RuleBasedStateMachine):
        leases = Bundle("leases")

        def __init__(self) -> None:
            super().__init__()
            # A fresh namespace per example (id() is reused once an instance is freed).
            self.ns = env.ns + b"%d/" % next(_MACHINE_IDS)
            self.model: dict[bytes, bytes] = {}
            self.lease_of: dict[bytes, int] = {}
            self.live_leases: set[int] = set()
            self.snaps: dict[int, dict[bytes, bytes]] = {}
            self.compacted = 0
            self.last_rev = env.kv.revision()

        def key(self, n: str) -> bytes:
            return self.ns + n.encode()

        def changed(self, rev: int) -> None:
            assert rev > self.last_rev
            if env.exclusive:
                assert rev == self.last_rev + 1
            self.last_rev = rev
            self.snaps[rev] = dict(self.model)

        def _drop_key(self, k: bytes) -> None:
            self.model.pop(k, None)
            self.lease_of.pop(k, None)

        @rule(n=NAMES, v=VALUES)
        def put(self, n, v):
            k = self.key(n)
            r = env.kv.put(k, v)
            self.model[k] = v
            self.lease_of.pop(k, None)
            self.changed(r.revision)

        @rule(n=NAMES)
        def delete(self, n):
            k = self.key(n)
            existed = k in self.model
            assert env.kv.delete(k) is existed
            if existed:
                self._drop_key(k)
                self.changed(env.kv.revision())

        @rule(a=NAMES, b=NAMES)
        def delete_range(self, a, b):
            lo, hi = sorted([self.key(a), self.key(b)])
            gone = [k for k in self.model if lo <= k < hi]
            r = env.kv.delete_range(lo, hi)
            assert r.deleted == len(gone)
            for k in gone:
                self._drop_key(k)
            if gone:
                self.changed(r.revision)

        @rule(n=NAMES, test=VALUES, new=VALUES)
        def tas(self, n, test, new):
            k = self.key(n)
            expect = self.model.get(k) == test
            assert env.kv.tas(k, test, new) is expect
            if expect:
                self.model[k] = new
                self.lease_of.pop(k, None)
                self.changed(env.kv.revision())

        @rule(n=NAMES, test=VALUES, m=NAMES, v=VALUES, d=NAMES)
        def txn(self, n, test, m, v, d):
            k, pk, dk = self.key(n), self.key(m), self.key(d)
            ok = self.model.get(k) == test
            r = env.kv.txn([Value(k) == test], [Put(pk, v)], [Delete(dk)])
            assert r.succeeded is ok
            if ok:
                self.model[pk] = v
                self.lease_of.pop(pk, None)
                self.changed(r.revision)
            elif dk in self.model:
                self._drop_key(dk)
                self.changed(r.revision)

        @rule(a=NAMES, b=NAMES, limit=st.integers(0, 3))
        def get_range(self, a, b, limit):
            lo, hi = sorted([self.key(a), self.key(b)])
            expect = sorted((k, v) for k, v in self.model.items() if lo <= k < hi)
            r = env.kv.get_range(lo, hi, limit=limit)
            assert r.count == len(expect)
            assert r.items() == (expect[:limit] if limit else expect)

        @rule(data=st.data())
        def read_past(self, data):
            if not self.snaps:
                return
            rev = data.draw(st.sampled_from(sorted(self.snaps)))
            if rev < self.compacted:
                with pytest.raises(kvstore.CompactedError):
                    env.kv.get_prefix(self.ns, revision=rev)
            else:
                assert dict(env.kv.get_prefix(self.ns, revision=rev).items()) == self.snaps[rev]

        @rule(data=st.data())
        def compact(self, data):
            cands = [r for r in sorted(self.snaps) if r > self.compacted]
            if not cands:
                return
            rev = data.draw(st.sampled_from(cands))
            env.kv.compact(rev)
            self.compacted = rev

        @rule(target=leases)
        def grant(self):
            lease = env.kv.grant(60)
            self.live_leases.add(lease.id)
            return lease.id

        @rule(lease=leases, n=NAMES, v=VALUES)
        def put_with_lease(self, lease, n, v):
            k = self.key(n)
            if lease not in self.live_leases:
                with pytest.raises(kvstore.LeaseNotFound):
                    env.kv.put(k, v, lease=lease)
                return
            r = env.kv.put(k, v, lease=lease)
            self.model[k] = v
            self.lease_of[k] = lease
            self.changed(r.revision)

        def _end_lease(self, lease, how):
            if lease not in self.live_leases:
                if how == "revoke":
                    with pytest.raises(kvstore.LeaseNotFound):
                        env.kv.revoke(lease)
                return
            keys = [k for k, lid in self.lease_of.items() if lid == lease]
            if how == "revoke":
                env.kv.revoke(lease)
            else:
                force_expire(env, lease)
            self.live_leases.discard(lease)
            for k in keys:
                self._drop_key(k)
            if keys:
                self.changed(env.kv.revision())

        @rule(lease=leases)
        def revoke(self, lease):
            self._end_lease(lease, "revoke")

        @rule(lease=leases)
        def expire(self, lease):
            self._end_lease(lease, "expire")

        @invariant()
        def matches_model(self):
            got = dict(env.kv.get_prefix(self.ns).items())
            assert got == self.model

        def teardown(self):
            for lid in list(self.live_leases):
                try:
                    env.kv.revoke(lid)
                except kvstore.LeaseNotFound:
                    pass

    return KVMachine


def test_state_machine(env):
    run_state_machine_as_test(
        make_machine(env),
        settings=settings(max_examples=EXAMPLES[env.name], stateful_step_count=20,
                          deadline=None, database=None,
                          suppress_health_check=list(HealthCheck)))
