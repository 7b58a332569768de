"""Elle's list-append checker (Kingsbury & Alvaro, "Elle: Inferring Isolation
Anomalies from Experimental Observations", VLDB 2020).

Each transaction is a list of micro-ops on keys whose values are lists:
``["append", k, v]`` appends `v` (every appended value is unique per key) and
``["r", k, None]`` reads the whole list (the output fills in the list). From
the longest read of each key the checker infers the version order of the key
(every read must be a prefix of it), and from that the dependency graph:

* **ww** T1 -> T2: T2 appended the element right after T1's;
* **wr** T1 -> T2: T2 read a list whose last element T1 appended;
* **rw** T1 -> T2: T1 read a list that T2's element later extended;
* **rt** T1 -> T2: T1 completed before T2 was invoked (strict serializability).

Cycles are found per strongly connected component (Tarjan) and the shortest
cycle of each kind is reported (breadth-first search): **G0** (ww only),
**G1c** (ww + wr, at least one wr), **G-single** (exactly one rw), **G2**
(two or more rw), and the same with rt edges as ``...-realtime``. Without a
cycle: **G1a** (a read saw an element of a failed transaction), **G1b** (a
read saw an intermediate state of another transaction), and the sanity
checks: duplicate or unknown elements, incompatible orders, internal
inconsistency (a transaction that does not see its own appends).

    result = check_list_append(history.operations())
    assert result.ok, result.describe()
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .history import FAIL, OK, History, Operation

__all__ = [
    "CYCLE_KINDS",
    "LIST_APPEND_SCHEMA",
    "Anomaly",
    "ListAppendResult",
    "check_list_append",
    "list_append_txn",
    "tarjan_scc",
]

WW, WR, RW, RT = "ww", "wr", "rw", "rt"
CYCLE_KINDS = (
    "G0",
    "G1c",
    "G-single",
    "G2",
    "G0-realtime",
    "G1c-realtime",
    "G-single-realtime",
    "G2-realtime",
)
_MAX_SEEDS = 5000  # edges tried as cycle seeds per kind (bounds the search on huge SCCs)


@dataclass
class Anomaly:
    kind: str
    ops: list[int]
    detail: str
    cycle: list[tuple[int, str, int]] = field(default_factory=list)

    def __str__(self) -> str:
        if self.cycle:
            path = " ".join(f"T{a} -{t}->" for a, t, _ in self.cycle) + f" T{self.cycle[0][0]}"
            return f"{self.kind}: {path} ({self.detail})"
        return f"{self.kind}: {self.detail} (ops {self.ops})"


@dataclass
class ListAppendResult:
    anomalies: dict[str, list[Anomaly]]
    transactions: int
    model: str

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def describe(self) -> str:
        if self.ok:
            return f"list-append: {self.transactions} transactions, {self.model}: no anomaly"
        lines = [f"list-append: {self.transactions} transactions, NOT {self.model}:"]
        for kind, found in self.anomalies.items():
            lines.append(f"  {kind} ({len(found)}): {found[0]}")
        return "\n".join(lines)


def tarjan_scc(nodes: Iterable[int], succ: dict[int, list[int]]) -> list[list[int]]:
    """Strongly connected components (iterative Tarjan)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            recurse = False
            children = succ.get(v, [])
            while i < len(children):
                w = children[i]
                i += 1
                if w not in index:
                    work.append((v, i))
                    work.append((w, 0))
                    recurse = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


class _Graph:
    def __init__(self) -> None:
        self.edges: dict[int, dict[int, set[str]]] = {}

    def add(self, a: int, b: int, kind: str) -> None:
        if a != b:
            self.edges.setdefault(a, {}).setdefault(b, set()).add(kind)

    def path(
        self, src: int, dst: int, allowed: frozenset[str], within: set[int]
    ) -> list[tuple[int, str, int]] | None:
        """Shortest path src -> dst over edges of the `allowed` kinds inside `within`."""
        prev: dict[int, tuple[int, str]] = {}
        seen = {src}
        q = deque([src])
        while q and dst not in prev:
            v = q.popleft()
            for w, kinds in self.edges.get(v, {}).items():
                usable = kinds & allowed
                if not usable or w in seen or w not in within:
                    continue
                prev[w] = (v, _pick(usable))
                if w == dst:
                    break
                seen.add(w)
                q.append(w)
        if dst not in prev:
            return None
        out = []
        node = dst
        while True:
            p, kind = prev[node]
            out.append((p, kind, node))
            node = p
            if node == src:
                break
        return out[::-1]


