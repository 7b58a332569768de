"""Recorded workloads against a real cluster under a nemesis, each checked; shared by
the tests in tests/faults and the torture runner (`python -m cowsqlpy.testing.torture`).

Each scenario returns a `RunReport`: the checks it ran and what they found,
the nemesis log with its seed, and (when a check failed and `save_dir` is set)
the path of the saved history, which `History.load` reads back for a re-check.

* `sql_register`: per-key registers with write/CAS/read through the DB-API
  (autocommit), one driver core per client, checked by `RegisterModel`;
* `sql_bank`, `sql_list_append`: transactions through the DB-API, checked by
  `bank.check_bank` and `listappend.check_list_append`;
* `kv_workload`: `kvstore` put/get/range/delete/txn with watches, any backend
  URL, checked by `KVModel` (whole store) and `watchcheck`;
* `converged`: every node holds the same rows (logical dump of each node).
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..retry import RetryPolicy
from ..store import MemoryNodeStore
from . import bank, listappend
from .cluster import Cluster
from .history import FAIL, OK, UNKNOWN, History, Operation
from .linearizability import CheckResult, KVModel, RegisterModel, check
from .nemesis import Nemesis
from .watchcheck import WatchRecord, check_watches, format_violations
from .workloads import (
    REGISTER_SCHEMA,
    KVOpGenerator,
    event_json,
    kv_apply,
    kv_error_is_definite,
    sql_error_is_definite,
    sql_register_apply,
)

__all__ = ["RunReport", "client_policy", "converged", "kv_definite", "kv_workload", "patch_with_watch", "read_anomaly_only", "sql_bank",
           "sql_list_append", "sql_register"]

#: per-client retry policy: long enough to ride out an election, short enough
#: that a run ends soon after its deadline
CLIENT_POLICY = RetryPolicy(deadline=6.0, attempt_timeout=2.0, connect_timeout=1.0)


def client_policy() -> RetryPolicy:
    return CLIENT_POLICY


@dataclass
class RunReport:
    name: str
    seed: int
    operations: int = 0
    checks: dict[str, str] = field(default_factory=dict)  # check -> "ok" or what it found
    failed: list[str] = field(default_factory=list)
    nemesis_log: str = ""
    history_path: str | None = None
    elapsed: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # check -> the checker's result object
    history: list[Operation] = field(default_factory=list, repr=False)  # as checked (after patching)

    @property
    def ok(self) -> bool:
        return not self.failed

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks[name] = "ok" if ok else detail
        if not ok:
            self.failed.append(name)

    def summary(self) -> str:
        lines = [f"{self.name} seed={self.seed}: {self.operations} ops in {self.elapsed:.1f}s {self.stats}"]
        for name, verdict in self.checks.items():
            lines.append(f"  {name}: {verdict if verdict == 'ok' else 'FAILED'}")
            if verdict != "ok":
                lines += ["    " + x for x in verdict.splitlines()]
        if self.history_path:
            lines.append(f"  history saved: {self.history_path}")
        if self.failed and self.nemesis_log:
            lines += ["  " + x for x in self.nemesis_log.splitlines()]
        return "\n".join(lines)


def _save(report: RunReport, history: History, save_dir: str | None) -> None:
    if report.failed and save_dir:
        os.makedirs(save_dir, exist_ok=True)
        path = os.path.join(save_dir, f"{report.name}-seed{report.seed}.json")
        history.save(path)
        report.history_path = path


def _run_clients(n: int, duration: float, body: Callable[[int, random.Random], None], seed: int) -> None:
    """`n` client threads, each calling `body(i, rng)` in a loop until `duration` passes."""
    deadline = time.monotonic() + duration
    errors: list[BaseException] = []

    def loop(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        try:
            while time.monotonic() < deadline:
                body(i, rng)
        except BaseException as exc:  # a workload bug: surfaced in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(i,), name=f"client-{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 120)
    if errors:
        raise errors[0]


def _with_nemesis(nemesis: Nemesis | None, duration: float, interval: float, run: Callable[[], None]) -> None:
    if nemesis is None:
        run()
        return
    with nemesis.running(interval=interval, steps=max(1, int(duration / interval))):
        run()
    nemesis.heal_all()


def _sql_definite(inp: dict[str, Any]) -> Callable[[BaseException], bool]:
    return (lambda exc: True) if inp["f"] == "read" else sql_error_is_definite


def kv_definite(inp: dict[str, Any]) -> Callable[[BaseException], bool]:
    """How a failed KV op of `inp` is recorded: a read applied nothing; a write per
    `kv_error_is_definite`."""
    return (lambda exc: True) if inp["f"] in ("get", "range") else kv_error_is_definite


def _connect(cluster: Cluster, database: str, i: int, autocommit: bool) -> Any:
    """A DB-API connection with its own driver core (own pool and leader view), the
    addresses rotated so clients start their leader search at different nodes."""
    from ..dbapi import connect

    addresses = cluster.addresses
    k = i % len(addresses)
    conn = connect(store=MemoryNodeStore(addresses[k:] + addresses[:k]), database=database,
                   autocommit=autocommit, policy=CLIENT_POLICY)
    cluster._connections.append(conn)  # closed with the cluster
    return conn


def converged(cluster: Cluster, database: str, timeout: float = 30.0) -> tuple[bool, str]:
    """Whether every node holds the same content of `database` (compared as a
    logical SQL dump of each node's copy), waiting up to `timeout` for laggards."""
    deadline = time.monotonic() + timeout
    while True:
        dumps: dict[str, str] = {}
        for address in cluster.addresses:
            try:
                with cluster.client() as admin:
                    files = admin.dump(database, address)
            except Exception as exc:  # a node not caught up yet
                dumps[address] = f"<dump failed: {exc!r}>"
                continue
            dumps[address] = _logical(files, database)
        if len(set(dumps.values())) == 1:
            return True, f"{len(dumps)} nodes agree"
        if time.monotonic() >= deadline:
            sizes = {a: len(d) for a, d in dumps.items()}
            return False, f"nodes differ after {timeout}s (dump sizes {sizes})"
        time.sleep(0.5)


def _logical(files: dict[str, bytes], database: str) -> str:
    with tempfile.TemporaryDirectory(prefix="cowsqlpy-dump-") as d:
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        conn = sqlite3.connect(os.path.join(d, database))
        try:
            return "\n".join(conn.iterdump())
        finally:
            conn.close()


# -- SQL register ----------------------------------------------------------------------------------


def sql_register(cluster: Cluster, seed: int, *, duration: float = 8.0, clients: int = 3, keys: int = 3,
                 nemesis: Nemesis | None = None, interval: float = 0.8, save_dir: str | None = None) -> RunReport:
    started = time.monotonic()
    report = RunReport("sql-register", seed)
    database = f"reg{seed}"
    setup = _connect(cluster, database, 0, True)
    setup.execute(REGISTER_SCHEMA)
    history = History()
    counter = iter(range(1, 10**9))
    conns = [_connect(cluster, database, i, True) for i in range(clients)]
    last_seen: dict[str, int] = {}  # a plausible current value per key, for CAS

    def body(i: int, rng: random.Random) -> None:
        key = f"k{rng.randrange(keys)}"
        x = rng.random()
        if x < 0.45:
            inp: dict[str, Any] = {"f": "read", "key": key}
        elif x < 0.75:
            inp = {"f": "write", "key": key, "value": next(counter)}
        else:
            inp = {"f": "cas", "key": key, "old": last_seen.get(key, 0), "new": next(counter)}
        op = history.call(f"c{i}", inp, lambda: sql_register_apply(conns[i], inp), _sql_definite(inp))
        if op.status != OK:
            return
        out = op.output
        if inp["f"] == "read" and out is not None:
            last_seen[key] = out
        elif inp["f"] == "write" or (inp["f"] == "cas" and out):
            last_seen[key] = inp["value"] if inp["f"] == "write" else inp["new"]

    _with_nemesis(nemesis, duration, interval, lambda: _run_clients(clients, duration, body, seed))
    _final_reads(history, [{"f": "read", "key": f"k{k}"} for k in range(keys)], lambda inp: sql_register_apply(setup, inp))
    ops = history.operations()
    _register_checks(report, ops)
    ok, detail = converged(cluster, database)
    report.add("converged", ok, detail)
    _finish(report, history, ops, nemesis, started, save_dir)
    return report


def _final_reads(history: History, inputs: list[dict[str, Any]], apply: Callable[[dict[str, Any]], Any]) -> None:
    """After healing, one read of every key (client "final"), which every acknowledged
    write must explain; a failure here is an error of the run, not a recorded op."""
    for inp in inputs:
        op = history.invoke("final", inp)
        history.ok(op, apply(inp))


def _register_checks(report: RunReport, ops: list[Operation]) -> None:
    model = RegisterModel()
    writes = [op for op in ops if op.input["f"] != "read" or op.client == "final"]
    result = check(writes, model)
    report.add("linearizable-writes", result.ok, result.describe(model))
    full = check(ops, model)
    report.add("linearizable", full.ok, full.describe(model))
    report.results.update({"linearizable-writes": result, "linearizable": full})


def _finish(report: RunReport, history: History, ops: list[Operation], nemesis: Nemesis | None,
            started: float, save_dir: str | None) -> None:
    report.operations = len(ops)
    report.history = ops
    report.stats = {s: sum(1 for o in ops if o.status == s) for s in (OK, FAIL, UNKNOWN)}
    report.nemesis_log = nemesis.format_log() if nemesis else ""
    report.elapsed = time.monotonic() - started
    _save(report, history, save_dir)


def read_anomaly_only(report: RunReport) -> bool:
    """Whether the only linearizability failure is in reads: the history without its
    reads is linearizable, with them it is not (e.g. a stale read from a deposed
    leader, which cowsqlpy serves today: docs/consistency.md)."""
    writes: CheckResult | None = report.results.get("linearizable-writes")
    full: CheckResult | None = report.results.get("linearizable")
    return writes is not None and full is not None and writes.ok and not full.ok


# -- bank and list-append ---------------------------------------------------------------------------


def sql_bank(cluster: Cluster, seed: int, *, duration: float = 8.0, clients: int = 3, accounts: int = 5,
             balance: int = 100, nemesis: Nemesis | None = None, interval: float = 0.8,
             save_dir: str | None = None) -> RunReport:
    started = time.monotonic()
    report = RunReport("sql-bank", seed)
    database = f"bank{seed}"
    setup = _connect(cluster, database, 0, True)
    bank.bank_setup(setup, accounts, balance)
    history = History()
    conns = [_connect(cluster, database, i, False) for i in range(clients)]

    def body(i: int, rng: random.Random) -> None:
        if rng.random() < 0.4:
            bank.bank_read(conns[i], history, f"c{i}")
        else:
            bank.bank_transfer(conns[i], history, f"c{i}", rng, accounts)

    _with_nemesis(nemesis, duration, interval, lambda: _run_clients(clients, duration, body, seed))
    final = _connect(cluster, database, 1, False)
    bank.bank_read(final, history, "final")
    ops = history.operations()
    result = bank.check_bank(ops, range(accounts), accounts * balance)
    report.add("bank", result.ok, result.describe())
    final_read = ops[-1]
    report.add("final-read", final_read.status == OK, f"the read after healing failed: {final_read.error}")
    ok, detail = converged(cluster, database)
    report.add("converged", ok, detail)
    _finish(report, history, ops, nemesis, started, save_dir)
    return report


def sql_list_append(cluster: Cluster, seed: int, *, duration: float = 8.0, clients: int = 3, keys: int = 4,
                    nemesis: Nemesis | None = None, interval: float = 0.8, save_dir: str | None = None) -> RunReport:
    started = time.monotonic()
    report = RunReport("sql-list-append", seed)
    database = f"la{seed}"
    setup = _connect(cluster, database, 0, True)
    setup.execute(listappend.LIST_APPEND_SCHEMA)
    history = History()
    conns = [_connect(cluster, database, i, False) for i in range(clients)]
    counter = iter(range(1, 10**9))
    lock = threading.Lock()

    def body(i: int, rng: random.Random) -> None:
        mops: list[list[Any]] = []
        for _ in range(rng.randint(1, 4)):
            k = rng.randrange(keys)
            if rng.random() < 0.5:
                with lock:
                    mops.append(["append", k, next(counter)])
            else:
                mops.append(["r", k, None])
        listappend.list_append_txn(conns[i], history, f"c{i}", mops)

    _with_nemesis(nemesis, duration, interval, lambda: _run_clients(clients, duration, body, seed))
    final = _connect(cluster, database, 1, False)
    listappend.list_append_txn(final, history, "final", [["r", k, None] for k in range(keys)])
    ops = history.operations()
    strict = listappend.check_list_append(ops)
    report.add("strict-serializable", strict.ok, strict.describe())
    if not strict.ok:
        plain = listappend.check_list_append(ops, realtime=False)
        report.add("serializable", plain.ok, plain.describe())
    ok, detail = converged(cluster, database)
    report.add("converged", ok, detail)
    _finish(report, history, ops, nemesis, started, save_dir)
    return report


# -- kvstore -----------------------------------------------------------------------------------------


def patch_with_watch(ops: list[Operation], events: Sequence[dict[str, Any]]) -> list[Operation]:
    """Resolve writes of unknown outcome from a complete, checked watch of the whole
    key space (etcd's robustness tests do the same): a put whose unique value shows
    up happened at that revision; one whose value never shows up did not happen."""
    seen = {(e["key"], e.get("value")): e["rev"] for e in events if e["type"] == "put"}
    out = []
    for op in ops:
        if op.status == UNKNOWN and op.input["f"] in ("put", "txn"):
            if op.input["f"] == "put":
                puts = [(op.input["key"], op.input["value"])]
            else:
                puts = [(o[1], o[2]) for o in op.input.get("then", []) if o[0] == "put"]
                if any(o[0] != "get" for o in op.input.get("else", [])):
                    out.append(op)  # its else branch writes too: cannot tell
                    continue
            revs = {seen.get(p) for p in puts}
            if revs == {None}:
                op = replace(op, status=FAIL, error=(op.error or "") + " [never in the watch]")
            elif None not in revs and len(revs) == 1:
                output: dict[str, Any] = {"rev": revs.pop()}
                if op.input["f"] == "txn":
                    output["ok"] = True
                op = replace(op, status=OK, ret=None, output=output)
        out.append(op)
    return out


def kv_workload(open_client: Callable[[int], Any], seed: int, *, name: str = "kv", duration: float = 8.0,
                clients: int = 3, keys: int = 4, nemesis: Nemesis | None = None, interval: float = 0.8,
                save_dir: str | None = None, require_prev_kv: bool = True, close: bool = True) -> RunReport:
    """`open_client(i)` opens client i's `kvstore.KV` handle (i = clients is the
    watcher and checker's own handle), closed at the end if `close`. Keys live
    under a prefix of the seed."""
    started = time.monotonic()
    report = RunReport(name, seed)
    prefix = f"t{seed}-{random.Random(seed).randrange(10**6)}/"
    handles = [open_client(i) for i in range(clients + 1)]
    own = handles[-1]
    history = History()
    try:
        rev0 = own.revision()
        full = own.watch_prefix(prefix, start_revision=rev0 + 1)
        one_key = own.watch_key(f"{prefix}0")
        one_key_opened = own.revision()
        gens = [KVOpGenerator(random.Random(seed * 31 + i), prefix=prefix, keys=keys, client=f"c{i}") for i in range(clients)]
        resumed: list[tuple[int, Any]] = []

        def body(i: int, rng: random.Random) -> None:
            inp = gens[i].next()
            op = history.call(f"c{i}", inp, lambda: kv_apply(handles[i], inp), kv_definite(inp))
            out = op.output
            gens[i].observe(inp, out)
            if i == 0 and op.status == OK and not resumed and rng.random() < 0.05 and "rev" in out:
                resumed.append((out["rev"], own.watch_prefix(prefix, start_revision=out["rev"])))

        _with_nemesis(nemesis, duration, interval, lambda: _run_clients(clients, duration, body, seed))
        _final_reads(history, [{"f": "get", "key": f"{prefix}{k}"} for k in range(keys)], lambda inp: kv_apply(own, inp))
        end = own.revision()
        records = [WatchRecord(prefix, prefix + "\x7f", rev0 + 1, _drain(full, end), last_revision=end),
                   WatchRecord(f"{prefix}0", None, 0, _drain(one_key, end),
                               opened_revision=one_key_opened, last_revision=end)]
        for rev, stream in resumed:
            records.append(WatchRecord(prefix, prefix + "\x7f", rev, _drain(stream, end), last_revision=end))
        for stream in (full, one_key, *(s for _, s in resumed)):
            stream.cancel()
    finally:
        for h in handles if close else ():
            try:
                h.close()
            except Exception:  # closing after faults: best effort
                pass
    ops = history.operations()
    violations = check_watches(records, ops, require_prev_kv=require_prev_kv, complete_from=rev0 + 1)
    report.add("watch", not violations, format_violations(violations))
    patched = patch_with_watch(ops, records[0].events) if not violations else ops
    model = KVModel(initial_revision=rev0)
    result = check(patched, model)
    report.add("linearizable", result.ok, result.describe(model))
    report.results["linearizable"] = result
    if not result.ok:  # the same without reads: is it only reads that are off?
        writes = check([op for op in patched if not model.is_read(op.input) or op.client == "final"], model)
        report.add("linearizable-writes", writes.ok, writes.describe(model))
        report.results["linearizable-writes"] = writes
    _finish(report, history, ops, nemesis, started, save_dir)
    report.history = patched
    report.stats["watch_events"] = len(records[0].events)
    return report


def _drain(stream: Any, end: int, *, idle: float = 3.0, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Events of `stream` up to revision `end` (all of `end`'s events); stops after
    `idle` seconds without an event (a stream whose range saw nothing more)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = bool(events) and events[-1]["rev"] >= end
        e = stream.get(0.3 if done else idle)
        if e is None:
            break
        events.append(event_json(e))
    return events
