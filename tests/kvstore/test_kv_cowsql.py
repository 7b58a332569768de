"""cowsql:// specifics: group commit (coalescing, per-op atomicity, gap-free
revisions), commit-outcome resolution, concurrent schema creation, physical
compaction, restart of the whole engine cluster, leader failover under a put
workload."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cowsqlpy
import kvstore
from cowsqlpy.client import Session
from cowsqlpy.database import MARKER_PROBE, MARKER_WRITE
from cowsqlpy.errors import ConnectionLostError, LeadershipLostError
from cowsqlpy.runtime import run_sync
from cowsqlpy.testing import Cluster
from kvstore import CompactedError, DeleteRange, Put, Version
from kvstore.backends.cowsql import CowsqlCore
from kvstore.backends.cowsql import schema as S
from kvstore.testing import wait_until


def cowsql_url(cluster: Any, database: str, **options: object) -> str:
    q = "&".join(f"{k}={v}" for k, v in {"session_ttl": 2, **options}.items())
    return f"cowsql://{','.join(cluster.addresses)}/{database}?{q}"


def _db() -> str:
    return f"kvc-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def kv(cowsql_cluster: Any) -> Iterator[kvstore.KV]:
    h = kvstore.open(cowsql_url(cowsql_cluster, _db(), private=1))
    yield h  # type: ignore[misc]
    h.close()


def _core(kv: kvstore.KV) -> CowsqlCore:
    """The backend under a handle (white-box tests of the cowsql store)."""
    assert isinstance(kv.backend, CowsqlCore)
    return kv.backend


def _gather(kv: kvstore.KV, coros: list[Any]) -> list[Any]:
    async def run() -> list[Any]:
        return await asyncio.gather(*coros, return_exceptions=True)
    return asyncio.run_coroutine_threadsafe(run(), _core(kv).loop).result(120)


def test_group_commit_coalesces_with_gap_free_revisions(kv):
    base = kv.revision()
    b0 = _core(kv).batches
    res = _gather(kv, [_core(kv).put(b"g/%d" % i, b"%d" % i) for i in range(64)])
    revs = sorted(r.revision for r in res)
    assert revs == list(range(base + 1, base + 65))  # one revision each, no gap
    assert _core(kv).batches - b0 < 64                  # and they shared commits
    for i in range(64):
        assert kv.get_kv(b"g/%d" % i).version == 1


def test_group_commit_keeps_waves_of_ops_together(kv, monkeypatch):
    """Clients that send their next op a moment after the last one was acknowledged
    (as HTTP clients do) come back one by one; the committer waits for the wave
    instead of committing its first op alone, so each wave is one batch."""
    monkeypatch.setattr(kvstore.backends.cowsql.tuning, "GATHER_WAIT", 0.5)  # the mechanism, not the timing
    core, clients, rounds = _core(kv), 8, 12

    async def client(i: int) -> None:
        for r in range(rounds):
            await core.put(b"wave/%d" % i, b"%d" % r)
            for _ in range(i + 1):   # a round trip: clients come back at different times
                await asyncio.sleep(0)

    b0, o0 = core.batches, core.batched_ops
    assert _gather(kv, [client(i) for i in range(clients)]) == [None] * clients
    waves = core.batches - b0
    assert core.batched_ops - o0 >= clients * rounds
    assert waves <= rounds + 2, f"{waves} batches for {rounds} waves"  # + lease reaper passes


def test_failed_ops_inside_a_batch_take_no_revision_and_touch_nothing(kv):
    base = kv.revision()
    ops = []
    for i in range(20):  # 20 racing create-if-absent on one key: exactly one wins
        ops.append(_core(kv).txn([Version(b"race") == 0], [Put(b"race", b"%d" % i)], []))
    ops.append(_core(kv).put(b"bad", b"x", lease=0x5eed))  # unknown lease: fails alone
    ops += [_core(kv).put(b"ok/%d" % i, b"y") for i in range(5)]
    ops.append(_core(kv).delete(b"absent"))  # deletes nothing: no revision
    res = _gather(kv, ops)
    wins = [r for r in res[:20] if r.succeeded]
    assert len(wins) == 1
    assert isinstance(res[20], kvstore.LeaseNotFound)
    assert res[-1].deleted == 0
    assert kv.get(b"bad") is None
    assert kv.revision() == base + 1 + 5
    assert sorted([wins[0].revision] + [r.revision for r in res[21:26]]) == \
        list(range(base + 1, base + 7))
    assert kv.get_kv(b"race").version == 1


def test_reads_inside_a_batch_see_earlier_ops_of_the_batch(kv):
    kv.put(b"c", b"0")
    n = 30
    res = _gather(kv, [_core(kv).txn([kvstore.Value(b"c") == b"%d" % i],
                                   [Put(b"c", b"%d" % (i + 1))], []) for i in range(n)])
    # queued in order, evaluated in order against the batch's own changes
    assert all(r.succeeded for r in res)
    assert kv.get(b"c") == b"%d" % n


def _is_commit(sql: str) -> bool:
    """The request that carries a batch's writes and COMMIT (led by the driver's
    marker when the batch writes no log row), or a known key's put (its first run
    is SQL text: later ones are prepared)."""
    return sql == S.PUT_KNOWN or sql.endswith("COMMIT") and (
        "INSERT INTO kv_log" in sql or sql.startswith(MARKER_WRITE))


def _next_lease(kv: kvstore.KV) -> int:
    (n,), = run_sync(_core(kv)._query("SELECT next_lease FROM kv_meta", ()))
    return n


@pytest.mark.parametrize("committed", [True, False])
@pytest.mark.parametrize("op", ["put", "put-known", "grant"])
def test_lost_commit_reply_is_resolved_exactly_once(kv, monkeypatch, committed, op):
    """The COMMIT's reply is lost with the leader (10506), once, after the commit
    really happened or after it was rolled back: it is resolved, through the
    batch's log token (a put, in two round trips or in one when the key's state is
    known) or the driver's commit marker (a grant: no log row), and the op is
    applied exactly once."""
    core = _core(kv)
    kv.put(b"once", b"0")
    if op == "put":
        core._forget()   # the key's state must be read: two round trips
    real_exec_sql = Session.exec_sql
    fired: list[str] = []

    async def lossy_exec_sql(self: Session, sql: str, params: Any = ()) -> Any:
        if _is_commit(sql) and not fired:
            fired.append(sql)
            if committed:
                await real_exec_sql(self, sql, params)
            elif sql != S.PUT_KNOWN:   # (an autocommit statement just never ran)
                await real_exec_sql(self, "ROLLBACK")
            raise LeadershipLostError("injected: leadership lost during COMMIT", 10506)
        return await real_exec_sql(self, sql, params)

    base, lease, known = kv.revision(), _next_lease(kv), core.known_puts
    resolutions = core.db.resolutions
    monkeypatch.setattr(Session, "exec_sql", lossy_exec_sql)
    if op.startswith("put"):
        r = kv.put(b"once", b"1")
        assert r.revision == base + 1 and kv.revision() == base + 1
        assert kv.get_kv(b"once").version == 2
    else:
        kv.grant(60)
        assert _next_lease(kv) == lease + 1
    assert len(fired) == 1
    assert fired[0].startswith(MARKER_WRITE) == (op == "grant")
    assert (fired[0] == S.PUT_KNOWN) == (op == "put-known")
    assert core.known_puts == known + (op == "put-known" and committed)
    assert core.db.resolutions == resolutions + 1


def test_commit_check_reads_the_batch_token(kv):
    """A batch's check finds its own first log row by token; another token is
    "not committed"; a row at or below the compact revision that is not there
    any more is "cannot tell" (None), never "not committed"."""
    from kvstore.backends.cowsql.batch import _Batch

    kv.put(b"tok", b"1")
    kv.put(b"tok", b"2")
    r = kv.put(b"tok", b"3")
    (token,), = run_sync(_core(kv)._query("SELECT token FROM kv_log WHERE rev = ? AND sub = 0",
                                       (r.revision,)))
    assert token is not None

    def check(rev: int, tok: int) -> bool | None:
        b = _Batch()
        b.token = tok
        b.log = [(rev, 0, b"tok", b"", 0, 0, 0, 0, 0, tok)]

        async def ask() -> bool | None:
            session = await _core(kv).db.acquire()
            try:
                return await b.committed(session)
            finally:
                _core(kv).db.release(session)

        return run_sync(ask())

    assert check(r.revision, token) is True
    assert check(r.revision, token ^ 1) is False
    kv.compact(r.revision)
    assert check(r.revision - 1, 12345) is None      # compacted away, or never there
    assert check(r.revision + 1, 12345) is False


def test_put_of_a_known_key_takes_one_round_trip(kv):
    """After a write, the core knows the key's state: the next lone put of it is
    computed from that state and sent as one guarded INSERT, with the same result
    as the general path."""
    core = _core(kv)
    first = kv.put(b"known", b"v1")
    n = core.known_puts
    r = kv.put(b"known", b"v2", prev_kv=True)
    assert core.known_puts == n + 1
    assert r.revision == first.revision + 1 == kv.revision()
    assert r.prev_kv is not None and (r.prev_kv.value, r.prev_kv.version) == (b"v1", 1)
    got = kv.get_kv(b"known")
    assert (got.value, got.version, got.create_revision, got.mod_revision) == \
        (b"v2", 2, first.revision, r.revision)
    kv.delete(b"known")
    r = kv.put(b"known", b"v3", prev_kv=True)   # known absent: created again
    assert core.known_puts == n + 2 and r.prev_kv is None
    assert (kv.get_kv(b"known").version, kv.get_kv(b"known").create_revision) == (1, r.revision)


def test_a_write_by_another_core_fails_the_guard(kv, cowsql_cluster, monkeypatch):
    """Another process (a core of its own) wrote since: the known state is stale,
    the revision guard lets the one-statement put insert nothing, and the put is
    read and evaluated again: no lost update, no revision reused."""
    core = _core(kv)
    kv.put(b"g", b"mine")
    written: list[bool] = []
    write = core.db.write

    async def recording(*args: Any) -> bool:
        written.append(await write(*args))
        return written[-1]

    monkeypatch.setattr(core.db, "write", recording)
    other = kvstore.open(cowsql_url(cowsql_cluster, _core(kv).database, private=1))
    try:
        theirs = other.put(b"g", b"theirs")
        n = core.known_puts
        r = kv.put(b"g", b"mine again", prev_kv=True)
        assert core.known_puts == n   # the guard inserted nothing: the general path did
        assert written == [False]
        assert r.revision == theirs.revision + 1
        assert r.prev_kv is not None and r.prev_kv.value == b"theirs"
        assert (kv.get_kv(b"g").value, kv.get_kv(b"g").version) == (b"mine again", 3)
        kv.put(b"g", b"once more")
        assert core.known_puts == n + 1   # known again
    finally:
        other.close()


def test_known_key_states_are_bounded(kv, monkeypatch):
    monkeypatch.setattr(kvstore.backends.cowsql.tuning, "KNOWN_KEYS", 3)
    core = _core(kv)
    for i in range(5):
        kv.put(b"b/%d" % i, b"x" * (i + 1))
    assert list(core._known) == [b"b/2", b"b/3", b"b/4"]   # the most recently written
    assert core._known_bytes == 3 + 4 + 5
    monkeypatch.setattr(kvstore.backends.cowsql.tuning, "KNOWN_BYTES", 8)
    kv.put(b"b/5", b"y" * 6)
    assert list(core._known) == [b"b/5"] and core._known_bytes == 6


def test_plain_puts_leave_the_meta_row_alone(kv):
    """kv_meta is written only when lease or compaction state changes; the
    revision follows from the log."""
    def meta_revision() -> int:
        (rev,), = run_sync(_core(kv)._query("SELECT revision FROM kv_meta", ()))
        return rev

    kv.put(b"m", b"0")
    before, rev = meta_revision(), kv.revision()
    for i in range(3):
        assert kv.put(b"m", b"%d" % i).revision == rev + i + 1
    kv.delete(b"m")
    assert meta_revision() == before and kv.revision() == rev + 4
    kv.compact(rev + 4)
    assert meta_revision() == rev + 4 == kv.revision()


def test_commit_outcome_unresolvable_is_reported_not_acked(kv, monkeypatch):
    """The reply is lost and no leader can be asked within the deadline: OutcomeUnknownError."""
    core = _core(kv)
    real_exec_sql = Session.exec_sql

    async def unreachable(self: Session, sql: str, params: Any = ()) -> Any:
        if _is_commit(sql):
            await real_exec_sql(self, "ROLLBACK")
            raise LeadershipLostError("injected", 10506)
        if sql == MARKER_PROBE:
            raise ConnectionLostError("injected: no leader reachable")
        return await real_exec_sql(self, sql, params)

    monkeypatch.setattr(Session, "exec_sql", unreachable)
    monkeypatch.setattr(core.db, "policy", dataclasses.replace(core.db.policy, deadline=1.0))
    with pytest.raises(kvstore.OutcomeUnknownError):
        kv.put(b"never", b"1")
    monkeypatch.undo()
    assert kv.get(b"never") is None


def test_concurrent_schema_creation(cowsql_cluster):
    url = cowsql_url(cowsql_cluster, _db(), private=1)
    handles: list[Any] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            handles.append(kvstore.open(url))
        except BaseException as e:  # asserted below
            errors.append(e)
    ts = [threading.Thread(target=open_one) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    try:
        assert not errors, errors
        revs = [h.put(b"k", b"%d" % i).revision for i, h in enumerate(handles)]
        assert revs == list(range(2, 6))
    finally:
        for h in handles:
            h.close()


#: what schema 1 made (kv_meta is unchanged since; kv_log has no token column
#: before schema 3): kv_live held the value
SCHEMA_1 = [
    S.SCHEMA[0],
    "INSERT INTO kv_meta VALUES (1, 1, 7, 0, 1, '', 0, NULL)",
    """CREATE TABLE kv_log (rev INTEGER NOT NULL, sub INTEGER NOT NULL, key BLOB NOT NULL,
        value BLOB NOT NULL, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,
        lease INTEGER NOT NULL, deleted INTEGER NOT NULL, prev_rev INTEGER NOT NULL,
        PRIMARY KEY (rev, sub)) WITHOUT ROWID""",
    """CREATE TABLE kv_live (key BLOB PRIMARY KEY, value BLOB NOT NULL,
        create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, version INTEGER NOT NULL,
        lease INTEGER NOT NULL) WITHOUT ROWID""",
    "CREATE INDEX kv_live_lease ON kv_live (lease) WHERE lease != 0",
    """CREATE TRIGGER kv_log_apply AFTER INSERT ON kv_log BEGIN
        DELETE FROM kv_live WHERE key = NEW.key AND NEW.deleted;
        INSERT OR REPLACE INTO kv_live
            SELECT NEW.key, NEW.value, NEW.create_rev, NEW.rev, NEW.version, NEW.lease
            WHERE NOT NEW.deleted;
    END""",
    S.SCHEMA[-2], S.SCHEMA[-1],
    "CREATE TABLE kv_batch (ts INTEGER NOT NULL, token BLOB NOT NULL, PRIMARY KEY (ts, token)) WITHOUT ROWID",
    """CREATE TRIGGER kv_meta_token AFTER UPDATE OF batch_token ON kv_meta
        WHEN NEW.batch_token IS NOT NULL BEGIN
        INSERT INTO kv_batch (ts, token) VALUES (0, NEW.batch_token);
    END""",
    # rev, sub, key, value, create_rev, version, lease, deleted, prev_rev
    """INSERT INTO kv_log VALUES (2, 0, x'61', x'31', 2, 1, 0, 0, 0),
        (3, 0, x'62', x'32', 3, 1, 0, 0, 0), (4, 0, x'61', x'33', 2, 2, 0, 0, 2),
        (5, 0, x'63', x'34', 5, 1, 0, 0, 0), (5, 1, x'64', x'35', 5, 1, 0, 0, 0),
        (6, 0, x'62', x'', 0, 0, 0, 1, 3), (7, 0, x'63', x'36', 5, 2, 0, 0, 5)""",
]


def test_schema_1_database_is_migrated_in_place(cowsql_cluster):
    """Schema 1 -> 2 -> 3 in the opening transaction: data, history and watches kept."""
    db = _db()
    conn = cowsqlpy.connect(cowsql_cluster.addresses, database=db)
    conn.executescript(";\n".join(SCHEMA_1))
    conn.commit()
    with kvstore.open(cowsql_url(cowsql_cluster, db, private=1)) as kv:
        assert [(k.key, k.value, k.create_revision, k.mod_revision, k.version)
                for k in kv.get_range(b"a", b"z")] == [
            (b"a", b"3", 2, 4, 2), (b"c", b"6", 5, 7, 2), (b"d", b"5", 5, 5, 1)]
        assert [(k.key, k.value) for k in kv.get_range(b"a", b"z", revision=5)] == [
            (b"a", b"3"), (b"b", b"2"), (b"c", b"4"), (b"d", b"5")]
        events = kv.watch_prefix(b"", start_revision=6)
        first = [next(events) for _ in range(2)]
        events.close()
        assert [(e.type.name, e.kv.key, e.prev_kv.value if e.prev_kv else None)
                for e in first] == [("DELETE", b"b", b"2"), ("PUT", b"c", b"4")]
        assert kv.put(b"a", b"7").revision == 8
        assert kv.get_kv(b"a").version == 3
    conn = cowsqlpy.connect(cowsql_cluster.addresses, database=db)
    assert conn.execute("SELECT schema_version FROM kv_meta").fetchall() == [(3,)]
    assert "value" not in {r[1] for r in conn.execute("PRAGMA table_info(kv_live)").fetchall()}
    assert "token" in {r[1] for r in conn.execute("PRAGMA table_info(kv_log)").fetchall()}
    assert conn.execute("SELECT name FROM sqlite_master WHERE name IN ('kv_batch', 'kv_meta_token')"
                        ).fetchall() == []
    conn.close()
    conn = cowsqlpy.connect(cowsql_cluster.addresses, database=db)
    conn.execute("UPDATE kv_meta SET schema_version = 4")
    conn.commit()
    conn.close()
    with pytest.raises(kvstore.BackendError, match="schema 4, this code knows 3"):
        kvstore.open(cowsql_url(cowsql_cluster, db, private=1))


def test_idle_reapers_leave_the_write_lock_alone(kv, monkeypatch):
    """With no lease due a reaper pass is a plain read: about one write transaction
    a second (the pass record), not one per pass; a due lease is still expired."""
    monkeypatch.setattr(kvstore.backends.cowsql.tuning, "REAP_INTERVAL", 0.02)
    time.sleep(0.6)  # the reaper's current (default) sleep ends
    b0 = _core(kv).batches
    time.sleep(1.0)  # ~50 passes
    assert _core(kv).batches - b0 <= 2
    lease = kv.grant(1)
    kv.put(b"leased", b"x", lease=lease)
    wait_until(lambda: kv.get(b"leased") is None, timeout=10, what="lease expiry")


def test_auto_compact_keeps_the_last_n_revisions(cowsql_cluster, monkeypatch):
    monkeypatch.setattr(kvstore.backends.cowsql.tuning, "AUTO_COMPACT_INTERVAL", 0.05)
    with kvstore.open(cowsql_url(cowsql_cluster, _db(), private=1, auto_compact=30)) as kv:
        for i in range(100):
            kv.put(b"k%d" % (i % 5), b"%d" % i)
        rev = kv.revision()

        def compacted() -> bool:
            try:
                kv.get(b"k0", revision=2)
            except CompactedError:
                return True
            return False
        wait_until(compacted, timeout=20, what="auto-compaction")
        # the last 30 revisions stay readable, and the old versions are gone
        assert kv.get(b"k4", revision=rev - 30) is not None
        wait_until(lambda: _log_rows(kv) < 60, timeout=20, what="physical compaction")
    for bad in ("-1", "x"):
        with pytest.raises(kvstore.InvalidArgument, match="auto_compact"):
            kvstore.open(cowsql_url(cowsql_cluster, _db(), auto_compact=bad))


def _query(kv: kvstore.KV, sql: str) -> list[tuple[Any, ...]]:
    return asyncio.run_coroutine_threadsafe(_core(kv)._query(sql, ()), _core(kv).loop).result(30)


def _log_rows(kv: kvstore.KV) -> int:
    return int(_query(kv, "SELECT count(*) FROM kv_log")[0][0])


def test_physical_compaction_in_chunks(kv, monkeypatch):
    monkeypatch.setattr(kvstore.backends.cowsql.tuning, "COMPACT_WINDOW", 7)
    for i in range(40):
        kv.put(b"hot", b"%d" % i)
    kv.put(b"gone", b"x")
    kv.delete(b"gone")
    keep = kv.put(b"cold", b"c").revision
    mid = kv.put(b"hot", b"last").revision
    before = _log_rows(kv)
    with kv.watch_key(b"hot", start_revision=mid) as w:
        kv.compact(mid)
        ev = w.get(timeout=10)
    assert ev.revision == mid and ev.value == b"last"
    b0 = _core(kv).batches
    wait_until(lambda: _log_rows(kv) == 2, timeout=30, what="physical compaction")  # hot@mid, cold
    assert before == 44 and _core(kv).batches - b0 > 1    # several small chunks
    assert kv.get(b"cold", revision=mid) == b"c" and kv.get_kv(b"cold").mod_revision == keep
    assert kv.get(b"hot", revision=mid) == b"last"
    assert kv.get(b"gone", revision=mid) is None
    with pytest.raises(CompactedError):
        kv.get(b"hot", revision=mid - 1)
    with pytest.raises(CompactedError):
        with kv.watch_key(b"hot", start_revision=mid - 1) as w2:
            w2.get(timeout=10)



# --- history without a key index: reads at past revisions and compaction ------
_history_ops = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from([b"a", b"ab", b"b", b"c"]), st.binary(max_size=3)),
    st.tuples(st.just("del"), st.sampled_from([b"a", b"ab", b"b", b"c"])),
    st.tuples(st.just("del_prefix"), st.sampled_from([b"a", b"b"])),
    st.tuples(st.just("multi"), st.lists(st.sampled_from([b"a", b"ab", b"b", b"c"]),
                                         min_size=1, max_size=4, unique=True)),
    st.tuples(st.just("mixed"), st.sampled_from([b"a", b"c"])),
), min_size=1, max_size=25)


def _apply_history(kv: kvstore.KV, ops: list[Any]) -> None:
    for op in ops:
        if op[0] == "put":
            kv.put(op[1], op[2])
        elif op[0] == "del":
            kv.delete(op[1])
        elif op[0] == "del_prefix":
            kv.delete_prefix(op[1])
        elif op[0] == "multi":   # several versions in one revision (sub 0, 1, ...)
            kv.txn(success=[Put(k, b"m" + k) for k in op[1]])
        else:   # tombstones and new versions in one revision, in both orders
            wipe = DeleteRange(b"b", b"c") if op[1] == b"a" else DeleteRange(b"a", b"b")
            kv.txn(success=[wipe, Put(op[1], b"w")] if op[1] == b"a" else [Put(op[1], b"w"), wipe])


def _kept_after_compaction(rows: list[tuple[int, int, bytes, int]], c: int) -> set[tuple[int, int]]:
    """etcd's rule: per key, every version after ``c`` and the newest at or before
    it unless that one is a tombstone older than ``c``."""
    kept: set[tuple[int, int]] = set()
    newest: dict[bytes, tuple[int, int, int]] = {}
    for rev, sub, key, deleted in sorted(rows):
        if rev > c:
            kept.add((rev, sub))
        else:
            newest[key] = (rev, sub, deleted)
    kept.update((rev, sub) for rev, sub, deleted in newest.values() if not (deleted and rev < c))
    return kept


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=_history_ops, data=st.data())
def test_history_and_compaction_match_the_model(cowsql_cluster, ops, data):
    """Reads at every past revision (full metadata) equal the mem backend's after
    the same ops, before and after a compaction, and physical compaction keeps
    exactly the rows etcd's rule keeps."""
    model = kvstore.open(f"mem:hist-{uuid.uuid4().hex}")
    kv = kvstore.open(cowsql_url(cowsql_cluster, _db(), private=1))
    try:
        _apply_history(model, ops)
        _apply_history(kv, ops)
        cur = kv.revision()
        assert cur == model.revision()

        def same_history(since: int) -> None:
            for rev in range(since, cur + 1):
                assert kv.get_range(b"\x00", revision=rev).kvs == model.get_range(b"\x00", revision=rev).kvs, rev
            assert kv.get_range(b"a", b"b", revision=since, keys_only=True).kvs == \
                model.get_range(b"a", b"b", revision=since, keys_only=True).kvs

        same_history(1)
        if cur > 1:
            c = data.draw(st.integers(2, cur), label="compact")
            rows = [tuple(r) for r in _query(kv, "SELECT rev, sub, key, deleted FROM kv_log")]
            kv.compact(c)
            model.compact(c)
            expected = _kept_after_compaction(
                [(r[0], r[1], bytes(r[2]), r[3]) for r in rows], c)
            wait_until(lambda: {(r[0], r[1]) for r in _query(kv, "SELECT rev, sub FROM kv_log")}
                       == expected, timeout=30, what="physical compaction")
            same_history(c)
    finally:
        kv.close()
        model.close()