def _pick(kinds: set[str]) -> str:
    """The most telling edge kind when several link the same pair."""
    for k in (WW, WR, RW, RT):
        if k in kinds:
            return k
    raise AssertionError(kinds)


def check_list_append(ops: Sequence[Operation], *, realtime: bool = True) -> ListAppendResult:
    """Check a list-append history; `realtime` adds rt edges (strict serializability)."""
    anomalies: dict[str, list[Anomaly]] = {}

    def report(
        kind: str, op_ids: list[int], detail: str, cycle: list[tuple[int, str, int]] | None = None
    ) -> None:
        anomalies.setdefault(kind, []).append(Anomaly(kind, op_ids, detail, cycle or []))

    writer: dict[tuple[Any, Any], int] = {}
    failed: dict[tuple[Any, Any], int] = {}
    appends_of: dict[int, dict[Any, list[Any]]] = {}
    committed = [op for op in ops if op.status != FAIL]
    for op in ops:
        for mop in op.input["mops"]:
            if mop[0] != "append":
                continue
            kv = (mop[1], mop[2])
            if op.status == FAIL:
                failed[kv] = op.id
                continue
            if kv in writer:
                report("duplicate-append", [writer[kv], op.id], f"{kv} appended twice")
            writer[kv] = op.id
            appends_of.setdefault(op.id, {}).setdefault(mop[1], []).append(mop[2])
    reads: list[tuple[int, Any, list[Any]]] = []  # (op id, key, list)
    for op in committed:
        if op.status != OK:
            continue
        own: dict[Any, list[Any]] = {}
        for mop in op.output or []:
            if mop[0] == "append":
                own.setdefault(mop[1], []).append(mop[2])
                continue
            key, values = mop[1], list(mop[2] or [])
            reads.append((op.id, key, values))
            mine = own.get(key, [])
            if mine and values[-len(mine) :] != mine:
                report(
                    "internal", [op.id], f"T{op.id} read {key!r}={values} after appending {mine}"
                )
            if len(set(values)) != len(values):
                report("duplicate-elements", [op.id], f"T{op.id} read {key!r}={values}")
            for v in values:
                if (key, v) in failed and (key, v) not in writer:
                    report(
                        "G1a",
                        [failed[(key, v)], op.id],
                        f"T{op.id} read {key!r} element {v!r} of failed T{failed[(key, v)]}",
                    )
                elif (key, v) not in writer:
                    report(
                        "garbage-read",
                        [op.id],
                        f"T{op.id} read {key!r} element {v!r} that no one appended",
                    )
    # version orders: the longest read of each key; every read must be a prefix of it
    order: dict[Any, list[Any]] = {}
    for op_id, key, values in reads:
        values = [v for v in values if (key, v) in writer]
        longest = order.get(key, [])
        short, long = (values, longest) if len(values) <= len(longest) else (longest, values)
        if long[: len(short)] != short:
            report("incompatible-order", [op_id], f"{key!r}: {short} is no prefix of {long}")
        elif len(values) > len(longest):
            order[key] = values
    for op_id, key, values in reads:
        if not values or (key, values[-1]) not in writer:
            continue
        w = writer[(key, values[-1])]
        mine = appends_of.get(w, {}).get(key, [])
        if w != op_id and mine and mine[-1] != values[-1]:
            report(
                "G1b",
                [w, op_id],
                f"T{op_id} read {key!r}={values}, an intermediate state of T{w} (appends {mine})",
            )
    graph = _Graph()
    for key, values in order.items():
        for a, b in zip(values, values[1:], strict=False):
            graph.add(writer[(key, a)], writer[(key, b)], WW)
    for op_id, key, values in reads:
        values = [v for v in values if (key, v) in writer]
        full = order.get(key, [])
        if full[: len(values)] != values:
            continue  # already reported as incompatible
        if values:
            graph.add(writer[(key, values[-1])], op_id, WR)
        if len(full) > len(values):
            graph.add(op_id, writer[(key, full[len(values)])], RW)
    if realtime:
        _realtime_edges(committed, graph)
    _find_cycles(graph, report)
    model = "strict-serializable" if realtime else "serializable"
    for found in anomalies.values():
        for a in found:
            a.ops = sorted(set(a.ops) | {x for e in a.cycle for x in (e[0], e[2])})
    return ListAppendResult(anomalies, len(committed), model)


