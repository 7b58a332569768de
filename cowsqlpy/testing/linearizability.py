"""A linearizability checker for key/value histories.

    from cowsqlpy.testing.linearizability import check, RegisterModel, KVModel
    result = check(history.operations(), RegisterModel())
    assert result.ok, result.describe()

The search is Wing & Gong's with Lowe's memoization, as porcupine does it: the
history becomes a list of call and return events in time order; the search
linearizes any pending call whose model step accepts its output and backtracks
when it reaches a return whose call it could not place; a cache of (set of
linearized ops, model state) pairs prunes every configuration seen before.

Models are non-deterministic where they need to be (`Model.step` yields every
state the operation may lead to); the search runs on sets of states (etcd's
robustness model does the same). An operation whose outcome is unknown gets
no return time and no output: it may take effect anywhere after its call, or
never (it can always be placed after everything else). A failed operation took
no effect and is left out; so is an unknown read.

`RegisterModel` is a register with CAS per key and is checked per key
(P-compositionality: a history is linearizable iff each key's is).
`KVModel` is etcd's model: put/get/range/delete/txn with compares, where every
write answers with a *global* revision, so the whole store is one object.

On failure the result carries a small counter-example: the ops involved, found
by cutting the history after the operation the search could not place and
then dropping every op whose removal keeps it non-linearizable (and, for an
ordering anomaly, keeps each op's output explainable by some order).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .history import FAIL, OK, UNKNOWN, Operation

__all__ = [
    "CheckResult",
    "KVModel",
    "Model",
    "RegisterModel",
    "SearchBudgetExceeded",
    "check",
    "linearizable",
]

INF = math.inf


class SearchBudgetExceeded(RuntimeError):
    """The search visited more configurations than allowed; no verdict."""


class Model:
    """A sequential specification. States must be hashable."""

    name = "model"

    def init(self) -> Hashable:
        raise NotImplementedError

    def step(self, state: Any, inp: Any, output: Any) -> Iterable[Hashable]:
        """The states `input` may lead to from `state` if it returned `output`
        (`output` is None for an op of unknown outcome: accept any). Empty: the
        output is impossible from this state."""
        raise NotImplementedError

    def is_read(self, inp: Any) -> bool:
        """A read changes nothing: with an unknown outcome it says nothing."""
        return False

    def partition(self, ops: list[Operation]) -> list[list[Operation]]:
        """Independent sub-histories (P-compositionality); default: one."""
        return [ops]

    def describe(self, op: Operation) -> str:
        return f"{op.input} -> {op.output}"


# -- models ------------------------------------------------------------------------------------


class RegisterModel(Model):
    """One register per key, absent (None) at first.

    inputs: ``{"f": "read", "key": k}`` -> output the value (None: absent);
    ``{"f": "write", "key": k, "value": v}`` (``v`` None deletes) -> output ignored;
    ``{"f": "cas", "key": k, "old": a, "new": b}`` -> output True/False.
    """

    name = "register"

    def __init__(self, initial: Any = None) -> None:
        self.initial = initial

    def init(self) -> Hashable:
        return _freeze(self.initial)

    def step(self, state: Any, inp: Any, output: Any) -> Iterable[Hashable]:
        f = inp["f"]
        if f == "read":
            return (state,) if _freeze(output) == state else ()
        if f == "write":
            return (_freeze(inp["value"]),)
        if f == "cas":
            matches = state == _freeze(inp["old"])
            if output is None:  # unknown outcome
                return (_freeze(inp["new"]),) if matches else (state,)
            if bool(output) != matches:
                return ()
            return (_freeze(inp["new"]),) if matches else (state,)
        raise ValueError(f"register model: unknown op {f!r}")

    def is_read(self, inp: Any) -> bool:
        return bool(inp["f"] == "read")

    def partition(self, ops: list[Operation]) -> list[list[Operation]]:
        by_key: dict[Any, list[Operation]] = {}
        for op in ops:
            by_key.setdefault(_freeze(op.input["key"]), []).append(op)
        return list(by_key.values())


class KVModel(Model):
    """etcd's key/value model with global revisions (one object: not partitioned).

    State: the store revision, per key (value, create_revision, mod_revision,
    version, lease) and the live lease ids. Inputs and outputs (keys and values are JSON
    values, e.g. str):

    * ``{"f": "get", "key": k}`` -> ``{"value": v|None, "mod": int, "rev": int}``
      (``mod`` 0 when absent; ``rev`` the store revision the read saw; either may be left out)
    * ``{"f": "range", "start": a, "end": b}`` (``[a, b)``) -> ``{"kvs": [[k, v], ...], "rev": int}``
    * ``{"f": "put", "key": k, "value": v}`` -> ``{"rev": int}``
    * ``{"f": "delete", "key": k}`` -> ``{"deleted": int, "rev": int}``
    * ``{"f": "txn", "cmp": [[k, target, op, x], ...], "then": [op...], "else": [op...]}``
      with targets ``value version create mod``, ops ``= != < >``, branch ops
      ``["put", k, v]``, ``["get", k]``, ``["delete", k]`` ->
      ``{"ok": bool, "rev": int, "results": [...]}`` (a get's result is the value,
      a delete's the count, a put's None).
    * ``{"f": "grant", "ttl": s}`` -> ``{"id": int}``; ``{"f": "revoke", "id": int}``
      (deletes the lease's keys in one revision); a put may name ``"lease": id``.
      Leases never expire in this model: give them a TTL longer than the run.

    A write that changes nothing (a delete of nothing, a txn whose branch writes
    nothing) takes no revision, as in etcd. ``initial_revision`` None: taken
    from the first operation that shows it.
    """

    name = "kv"

    def __init__(
        self, initial_revision: int | None = 1, initial: dict[Any, Any] | None = None
    ) -> None:
        self.initial_revision = initial_revision
        self.initial = initial or {}

    def init(self) -> Hashable:
        rev = self.initial_revision
        items = tuple(sorted((_freeze(k), (_freeze(v), 1, 1, 1, 0)) for k, v in self.initial.items()))
        return (rev, items, ())

    def is_read(self, inp: Any) -> bool:
        # a grant of unknown outcome is as harmless: no one can name the lease it made
        if inp["f"] in ("get", "range", "grant"):
            return True
        if inp["f"] == "txn":
            return all(o[0] == "get" for o in [*inp.get("then", ()), *inp.get("else", ())])
        return False

    def step(self, state: Any, inp: Any, output: Any) -> Iterable[Hashable]:
        rev, items, leases = state
        if output is not None and not isinstance(output, dict):
            return ()  # a malformed output is no possible output
        store = dict(items)
        f = inp["f"]
        if f == "get":
            cur = store.get(_freeze(inp["key"]))
            if output is None:
                return (state,)
            if "rev" in output and rev is not None and output["rev"] != rev:
                return ()
            if _freeze(output.get("value")) != (None if cur is None else cur[0]):
                return ()
            if "mod" in output and output["mod"] != (0 if cur is None else cur[2]):
                return ()
            return ((output.get("rev", rev) if rev is None else rev, items, leases),)
        if f == "range":
            if output is None:
                return (state,)
            if "rev" in output and rev is not None and output["rev"] != rev:
                return ()
            lo, hi = _freeze(inp["start"]), _freeze(inp["end"])
            want = [(k, v[0]) for k, v in items if lo <= k < hi]
            if not isinstance(output.get("kvs"), list | tuple) or _freeze(output["kvs"]) != tuple(
                want
            ):
                return ()
            return ((output.get("rev", rev) if rev is None else rev, items, leases),)
        if f == "put":
            lease = inp.get("lease", 0)
            if lease and lease not in leases:
                return ()
            return self._finish(
                rev, store, leases, [("put", inp["key"], inp["value"], lease)], output, lambda _results: True
            )
        if f == "grant":
            if output is None:
                return (state,)
            if not isinstance(output.get("id"), int) or output["id"] in leases:
                return ()
            return ((rev, items, tuple(sorted((*leases, output["id"])))),)
        if f == "revoke":
            if inp["id"] not in leases:
                return ()
            rest = tuple(x for x in leases if x != inp["id"])
            return self._finish(rev, store, rest, [("revoke", inp["id"])], output, lambda _results: True)
        if f == "delete":

            def check_delete(results: list[Any]) -> bool:
                return output is None or "deleted" not in output or results[0] == output["deleted"]

            return self._finish(rev, store, leases, [("delete", inp["key"])], output, check_delete)
        if f == "txn":
            ok = all(
                _compare(store.get(_freeze(c[0])), c[1], c[2], c[3]) for c in inp.get("cmp", ())
            )
            if output is not None and "ok" in output and bool(output["ok"]) != ok:
                return ()
            branch = inp.get("then", ()) if ok else inp.get("else", ())

            def check_txn(results: list[Any]) -> bool:
                return (
                    output is None
                    or "results" not in output
                    or _freeze(output["results"]) == _freeze(results)
                )

            return self._finish(rev, store, leases, [tuple(o) for o in branch], output, check_txn)
        raise ValueError(f"kv model: unknown op {f!r}")

    def _finish(
        self,
        rev: int | None,
        store: dict[Any, Any],
        leases: tuple[int, ...],
        ops: Sequence[tuple[Any, ...]],
        output: Any,
        check_results: Callable[[list[Any]], bool],
    ) -> Iterable[Hashable]:
        """Apply `ops` as one revision; check the results and the revision."""
        if rev is None:
            if output is None or "rev" not in output:
                return ()  # cannot place a write before the revision is known
            changes = any(
                o[0] == "put"
                or (o[0] == "delete" and _freeze(o[1]) in store)
                or (o[0] == "revoke" and any(v[4] == o[1] for v in store.values()))
                for o in ops
            )
            rev = output["rev"] - (1 if changes else 0)
        new_rev = rev + 1
        results: list[Any] = []
        changed = False
        new = dict(store)
        for o in ops:
            if o[0] == "revoke":
                doomed = [k for k, v in new.items() if v[4] == o[1]]
                for k in doomed:
                    del new[k]
                changed = changed or bool(doomed)
                continue
            key = _freeze(o[1])
            if o[0] == "put":
                cur = new.get(key)
                create = new_rev if cur is None else cur[1]
                version = 1 if cur is None else cur[3] + 1
                new[key] = (_freeze(o[2]), create, new_rev, version, o[3] if len(o) > 3 else 0)
                changed = True
                results.append(None)
            elif o[0] == "delete":
                if key in new:
                    del new[key]
                    changed = True
                    results.append(1)
                else:
                    results.append(0)
            elif o[0] == "get":
                cur = new.get(key)
                results.append(None if cur is None else cur[0])
            else:
                raise ValueError(f"kv model: unknown txn op {o[0]!r}")
        final_rev = new_rev if changed else rev
        if output is not None:
            if "rev" in output and output["rev"] != final_rev:
                return ()
            if not check_results(results):
                return ()
        return ((final_rev, tuple(sorted(new.items())), leases),)


def _compare(cur: tuple[Any, int, int, int, int] | None, target: str, op: str, x: Any) -> bool:
    if target == "value":
        if cur is None:
            return False  # etcd: a value compare on an absent key is false
        a: Any = cur[0]
        x = _freeze(x)
    else:
        a = 0 if cur is None else {"create": cur[1], "mod": cur[2], "version": cur[3]}[target]
    if op == "=":
        return bool(a == x)
    if op == "!=":
        return bool(a != x)
    if op == "<":
        return bool(a < x)
    if op == ">":
        return bool(a > x)
    raise ValueError(f"compare op {op!r}")


def _freeze(v: Any) -> Any:
    """JSON values -> hashable (lists become tuples), so histories survive a JSON round trip."""
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    return v


# -- the search ----------------------------------------------------------------------------------


@dataclass
class _Outcome:
    ok: bool
    blocking: int | None = None  # index of the op whose return the search could not pass


def _search(ops: Sequence[Operation], model: Model, max_steps: int) -> _Outcome:
    n = len(ops)
    if n == 0:
        return _Outcome(True)
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, 2 * i))
        events.append((INF if op.ret is None else op.ret, 1, 2 * i + 1))
    events.sort()  # at equal times a call comes first: the two overlap
    head = 2 * n
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    last = head
    for _, _, e in events:
        nxt[last] = e
        prv[e] = last
        last = e
    inputs = [op.input for op in ops]
    outputs = [op.output if op.status == OK else None for op in ops]

    def lift(e: int) -> None:
        for x in (e, e + 1):
            nxt[prv[x]] = nxt[x]
            if nxt[x] != -1:
                prv[nxt[x]] = prv[x]

    def unlift(e: int) -> None:
        for x in (e + 1, e):
            nxt[prv[x]] = x
            if nxt[x] != -1:
                prv[nxt[x]] = x

    states: frozenset[Hashable] = frozenset((model.init(),))
    linearized = 0
    seen: set[tuple[int, frozenset[Hashable]]] = set()
    stack: list[tuple[int, frozenset[Hashable]]] = []
    best_depth, blocking = -1, None
    steps = 0
    e = nxt[head]
    while nxt[head] != -1:
        steps += 1
        if steps > max_steps:
            raise SearchBudgetExceeded(f"more than {max_steps} search steps on {n} ops")
        if e % 2 == 0:  # a call: try to linearize it here
            i = e // 2
            new_states = frozenset(
                s2 for s in states for s2 in model.step(s, inputs[i], outputs[i])
            )
            if new_states:
                new_lin = linearized | (1 << i)
                key = (new_lin, new_states)
                if key not in seen:
                    seen.add(key)
                    stack.append((e, states))
                    states, linearized = new_states, new_lin
                    lift(e)
                    e = nxt[head]
                    continue
            e = nxt[e]
        else:  # a return whose call is not linearized: backtrack
            if len(stack) > best_depth:
                best_depth, blocking = len(stack), e // 2
            if not stack:
                return _Outcome(False, blocking)
            e, states = stack.pop()
            linearized &= ~(1 << (e // 2))
            unlift(e)
            e = nxt[e]
    return _Outcome(True)


@dataclass
class CheckResult:
    """`ok` is the verdict; on failure `counterexample` holds the ops involved
    (time-ordered) and `blocking` the op that could not be placed."""

    ok: bool
    model: str
    operations: int
    partitions: int
    elapsed: float
    counterexample: list[Operation] = field(default_factory=list)
    blocking: Operation | None = None
    partition_size: int = 0

    def describe(self, model: Model | None = None) -> str:
        if self.ok:
            return f"linearizable ({self.model}): {self.operations} ops, {self.partitions} partitions, {self.elapsed:.3f}s"
        lines = [
            f"NOT linearizable ({self.model}): {self.operations} ops; the failing partition has "
            f"{self.partition_size} ops; a counter-example of {len(self.counterexample)}:"
        ]
        for op in self.counterexample:
            ret = "?" if op.ret is None else f"{op.ret:.6f}"
            what = model.describe(op) if model else f"{op.input} -> {op.output}"
            mark = (
                "  <- cannot be placed"
                if self.blocking is not None and op.id == self.blocking.id
                else ""
            )
            lines.append(f"  #{op.id} {op.client} [{op.call:.6f}, {ret}] {op.status}: {what}{mark}")
        return "\n".join(lines)


def _prepare(ops: Iterable[Operation], model: Model) -> list[Operation]:
    out = []
    for op in ops:
        if op.status == FAIL:
            continue
        if op.status != OK:
            if model.is_read(op.input):
                continue
            op = replace(op, status=UNKNOWN, ret=None, output=None)
        out.append(op)
    return out


def linearizable(ops: Sequence[Operation], model: Model, *, max_steps: int = 10_000_000) -> bool:
    """Whether `ops` (already one partition) is linearizable; no preparation, no shrinking."""
    return _search(ops, model, max_steps).ok


def check(
    ops: Iterable[Operation], model: Model, *, shrink: bool = True, max_steps: int = 10_000_000
) -> CheckResult:
    """Check a history against `model`.

    :raises SearchBudgetExceeded: a partition needed more than `max_steps`.
    """
    started = time.monotonic()
    prepared = _prepare(ops, model)
    parts = model.partition(prepared)
    for part in parts:
        part = sorted(part, key=lambda o: o.call)
        outcome = _search(part, model, max_steps)
        if not outcome.ok:
            assert outcome.blocking is not None
            blocking = part[outcome.blocking]
            example = _shrink(part, blocking, model) if shrink else part
            return CheckResult(
                False,
                model.name,
                len(prepared),
                len(parts),
                time.monotonic() - started,
                sorted(example, key=lambda o: o.call),
                blocking,
                len(part),
            )
    return CheckResult(True, model.name, len(prepared), len(parts), time.monotonic() - started)


# -- shrinking ---------------------------------------------------------------------------------

_SHRINK_STEPS = 200_000
_GREEDY_LIMIT = 64


def _verdict(ops: Sequence[Operation], model: Model, *, any_order: bool = False) -> bool | None:
    """Linearizable? None when the search budget ran out. `any_order` drops real time
    (every op concurrent with every other): is there *some* order explaining it?"""
    if any_order:
        ops = [replace(op, call=0.0, ret=None) for op in ops]
    try:
        return _search(ops, model, _SHRINK_STEPS).ok
    except SearchBudgetExceeded:
        return None


def _shrink(part: list[Operation], blocking: Operation, model: Model) -> list[Operation]:
    """A small non-linearizable sub-history around `blocking`."""
    horizon = INF if blocking.ret is None else blocking.ret
    window = [op for op in part if op.call <= horizon]
    if _verdict(window, model) is not False:
        return window

    def fails(ops: list[Operation], ordering: bool) -> bool:
        if _verdict(ops, model) is not False:
            return False
        # an ordering anomaly must stay one: every remaining output explainable by some order
        return not ordering or _verdict(ops, model, any_order=True) is True

    best: list[Operation] | None = None
    ordering = False
    for ordering in (True, False):
        k = 4
        while best is None and k < 2 * len(window):
            tail = window[-k:]
            if blocking not in tail:
                tail = [*tail, blocking]
            if fails(tail, ordering):
                best = tail
            k *= 2
        if best is not None:
            break
    if best is None:
        return window
    if len(best) > _GREEDY_LIMIT:
        return best
    changed = True
    while changed:
        changed = False
        for op in list(best):
            trial = [o for o in best if o is not op]
            if trial and fails(trial, ordering):
                best = trial
                changed = True
    return best
