"""Group commit: concurrent autocommit writes share engine transactions, each acknowledged
on its own and only when it really committed."""

from __future__ import annotations

import asyncio
import threading

import pytest

import cowsqlpy
from cowsqlpy.database import Database
from cowsqlpy.runtime import run_sync
from tests.client.conftest import InProcessCluster


async def _batch(db: Database, statements: list[tuple[str, tuple[object, ...]]]) -> list[object]:
    """Submit all statements at once, so they land in one batch."""
    results = await asyncio.gather(
        *(db.execute(sql, params, coalesce=True) for sql, params in statements), return_exceptions=True
    )
    return list(results)


def test_one_batch_many_acknowledgements(cluster: InProcessCluster, dbname: str) -> None:
    db = cluster.database(dbname)
    run_sync(db.execute("CREATE TABLE g (k TEXT PRIMARY KEY)", (), coalesce=False))
    results = run_sync(_batch(db, [("INSERT INTO g VALUES (?)", (f"k{i}",)) for i in range(50)]))
    assert db.batches == 1 and db.batched_statements == 50
    assert all(r == (i + 1, 1) for i, r in enumerate(results)), results[:5]  # (lastrowid, rowcount) each
    assert cluster.rows(dbname, "SELECT count(*) FROM g") == [(50,)]


def test_a_failing_statement_fails_alone(cluster: InProcessCluster, dbname: str) -> None:
    db = cluster.database(dbname)
    run_sync(db.execute("CREATE TABLE g (k TEXT PRIMARY KEY)", (), coalesce=False))
    run_sync(db.execute("INSERT INTO g VALUES ('taken')", (), coalesce=False))
    keys = ["a", "b", "taken", "c", "taken", "d"]
    results = run_sync(_batch(db, [("INSERT INTO g VALUES (?)", (k,)) for k in keys]))
    for k, r in zip(keys, results, strict=True):
        if k == "taken":
            assert isinstance(r, cowsqlpy.IntegrityError), r
        else:
            assert r == (r[0], 1), r  # type: ignore[index]
    assert sorted(k for (k,) in cluster.rows(dbname, "SELECT k FROM g")) == ["a", "b", "c", "d", "taken"]


@pytest.mark.parametrize("conflict_at", [0, 3, 7])
def test_statement_that_rolls_back_the_transaction(cluster: InProcessCluster, dbname: str, conflict_at: int) -> None:
    """ON CONFLICT ROLLBACK ends the batch's transaction: the client must find out,
    run the undone statements again, and never acknowledge a write that is not there."""
    db = cluster.database(dbname)
    run_sync(db.execute("CREATE TABLE g (k TEXT UNIQUE ON CONFLICT ROLLBACK)", (), coalesce=False))
    run_sync(db.execute("INSERT INTO g VALUES ('taken')", (), coalesce=False))
    keys = [f"k{i}" for i in range(8)]
    keys[conflict_at] = "taken"
    results = run_sync(_batch(db, [("INSERT INTO g VALUES (?)", (k,)) for k in keys]))
    present = {k for (k,) in cluster.rows(dbname, "SELECT k FROM g")}
    for k, r in zip(keys, results, strict=True):
        if k == "taken":
            assert isinstance(r, cowsqlpy.IntegrityError), r
        elif isinstance(r, cowsqlpy.OutcomeUnknownError):
            continue  # honest: either way is possible
        else:
            assert isinstance(r, tuple), r
            assert k in present, f"acknowledged {k} is missing"
    # Nothing that was refused slipped in, and with one failure nothing is left unknown.
    assert not any(isinstance(r, cowsqlpy.OutcomeUnknownError) for r in results)
    assert present == set(keys)
    # The rollback really happened: only the statements before the conflict were run
    # again in a batch of their own; those after it had committed on their own.
    assert db.batched_statements == conflict_at


