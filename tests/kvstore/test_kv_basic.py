"""Contract: basic reads/writes, ranges, revisions, versions, compaction."""

from __future__ import annotations

import pytest

import kvstore
from kvstore import CompactedError, FutureRevisionError


def test_get_absent_is_none_and_empty_value_is_a_value(env):
    kv = env.kv
    assert kv.get(env.k("nope")) is None
    assert kv.get_kv(env.k("nope")) is None
    kv.put(env.k("empty"), b"")
    assert kv.get(env.k("empty")) == b""
    kv.put(env.k("s"), "héllo")
    assert kv.get(env.k("s")) == "héllo".encode()
    assert kv.get(env.k("s").decode()) == "héllo".encode()  # str key


def test_put_returns_revision_and_prev_kv(env):
    kv = env.kv
    r1 = kv.put(env.k("a"), b"1")
    r2 = kv.put(env.k("a"), b"2", prev_kv=True)
    assert r2.revision > r1.revision
    assert r2.prev_kv is not None and r2.prev_kv.value == b"1"
    assert kv.put(env.k("b"), b"x", prev_kv=True).prev_kv is None


def test_revisions_and_versions(env):
    kv = env.kv
    k = env.k("v")
    r1 = kv.put(k, b"1").revision
    r2 = kv.put(k, b"2").revision
    kv1 = kv.get_kv(k)
    assert (kv1.create_revision, kv1.mod_revision, kv1.version, kv1.lease) == (r1, r2, 2, 0)
    assert kv.delete(k) is True
    assert kv.delete(k) is False  # absent is not an error
    r3 = kv.put(k, b"3").revision
    kv3 = kv.get_kv(k)
    assert (kv3.create_revision, kv3.version) == (r3, 1)
    assert kv.revision() >= r3
    if env.exclusive:
        assert r2 == r1 + 1 and r3 == r2 + 2


def test_reads_at_past_revisions(env):
    kv = env.kv
    k = env.k("h")
    revs = [kv.put(k, str(i)).revision for i in range(5)]
    kv.delete(k)
    for i, r in enumerate(revs):
        assert kv.get(k, revision=r) == str(i).encode()
    assert kv.get(k) is None
    assert kv.get(k, revision=revs[0] - 1) is None
    rr = kv.get_prefix(env.ns, revision=revs[2])
    assert rr.items() == [(k, b"2")]
    with pytest.raises(FutureRevisionError):
        kv.get(k, revision=kv.revision() + 1000)


def test_ranges_half_open_sorted_with_options(env):
    kv = env.kv
    for name in ["c", "a", "e", "b", "d", "a1"]:
        kv.put(env.k(name), name.upper())
    r = kv.get_range(env.k("a"), env.k("d"))
    assert r.keys() == [env.k(x) for x in ["a", "a1", "b", "c"]]  # end excluded, sorted
    assert r.count == 4 and not r.more
    lim = kv.get_range(env.k("a"), env.k("d"), limit=2)
    assert lim.keys() == [env.k("a"), env.k("a1")] and lim.more and lim.count == 4
    ko = kv.get_range(env.k("a"), env.k("c"), keys_only=True)
    assert [x.value for x in ko] == [b"", b"", b""] and len(ko) == 3
    co = kv.get_range(env.k("a"), env.k("z"), count_only=True)
    assert co.count == 6 and len(co) == 0
    assert kv.get_prefix(env.k("a")).keys() == [env.k("a"), env.k("a1")]
    assert kv.get_range(env.k("d")).keys()[:2] == [env.k("d"), env.k("e")]  # end=None: open
    assert len(kv.get_prefix(env.ns)) == 6


def test_delete_range_and_prefix(env):
    kv = env.kv
    for n in "abcde":
        kv.put(env.k(n), n)
    d = kv.delete_range(env.k("b"), env.k("d"), prev_kv=True)
    assert d.deleted == 2 and sorted(x.key for x in d.prev_kvs) == [env.k("b"), env.k("c")]
    assert kv.get_prefix(env.ns).keys() == [env.k("a"), env.k("d"), env.k("e")]
    assert kv.delete_prefix(env.ns).deleted == 3
    assert kv.get_prefix(env.ns).count == 0


def test_compaction(env):
    kv = env.kv
    k = env.k("c")
    r1 = kv.put(k, b"1").revision
    r2 = kv.put(k, b"2").revision
    r3 = kv.put(k, b"3").revision
    kv.compact(r2)
    assert kv.get(k, revision=r2) == b"2"
    assert kv.get(k, revision=r3) == b"3"
    with pytest.raises(CompactedError):
        kv.get(k, revision=r1)
    with pytest.raises(CompactedError):
        kv.compact(r1)
    with pytest.raises(CompactedError):
        with kv.watch_key(k, start_revision=r1) as w:
            w.get(timeout=10)
    with pytest.raises(FutureRevisionError):
        kv.compact(kv.revision() + 1000)


def test_other_handle_sees_writes(env):
    env.kv.put(env.k("x"), b"1")
    assert env.other.get(env.k("x")) == b"1"
    env.other.put(env.k("x"), b"2")
    assert env.kv.get(env.k("x")) == b"2"


def test_close_and_context_manager(env):
    with env.fresh() as kv:
        kv.put(env.k("cm"), b"1")
        assert kv.get(env.k("cm")) == b"1"
    assert kv.closed
    with pytest.raises(kvstore.ClosedError):
        kv.get(env.k("cm"))
    kv.close()  # idempotent
