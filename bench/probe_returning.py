"""When is INSERT/UPDATE/DELETE ... RETURNING safe on libdqlite 1.11.1? (issue 17; diagnostic)

    .venv/bin/python bench/probe_returning.py [--transactions 3000] [--transfer-every 100]
        [--kills 2] [--autocommit]

Three Canonical `dqlite-demo` processes (go-dqlite on Debian's libdqlite 1.11.1) form a
cluster; this script talks to them over the wire with cowsqlpy's client core (no driver
guard), sending RETURNING the way a driver would: QUERY_SQL (or PREPARE + QUERY) inside
BEGIN ... COMMIT, the transaction ended by EXEC_SQL. The kinds cycle: one-row INSERT,
prepared INSERT, a 300-row INSERT ... SELECT (several ROWS batches), UPDATE, DELETE,
a 4.5 MB INSERT every 300 transactions (over SQLite's default page cache, so it may
spill into the WAL before COMMIT), a RETURNING between two plain INSERTs, RETURNING
rolled back, RETURNING under SAVEPOINT/RELEASE, a RETURNING that fails at its 150th
row (UNIQUE), RETURNING sent through EXEC_SQL, and a control transaction with no
RETURNING. Leadership is transferred every
`--transfer-every` transactions (every other time between the RETURNING and the
COMMIT), the leader is SIGKILLed and restarted `--kills` times. At the end every node
in turn leads and must hold exactly the committed rows: the ids RETURNING reported and
the values it reported for them. `--autocommit` then sends one RETURNING outside a
transaction followed by a plain write (the known crash) to confirm it on this build.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from cowsqlpy import VOTER, RetryPolicy
from cowsqlpy.client import Client, LeaderTracker, Session
from cowsqlpy.errors import Error, OperationalError, ProtocolError
from cowsqlpy.store import MemoryNodeStore

POLICY = RetryPolicy(deadline=30.0, attempt_timeout=10.0, connect_timeout=2.0)
DB = "returning"
BIG_EVERY = 12 * 25  # a multiple of len(KINDS)
KINDS = ("insert", "prepared", "multi", "update", "delete", "big", "mixed", "rollback", "savepoint", "conflict",
         "exec", "control")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoNode:
    def __init__(self, base: str, index: int, join: list[str]) -> None:
        self.dir = os.path.join(base, f"node{index}")
        self.api = f"127.0.0.1:{free_port()}"
        self.db = f"127.0.0.1:{free_port()}"
        self.log_path = os.path.join(base, f"node{index}.log")
        self.join = join
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []

    def start(self) -> None:
        cmd = ["dqlite-demo", "--api", self.api, "--db", self.db, "--dir", self.dir]
        if self.join:
            cmd += ["--join", ",".join(self.join)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{self.api}/probe", timeout=2).read()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"dqlite-demo did not come up:\n{self.log()}") from None
                time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-1500:]


@dataclass
class Tally:
    committed: dict[int, tuple[str, int]] = field(default_factory=dict)  # id -> (v, n) RETURNING said
    absent: dict[int, tuple[str, int]] = field(default_factory=dict)  # rows RETURNING gave in a rolled-back tx
    unknown: set[int] = field(default_factory=set)  # ids whose COMMIT reply was lost
    statements: int = 0
    returned_rows: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    lost_tx: int = 0  # transactions that died before COMMIT (leader change)
    errors: dict[str, int] = field(default_factory=dict)
    wrong_rows: list[str] = field(default_factory=list)
    inflight: dict[int, tuple[str, int]] = field(default_factory=dict)  # rows of the open transaction


async def returning(session: Session, sql: str, params: tuple[object, ...] = (), prepared: bool = False) -> list[tuple]:
    if prepared:
        stmt = await session.cached_statement(sql) or await session.cached_statement(sql)
        assert stmt is not None
        rows: list[tuple] = []
        async for _, batch in session.query(stmt, params):
            rows.extend(batch)
        return rows
    return await session.query_all(sql, params)


async def one_transaction(session: Session, kind: str, i: int, tally: Tally, transfer: Client | None) -> None:
    """One transaction of `kind`; `transfer`: move the leadership before its COMMIT."""
    pending = tally.inflight = {}
    await session.exec_sql("SAVEPOINT s" if kind == "savepoint" else "BEGIN")
    tally.statements += 1
    v = f"v{i}"
    if kind in ("insert", "rollback", "savepoint"):
        rows = await returning(session, "INSERT INTO r (v, n) VALUES (?, 0) RETURNING id, v, n", (v,))
    elif kind == "prepared":
        rows = await returning(session, "INSERT INTO r (v, n) VALUES (?, 0) RETURNING id, v, n", (v,), prepared=True)
    elif kind == "multi":
        rows = await returning(
            session,
            "INSERT INTO r (v, n) SELECT ? || '-' || x, 0 FROM (WITH RECURSIVE c(x) AS "
            "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) SELECT x FROM c) RETURNING id, v, n",
            (v,),
        )
    elif kind == "big":
        rows = await returning(
            session,
            "INSERT INTO r (v, n, pad) SELECT ? || '-' || x, 0, randomblob(3000) FROM (WITH RECURSIVE c(x) AS "
            "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500) SELECT x FROM c) RETURNING id, v, n",
            (v,),
        )
    elif kind == "update":
        target = max(tally.committed) if tally.committed else 0
        rows = await returning(session, "UPDATE r SET n = n + 1, v = ? WHERE id = ? RETURNING id, v, n", (v, target))
    elif kind == "delete":
        new_id, _ = await session.exec_sql("INSERT INTO r (v, n) VALUES (?, 0)", (v,))
        tally.statements += 1
        rows = await returning(session, "DELETE FROM r WHERE id = ? RETURNING id, v, n", (new_id,))
        if [r[0] for r in rows] != [new_id]:
            tally.wrong_rows.append(f"{kind} {i}: DELETE RETURNING gave {rows}, wanted id {new_id}")
        rows = []  # deleted: nothing of it stays
    elif kind == "mixed":
        a, _ = await session.exec_sql("INSERT INTO r (v, n) VALUES (?, 0)", (v + "a",))
        rows = await returning(session, "INSERT INTO r (v, n) VALUES (?, 0) RETURNING id, v, n", (v,))
        b, _ = await session.exec_sql("INSERT INTO r (v, n) VALUES (?, 0)", (v + "b",))
        tally.statements += 2
        pending[a] = (v + "a", 0)
        pending[b] = (v + "b", 0)
    elif kind == "conflict":  # a 300-row RETURNING that fails at its 150th row (UNIQUE): undone
        a, _ = await session.exec_sql("INSERT INTO r (v, n) VALUES (?, 0)", (v + "a",))
        tally.statements += 1
        pending[a] = (v + "a", 0)
        try:
            rows = await returning(
                session,
                "INSERT INTO r (id, v, n) SELECT CASE WHEN x = 150 THEN ? ELSE ? + x END, ? || '-' || x, 0 "
                "FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) "
                "SELECT x FROM c) RETURNING id, v, n",
                (a, a + 1_000_000_000, v),
            )
            tally.wrong_rows.append(f"{kind} {i}: the conflicting RETURNING gave {len(rows)} rows")
        except Error as exc:
            # 1.11.1 puts the result's column header in front of a failed query's FAILURE
            # body (query__batch writes it before the first step): our codec then finds
            # bytes after the message. Either way the statement failed.
            key = f"conflict: {type(exc).__name__} {exc.code}"
            tally.errors[key] = tally.errors.get(key, 0) + 1
            if not isinstance(exc, ProtocolError) and (exc.code or 0) & 0xFF != 19:
                raise RuntimeError(f"{kind} {i}: {exc!r}") from exc
            tally.absent.update({a + 1_000_000_000 + x: (f"{v}-{x}", 0) for x in range(1, 301) if x != 150})
        rows = []
    elif kind == "exec":  # RETURNING through EXEC_SQL (as a careless driver would) inside the transaction
        try:
            await session.exec_sql("INSERT INTO r (v, n) VALUES (?, 0) RETURNING id", (v,))
            tally.errors["exec RETURNING accepted"] = tally.errors.get("exec RETURNING accepted", 0) + 1
        except Error as exc:
            key = f"exec RETURNING: {type(exc).__name__} {exc.code}"
            tally.errors[key] = tally.errors.get(key, 0) + 1
        (present,) = await session.query_all("SELECT count(*) FROM r WHERE v = ?", (v,))
        if present[0]:
            tally.errors["exec RETURNING wrote its row"] = tally.errors.get("exec RETURNING wrote its row", 0) + 1
            found = await session.query_all("SELECT id, v, n FROM r WHERE v = ?", (v,))
            pending.update({r[0]: (r[1], r[2]) for r in found})
        rows = []
    else:  # control: no RETURNING
        new_id, _ = await session.exec_sql("INSERT INTO r (v, n) VALUES (?, 0)", (v,))
        rows = [(new_id, v, 0)]
    tally.statements += 1
    tally.returned_rows += len(rows) if kind != "control" else 0
    want = {"multi": 300, "big": 1500, "delete": 0, "conflict": 0, "exec": 0}.get(kind, 1 if kind != "update" or tally.committed else 0)
    if len(rows) != want:
        tally.wrong_rows.append(f"{kind} {i}: {len(rows)} rows returned, wanted {want}")
    for row_id, value, n in rows:
        pending[row_id] = (value, n)
    if transfer is not None:
        await transfer.transfer(0)  # mid-transaction: COMMIT must now fail, nothing applied
    if kind == "rollback":
        await session.exec_sql("ROLLBACK")
        tally.absent.update(pending)
        tally.inflight = {}
        return
    try:
        await session.exec_sql("RELEASE s" if kind == "savepoint" else "COMMIT")
    except OperationalError as exc:
        if type(exc).__name__ in ("LeadershipLostError", "ConnectionLostError"):
            tally.unknown.update(pending)
            tally.inflight = {}
            return
        raise
    tally.statements += 1
    tally.committed.update(pending)
    tally.inflight = {}
    tally.by_kind[kind] = tally.by_kind.get(kind, 0) + 1


async def stress(nodes: list[DemoNode], args: argparse.Namespace, tally: Tally) -> None:
    store = MemoryNodeStore([n.db for n in nodes])
    tracker = LeaderTracker(store, POLICY)
    admin = Client(store, policy=POLICY)
    session: Session | None = None
    kill_at = {args.transactions * (k + 1) // (args.kills + 1) for k in range(args.kills)}
    for i in range(args.transactions):
        if i in kill_at:
            leader = await admin.leader()
            victim = next(n for n in nodes if leader is not None and n.db == leader.address)
            victim.kill()
            print(f"  tx {i}: SIGKILL leader {victim.db}; restarting it", flush=True)
            victim.start()
        if session is None or session.closed:
            session = Session(await tracker.connect(), POLICY)
            await session.open(DB)
        kind = KINDS[i % len(KINDS)]
        if kind == "big" and i % BIG_EVERY != KINDS.index("big"):
            kind = "insert"  # the 4.5 MB kind every BIG_EVERY transactions only: memory
        move = i and i % args.transfer_every == 0
        mid = move and (i // args.transfer_every) % 2 == 1
        try:
            if move and not mid:
                await admin.transfer(0)
                session.close()
                continue
            await one_transaction(session, kind, i, tally, admin if mid else None)
        except Error as exc:
            name = type(exc).__name__
            tally.errors[name] = tally.errors.get(name, 0) + 1
            tally.lost_tx += 1
            tally.absent.update(tally.inflight)  # never committed: must not be there
            session.close()
            tracker.forget()
        if (i + 1) % 500 == 0:
            print(f"  {i + 1} transactions, {tally.statements} statements, all alive: "
                  f"{all(n.alive() for n in nodes)}", flush=True)
        if not all(n.alive() for n in nodes):
            dead = [n for n in nodes if not n.alive()]
            print(f"  tx {i} ({kind}): node(s) died: {[n.db for n in dead]}\n{dead[0].log()}", flush=True)
            return
    if session is not None:
        session.close()
    await admin.close()


async def verify(nodes: list[DemoNode], tally: Tally) -> list[str]:
    """Every node leads in turn and must hold exactly the committed rows."""
    problems: list[str] = []
    store = MemoryNodeStore([n.db for n in nodes])
    admin = Client(store, policy=POLICY)
    ids = {n.address: n.id for n in await admin.cluster()}
    for node in nodes:
        for _ in range(20):
            leader = await admin.leader()
            if leader is not None and leader.address == node.db:
                break
            try:
                await admin.transfer(ids[node.db])
            except Error:
                await asyncio.sleep(0.5)
        session = Session(await LeaderTracker(store, POLICY).connect(), POLICY)
        await session.open(DB)
        present = {r[0]: (r[1], r[2]) for r in await session.query_all("SELECT id, v, n FROM r")}
        session.close()
        if session.address != node.db:
            problems.append(f"{node.db} could not be made leader; checked {session.address}")
        missing = [k for k in tally.committed if k not in present]
        wrong = [k for k, val in tally.committed.items() if k in present and present[k] != val]
        ghosts = [k for k, val in tally.absent.items() if present.get(k) == val]  # ids are reused
        extra = [k for k in present if k not in tally.committed and k not in tally.unknown]
        print(f"  {session.address}: {len(present)} rows; missing {len(missing)}, wrong values "
              f"{len(wrong)}, rolled-back present {len(ghosts)}, unexplained {len(extra)}", flush=True)
        if missing or wrong or ghosts:
            problems.append(f"{session.address}: missing {missing[:5]} wrong {wrong[:5]} ghosts {ghosts[:5]}")
    await admin.close()
    return problems


async def autocommit_crash(nodes: list[DemoNode]) -> str:
    store = MemoryNodeStore([n.db for n in nodes])
    session = Session(await LeaderTracker(store, POLICY).connect(), POLICY)
    await session.open(DB)
    leader = session.address
    outcome = []
    try:
        rows = await session.query_all("INSERT INTO r (v, n) VALUES ('autocommit', 0) RETURNING id")
        outcome.append(f"RETURNING in autocommit gave {rows}")
        await session.exec_sql("INSERT INTO r (v, n) VALUES ('next', 0)")
        outcome.append("the next write succeeded")
    except Error as exc:
        outcome.append(f"{type(exc).__name__}: {exc}")
    finally:
        session.close()
    await asyncio.sleep(1.0)
    node = next(n for n in nodes if n.db == leader)
    outcome.append(f"leader {leader} alive: {node.alive()}")
    if not node.alive():
        tail = [line for line in node.log().splitlines() if "ssert" in line]
        outcome.append(tail[-1] if tail else node.log()[-300:])
    return "; ".join(outcome)


async def setup(nodes: list[DemoNode]) -> None:
    store = MemoryNodeStore([n.db for n in nodes])
    admin = Client(store, policy=POLICY)
    deadline = time.monotonic() + 60
    while True:
        roles = {n.address: n.role for n in await admin.cluster()}
        if len(roles) == 3 and all(r == VOTER for r in roles.values()):
            break
        for n in await admin.cluster():
            if n.role != VOTER:
                try:
                    await admin.assign(n.id, VOTER)
                except Error:
                    pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no 3 voters: {roles}")
        await asyncio.sleep(0.5)
    await admin.close()
    session = Session(await LeaderTracker(store, POLICY).connect(), POLICY)
    await session.open(DB)
    await session.exec_sql("CREATE TABLE IF NOT EXISTS r (id INTEGER PRIMARY KEY, v TEXT, n INTEGER, pad BLOB)")
    await session.exec_sql("INSERT INTO r (v, n) VALUES ('seed', 0)")
    session.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transactions", type=int, default=3000)
    ap.add_argument("--transfer-every", type=int, default=100)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--autocommit", action="store_true", help="finally confirm the autocommit crash")
    args = ap.parse_args()
    if shutil.which("dqlite-demo") is None:
        sys.exit("dqlite-demo (Debian go-dqlite) is not installed")
    base = tempfile.mkdtemp(prefix="probe-returning-")
    nodes: list[DemoNode] = []
    try:
        for i in range(3):
            node = DemoNode(base, i, [nodes[0].db] if nodes else [])
            node.start()
            nodes.append(node)
        asyncio.run(setup(nodes))
        print(f"3 dqlite-demo nodes: {[n.db for n in nodes]}", flush=True)
        tally = Tally()
        t0 = time.monotonic()
        asyncio.run(stress(nodes, args, tally))
        print(f"{args.transactions} transactions in {time.monotonic() - t0:.0f} s: {tally.statements} "
              f"statements, {tally.returned_rows} rows returned by RETURNING; committed by kind {tally.by_kind}; "
              f"transactions lost to leader changes {tally.lost_tx} {tally.errors}; commit in doubt: "
              f"{len(tally.unknown)} rows", flush=True)
        print(f"nodes alive: {[n.alive() for n in nodes]}", flush=True)
        for w in tally.wrong_rows[:10]:
            print("  wrong:", w)
        if all(n.alive() for n in nodes):
            problems = asyncio.run(verify(nodes, tally))
            print("verify:", "OK" if not problems else problems, flush=True)
        if args.autocommit:
            print("autocommit:", asyncio.run(autocommit_crash(nodes)), flush=True)
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
