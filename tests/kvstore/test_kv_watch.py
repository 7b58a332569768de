"""Contract: blocking watch, callback watches, prefix watches from a revision."""

from __future__ import annotations

import threading

import pytest

import kvstore
from kvstore import EventType
from kvstore.testing import wait_until


def test_watch_blocks_until_change_or_timeout(env):
    k = env.k("w")
    assert env.kv.watch(k, timeout=0.2) is None
    got = []
    t = threading.Thread(target=lambda: got.append(env.kv.watch(k, timeout=30)))
    t.start()
    # the watcher registers before returning from watch_key; poll until a put is seen
    for i in range(200):
        env.other.put(k, b"v%d" % i)
        t.join(0.05)
        if not t.is_alive():
            break
    assert not t.is_alive()
    ev = got[0]
    assert ev.type is EventType.PUT and ev.key == k and ev.value.startswith(b"v")


def test_watch_sees_delete(env):
    k = env.k("wd")
    env.kv.put(k, b"x")
    with env.kv.watch_key(k) as w:
        env.other.delete(k)
        ev = w.get(timeout=30)
    assert ev.type is EventType.DELETE and ev.value is None and ev.prev_kv.value == b"x"


def test_watch_prefix_ordered_no_gaps_resumable(env):
    kv = env.kv
    start = kv.revision() + 1
    with kv.watch_prefix(env.k("p/")) as w:
        for i in range(20):
            env.other.put(env.k(f"p/{i % 5:02d}"), str(i))
        env.other.put(env.k("other"), b"ignored")
        env.other.delete_prefix(env.k("p/"))
        events = [w.get(timeout=30) for _ in range(25)]
    assert all(e is not None for e in events)
    revs = [e.revision for e in events]
    assert revs == sorted(revs)
    assert [e.value for e in events[:20]] == [str(i).encode() for i in range(20)]
    assert len(set(revs[:20])) == 20 and revs[:20] == list(range(revs[0], revs[0] + 20))
    dels = events[20:]
    assert {e.type for e in dels} == {EventType.DELETE}
    assert len({e.revision for e in dels}) == 1  # atomic per revision
    # resume from a past revision: exactly the same events again
    with kv.watch_prefix(env.k("p/"), start_revision=start) as w2:
        again = [w2.get(timeout=30) for _ in range(25)]
    assert [(e.type, e.key, e.revision) for e in again] == \
        [(e.type, e.key, e.revision) for e in events]
    with kv.watch_prefix(env.k("p/"), start_revision=revs[10]) as w3:
        assert w3.get(timeout=30).revision == revs[10]


def test_watch_callback_and_cancel(env):
    k = env.k("cb")
    seen = []
    ud = object()

    def cb(key, value, op, userdata):
        assert userdata is ud
        seen.append((key, value, op))
        return True
    h = env.kv.watch_callback(k, EventType.PUT, cb, ud)
    env.other.put(k, b"1")
    env.other.put(k, b"2")
    wait_until(lambda: len(seen) >= 2, what="two callbacks")
    assert seen == [(k, b"1", EventType.PUT), (k, b"2", EventType.PUT)]
    env.kv.cancel(h)
    assert not h.active
    control: list[bytes] = []
    h2 = env.kv.watch_callback(k, EventType.PUT, lambda key, value, op, ud: control.append(value) or True, None)
    env.other.put(k, b"3")
    # once a live watcher has had the event, a cancelled one would have had it too
    wait_until(lambda: control == [b"3"], what="the control watcher sees the put")
    assert len(seen) == 2
    env.kv.cancel(h2)


def test_watch_callback_stops_on_false_and_on_delete(env):
    k = env.k("cb2")
    calls = []
    h = env.kv.watch_callback(k, None, lambda *a: (calls.append(a[2]), False)[1], None)
    env.other.put(k, b"1")
    wait_until(lambda: not h.active, what="callback returning False to stop the watch")
    env.other.put(k, b"2")
    assert calls == [EventType.PUT]
    dels = []
    h2 = env.kv.watch_callback(k, EventType.DELETE, lambda *a: dels.append(a) or True, None)
    env.other.put(k, b"3")  # filtered out (op=DELETE)
    env.other.delete(k)
    wait_until(lambda: not h2.active, what="watch ending on delete")
    assert dels == [(k, None, EventType.DELETE, None)]
    with pytest.raises(kvstore.InvalidArgument):
        env.kv.watch_callback(k, 7, lambda *a: True)


@pytest.mark.parametrize("limit", ["events", "bytes"])
def test_a_reader_that_falls_behind_gets_an_overflow_and_resumes(env, monkeypatch, limit):
    """A stream buffers a bounded number of events and bytes: past either, the
    reader gets the whole revisions before the overflow, then WatchOverflow
    naming the revision to resume from, and a new watch from there misses nothing."""
    p = env.k("of/")
    if limit == "events":
        monkeypatch.setattr(kvstore.watch, "MAX_BUFFERED_EVENTS", 5)
    else:   # room for five of these events (key + value bytes)
        monkeypatch.setattr(kvstore.watch, "MAX_BUFFERED_BYTES", 5 * (len(p) + 2 + 1))
    revs = []
    with env.kv.watch_prefix(p, start_revision=env.kv.revision() + 1) as w:
        for r in range(3):   # three revisions of three events each, nobody reading
            revs.append(env.other.txn(success=[kvstore.Put(p + b"%d%d" % (r, i), b"x")
                                               for i in range(3)]).revision)
        wait_until(lambda: w._error is not None, timeout=30, what="the overflow")
        got = [w.get(timeout=5) for _ in range(3)]
        assert [e.revision for e in got] == [revs[0]] * 3
        with pytest.raises(kvstore.WatchOverflow) as info:
            w.get(timeout=5)
    assert info.value.next_revision == revs[1] == w.next_revision
    monkeypatch.undo()   # the backlog of the resumed watch is 6 events
    with env.kv.watch_prefix(p, start_revision=w.next_revision) as again:
        rest = [again.get(timeout=30) for _ in range(6)]
    assert [e.revision for e in rest] == [revs[1]] * 3 + [revs[2]] * 3
    assert [e.key for e in rest] == [p + b"%d%d" % (r, i) for r in (1, 2) for i in range(3)]


def test_a_slow_callback_misses_nothing_when_its_stream_overflows(env, monkeypatch):
    monkeypatch.setattr(kvstore.watch, "MAX_BUFFERED_EVENTS", 3)
    k = env.k("slowcb")
    gate, seen = threading.Event(), []

    def callback(key, value, op, userdata):
        gate.wait(30)
        seen.append(value)
        return True

    h = env.kv.watch_callback(k, EventType.PUT, callback)   # its stream is registered now
    try:
        env.other.put(k, b"first")   # the callback holds this one until the gate opens
        values = [b"v%d" % i for i in range(10)]
        for v in values:
            env.other.put(k, v)
        gate.set()
        wait_until(lambda: seen[-1:] == [values[-1]], timeout=30, what="every change")
        assert [v for v in seen if v != b"first"] == values
    finally:
        env.kv.cancel(h)