def test_threads_through_the_dbapi_share_transactions(cluster: InProcessCluster, dbname: str) -> None:
    setup = cowsqlpy.connect(cluster.addresses, database=dbname, autocommit=True)
    setup.execute("CREATE TABLE g (k TEXT PRIMARY KEY, w INTEGER)")
    errors: list[BaseException] = []
    acked: list[tuple[str, int]] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        conn = cowsqlpy.connect(cluster.addresses, database=dbname, autocommit=True)
        try:
            for i in range(40):
                cur = conn.execute("INSERT INTO g VALUES (?, ?)", (f"{w}-{i}", w))
                with lock:
                    acked.append((f"{w}-{i}", cur.lastrowid))  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    rows = dict(setup.execute("SELECT k, rowid FROM g").fetchall())
    assert len(rows) == 8 * 40
    assert all(rows[k] == rowid for k, rowid in acked)  # each lastrowid is its own statement's
    setup.close()


@pytest.mark.parametrize("committed", [True, False], ids=["applied", "rolled-back"])
def test_lost_commit_reply_is_resolved_exactly_once(
    cluster: InProcessCluster, dbname: str, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    """The batch's COMMIT reply is lost with the leader (10506) after the commit really
    happened, or after it was rolled back: the marker decides, every write is
    acknowledged once and applied once (a second apply would break the primary key)."""
    from cowsqlpy.client import Session
    from cowsqlpy.database import COMMIT_WITH_MARKER
    from cowsqlpy.errors import LeadershipLostError

    db = cluster.database(dbname)
    run_sync(db.execute("CREATE TABLE g (k TEXT PRIMARY KEY)", (), coalesce=False))
    real_submit = Session.submit_exec_sql
    fired: list[int] = []

    def lossy_submit(self: Session, sql: str, params: object = ()) -> object:
        if sql == COMMIT_WITH_MARKER and not fired:
            fired.append(1)
            reply = real_submit(self, sql if committed else "ROLLBACK", params if committed else ())

            async def lost() -> object:
                await reply
                raise LeadershipLostError("injected: reply lost with the leader", 10506)

            return lost()
        return real_submit(self, sql, params)  # type: ignore[arg-type]

    monkeypatch.setattr(Session, "submit_exec_sql", lossy_submit)
    results = run_sync(_batch(db, [("INSERT INTO g VALUES (?)", (f"k{i}",)) for i in range(5)]))
    assert fired and db.resolutions == 1
    assert all(isinstance(r, tuple) and r[1] == 1 for r in results), results
    assert cluster.rows(dbname, "SELECT count(*) FROM g") == [(5,)]


def test_prepared_batch_statements_keep_their_own_outcomes(cluster: InProcessCluster, dbname: str) -> None:
    """From a text's second use on a session, a batch runs it as a prepared statement
    (the leader skips compiling it); each write still gets its own result or error, and
    a text whose PREPARE fails gets its error from the statement itself."""
    db = cluster.database(dbname)
    run_sync(db.execute("CREATE TABLE g (k TEXT PRIMARY KEY)", (), coalesce=False))
    insert, broken = "INSERT INTO g VALUES (?)", "INSERT INTO nowhere VALUES (?)"
    Batch = list[tuple[str, tuple[object, ...]]]
    for round_ in ("a", "b"):  # the texts are seen, then prepared
        warm: Batch = [(insert, (f"{round_}{i}",)) for i in range(5)]
        run_sync(_batch(db, [*warm, (broken, (round_,))]))
    last: Batch = [(insert, ("c0",)), (insert, ("a0",)), (broken, ("c",)), (insert, ("c1",)), (insert, ("c2",))]
    results = run_sync(_batch(db, last))
    cached = {sql for session in db._idle for sql in session._cache}  # white-box: the prepared path ran
    assert insert in cached and broken not in cached
    assert isinstance(results[1], cowsqlpy.IntegrityError), results[1]
    assert isinstance(results[2], cowsqlpy.OperationalError) and "no such table" in str(results[2])
    assert all(isinstance(results[i], tuple) and results[i][1] == 1 for i in (0, 3, 4)), results  # type: ignore[index]
    rows = {k for (k,) in cluster.rows(dbname, "SELECT k FROM g")}
    assert rows == {f"{r}{i}" for r in "ab" for i in range(5)} | {"c0", "c1", "c2"}
    run_sync(db.close())