def test_restart_of_the_engine_cluster_keeps_all_data(tmp_path):
    c = Cluster(3, app=False, network_latency=0.02, base_dir=tmp_path)
    try:
        url = f"cowsql://{','.join(c.addresses)}/restart"
        kv = kvstore.open(url)
        revs = [kv.put(f"k{i}", f"v{i}").revision for i in range(50)]
        kv.put("big", b"x" * 200_000)
        kv.delete("k0")
        lease = kv.grant(300)
        kv.put("leased", b"l", lease=lease)
        kv.compact(revs[5])
        digest = (kv.revision(), kv.get_prefix("").items())
        kv.close()
        c.restart_all()
        kv = kvstore.open(url)
        try:
            assert (kv.revision(), kv.get_prefix("").items()) == digest
            assert kv.get("k0", revision=revs[10]) == b"v0"
            with pytest.raises(CompactedError):
                kv.get("k1", revision=revs[4])
            assert kv.ttl(lease).granted_ttl == 300 and kv.get_kv("leased").lease == lease.id
            assert len(kv.get("big")) == 200_000
            assert kv.put("after", b"1").revision == digest[0] + 1
        finally:
            kv.close()
    finally:
        c.close()


def test_failover_keeps_every_acknowledged_put(tmp_path):
    c = Cluster(3, app=False, network_latency=0.02, base_dir=tmp_path)
    try:
        url = f"cowsql://{','.join(c.addresses)}/failover"
        kv = kvstore.open(url)
        acked: dict[bytes, bytes] = {}
        unknown: list[bytes] = []
        errors: list[BaseException] = []
        stop = threading.Event()
        lock = threading.Lock()

        def writer(w: int) -> None:
            i = 0
            while not stop.is_set() or i < 30:
                key, val = b"f/%d/%d" % (w, i), b"%d" % i
                try:
                    kv.put(key, val)
                    with lock:
                        acked[key] = val
                except kvstore.OutcomeUnknownError:
                    unknown.append(key)
                except BaseException as e:  # asserted below
                    errors.append(e)
                    return
                i += 1
        ts = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in ts:
            t.start()
        wait_until(lambda: len(acked) >= 100, timeout=60, what="puts before the failover")
        leader = c.wait_leader()
        c.kill(leader)
        n_at_kill = len(acked)
        wait_until(lambda: len(acked) >= n_at_kill + 100, timeout=60,
                   what="puts on the new leader")
        stop.set()
        for t in ts:
            t.join(60)
        assert not errors, errors
        got = dict(kv.get_prefix(b"f/").items())
        missing = {k for k in acked if got.get(k) != acked[k]}
        assert not missing, sorted(missing)[:5]
        # revisions stayed gap-free: one per applied put, nothing else wrote
        assert kv.revision() == 1 + len(got)
        kv.close()
    finally:
        c.close()