def _realtime_edges(ops: Sequence[Operation], graph: _Graph) -> None:
    """T1 -> T2 when T1 returned before T2 was called, transitively reduced: only when no
    T3 ran entirely between them."""
    done = sorted(
        (op for op in ops if op.status == OK and op.ret is not None), key=lambda o: o.ret or 0.0
    )
    by_call = sorted(ops, key=lambda o: o.call)
    # min_ret_after[i]: smallest return time of an op called at or after by_call[i]
    min_ret_after = [float("inf")] * (len(by_call) + 1)
    for i in range(len(by_call) - 1, -1, -1):
        ret = by_call[i].ret
        done_at = ret if by_call[i].status == OK and ret is not None else float("inf")
        min_ret_after[i] = min(min_ret_after[i + 1], done_at)
    calls = [o.call for o in by_call]
    for t1 in done:
        assert t1.ret is not None
        start = bisect.bisect_right(calls, t1.ret)
        horizon = min_ret_after[
            start
        ]  # an op that starts after t1 and ends by then separates t1 from later ones
        for j in range(start, len(by_call)):
            t2 = by_call[j]
            if t2.call > horizon:
                break
            graph.add(t1.id, t2.id, RT)


def _find_cycles(graph: _Graph, report: Any) -> None:
    nodes = list(graph.edges)
    succ = {a: list(bs) for a, bs in graph.edges.items()}
    base = frozenset({WW, WR})
    for comp in tarjan_scc(nodes, succ):
        if len(comp) < 2:
            continue
        within = set(comp)
        seen_cycles: set[frozenset[tuple[int, int]]] = set()
        for suffix, extra in (("", frozenset()), ("-realtime", frozenset({RT}))):
            plain = base | extra
            searches = [
                ("G0", frozenset({WW}) | extra, WW if not extra else RT, 0),
                ("G1c", plain, WR if not extra else RT, 0),
                ("G-single", plain, RW, 1),
                ("G2", plain | {RW}, RW, 2),
            ]
            for kind, allowed, seed_kind, rw_needed in searches:
                best: list[tuple[int, str, int]] | None = None
                tries = 0
                for a in comp:
                    for b, kinds in graph.edges.get(a, {}).items():
                        if b not in within or seed_kind not in kinds:
                            continue
                        tries += 1
                        if tries > _MAX_SEEDS:
                            break
                        back = graph.path(b, a, allowed, within)
                        if back is None:
                            continue
                        cycle = [(a, seed_kind, b), *back]
                        if not _classify(cycle, kind, rw_needed, bool(extra)):
                            continue
                        if best is None or len(cycle) < len(best):
                            best = cycle
                if best is not None:
                    sig = frozenset((x, y) for x, _, y in best)
                    if sig in seen_cycles:
                        continue
                    seen_cycles.add(sig)
                    report(kind + suffix, [], f"a cycle of {len(best)} transactions", best)


def _classify(cycle: list[tuple[int, str, int]], kind: str, rw_needed: int, realtime: bool) -> bool:
    kinds = [k for _, k, _ in cycle]
    rw = kinds.count(RW)
    if realtime and RT not in kinds:
        return False
    if kind == "G0":
        return all(k in (WW, RT) for k in kinds)
    if kind == "G1c":
        return rw == 0 and WR in kinds
    if kind == "G-single":
        return rw == 1
    return rw >= rw_needed


# -- the SQL workload ------------------------------------------------------------------------------

LIST_APPEND_SCHEMA = "CREATE TABLE IF NOT EXISTS lists (k INTEGER PRIMARY KEY, v TEXT NOT NULL)"


def list_append_txn(conn: Any, history: History, client: str, mops: list[list[Any]]) -> None:
    """Run `mops` as one transaction on a non-autocommit DB-API connection (lists
    stored as comma-joined text; values are ints) and record it."""
    from .workloads import sql_error_is_definite

    op = history.invoke(client, {"f": "txn", "mops": mops})
    out: list[list[Any]] = []
    try:
        for kind, key, value in mops:
            if kind == "append":
                conn.execute(
                    "INSERT INTO lists (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = v || ',' || excluded.v",
                    (key, str(value)),
                )
                out.append([kind, key, value])
            else:
                row = conn.execute("SELECT v FROM lists WHERE k = ?", (key,)).fetchone()
                out.append([kind, key, [] if row is None else [int(x) for x in row[0].split(",")]])
        conn.commit()
    except Exception as exc:  # every failure is recorded, then classified
        try:
            conn.rollback()
        except Exception:  # the connection may be gone
            pass
        history.fail(op, repr(exc)) if sql_error_is_definite(exc) else history.unknown(
            op, repr(exc)
        )
        return
    history.ok(op, out)
