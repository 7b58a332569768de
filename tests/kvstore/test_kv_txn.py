"""Contract: tas, hmetcd transaction, general txn, expected_version, create, update."""

from __future__ import annotations

import threading

import pytest

import kvstore
from kvstore import (
    CreateRevision,
    Delete,
    Get,
    GetRange,
    LeaseId,
    ModRevision,
    Put,
    Value,
    Version,
)


def test_tas(env):
    kv = env.kv
    k = env.k("t")
    assert kv.tas(k, b"a", b"b") is False  # absent fails
    assert kv.get(k) is None
    kv.put(k, b"a")
    assert kv.tas(k, b"x", b"b") is False  # differs
    assert kv.get(k) == b"a"
    assert kv.tas(k, b"a", b"b") is True
    assert kv.get(k) == b"b"
    kv.put(k, b"")
    assert kv.tas(k, b"", b"c") is True  # empty value is a value


@pytest.mark.parametrize("op,value,expect", [
    ("=", b"m", True), ("=", b"n", False), ("!=", b"n", True), ("!=", b"m", False),
    ("<", b"n", True), ("<", b"a", False), (">", b"a", True), (">", b"z", False),
])
def test_transaction_ops(env, op, value, expect):
    kv = env.kv
    kv.put(env.k("key"), b"m")
    got = kv.transaction(env.k("key"), op, value, env.k("then"), b"T", env.k("else"), b"E")
    assert got is expect
    assert kv.get(env.k("then")) == (b"T" if expect else None)
    assert kv.get(env.k("else")) == (None if expect else b"E")


def test_transaction_absent_key_is_false_and_bad_op(env):
    kv = env.kv
    assert kv.transaction(env.k("none"), "!=", b"x", env.k("t"), b"1", env.k("e"), b"2") is False
    assert kv.get(env.k("e")) == b"2"
    with pytest.raises(kvstore.InvalidArgument):
        kv.transaction(env.k("none"), "<=", b"x", env.k("t"), b"1")


def test_general_txn(env):
    kv = env.kv
    a, b, c = env.k("a"), env.k("b"), env.k("c")
    ra = kv.put(a, b"1").revision
    kv.put(b, b"2")
    lease = kv.grant(30)
    try:
        r = kv.txn(
            [Value(a) == b"1", Version(b) == 1, CreateRevision(a) == ra, ModRevision(a) < ra + 1,
             CreateRevision(c) == 0, LeaseId(a) == 0],
            [Put(c, b"3", lease=lease), Delete(b), Get(a), GetRange(env.ns, kvstore.prefix_end(env.ns))],
            [Put(c, b"fail")])
        assert r.succeeded
        put_r, del_r, get_r, range_r = r.responses
        assert del_r.deleted == 1
        assert get_r[0].value == b"1"
        assert range_r.keys() == [a, c]  # reads in a txn see its earlier writes
        assert kv.get_kv(c).lease == lease.id
        assert kv.get_kv(c).mod_revision == r.revision == put_r.revision
        r2 = kv.txn([Value(a) == b"nope"], [Put(c, b"x")], [Put(c, b"fail"), Get(c)])
        assert not r2.succeeded and r2.responses[1][0].value == b"fail"
        ro = kv.txn([], [Get(a)], [])
        assert ro.succeeded and ro.revision == r2.revision  # read-only txn: no new revision
    finally:
        lease.revoke()


def test_txn_is_atomic_and_validated(env):
    kv = env.kv
    k = env.k("x")
    with pytest.raises(kvstore.InvalidTxn):
        kv.txn([], [Put(k, b"1"), Put(k, b"2")])
    with pytest.raises(kvstore.InvalidTxn):
        kv.txn([], [Put(k, b"1"), Delete(k)])
    with pytest.raises(kvstore.InvalidType):
        kv.txn([], ["put"])
    with pytest.raises(kvstore.LeaseNotFound):
        kv.txn([], [Put(env.k("y"), b"1"), Put(k, b"1", lease=0x7123456789)])
    assert kv.get(env.k("y")) is None  # nothing applied


def test_expected_version(env):
    kv = env.kv
    k = env.k("ev")
    kv.put(k, b"0", expected_version=0)  # create-only
    with pytest.raises(kvstore.VersionMismatch) as ei:
        kv.put(k, b"x", expected_version=0)
    assert ei.value.actual == 1
    kv.put(k, b"1", expected_version=1)
    with pytest.raises(kvstore.VersionMismatch):
        kv.put(k, b"x", expected_version=1)
    assert kv.get(k) == b"1"


def test_create_and_sequence(env):
    kv = env.kv
    assert kv.create(env.k("node"), b"v") == env.k("node")
    with pytest.raises(kvstore.KeyExists):
        kv.create(env.k("node"), b"v")
    keys = [kv.create(env.k("q/item-"), str(i), sequence=True) for i in range(3)]
    assert keys == [env.k(f"q/item-{i:010d}") for i in range(3)]
    assert kv.get(keys[2]) == b"2"
    assert env.other.create(env.k("q/item-"), sequence=True) == env.k("q/item-0000000003")


def test_update_retry_loop_under_contention(env):
    k = env.k("counter")
    handles = [env.kv, env.other]
    n_threads, n_incr = 4, 15
    errors = []

    def work(i):
        try:
            for _ in range(n_incr):
                handles[i % 2].update(k, lambda v: str(int(v or b"0") + 1))
        except Exception as e:  # reported below
            errors.append(e)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors
    assert env.kv.get(k) == str(n_threads * n_incr).encode()