@pytest.mark.parametrize("read", ["linearizable", "serializable"])
def test_reads_take_a_barrier_unless_serializable(cowsql_cluster: Any, read: str) -> None:
    """A linearizable get (the default) commits a read barrier, a Raft entry of its own
    (`Database.barrier`); a serializable one runs on the leader with none."""
    h = kvstore.open(cowsql_url(cowsql_cluster, _db(), private=1, **({} if read == "linearizable" else {"read": read})))
    try:
        h.put(b"k", b"v")
        before = _core(h).db.barrier.rounds
        assert h.get(b"k") == b"v"
        assert h.get(b"missing") is None
        assert _core(h).db.barrier.rounds - before == (2 if read == "linearizable" else 0)
    finally:
        h.close()


def test_read_option_is_checked(cowsql_cluster: Any) -> None:
    with pytest.raises(kvstore.InvalidArgument, match="read"):
        kvstore.open(cowsql_url(cowsql_cluster, _db(), read="eventual"))


def test_the_backend_imports_without_msgpack_or_the_replica() -> None:
    """cowsql:// needs neither msgpack nor the MVCC replica (mem:/raft:// do)."""
    import subprocess
    import sys

    code = ("import sys, kvstore, kvstore.backends.cowsql; "
            "print(sorted(m for m in ('msgpack', 'kvstore.mvcc', 'kvstore.replica', 'pysyncobj') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
