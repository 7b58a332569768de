"""The linearizability checker on known histories, generated ones and a brute-force oracle."""

from __future__ import annotations

import itertools
import random
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvstore
from cowsqlpy.testing.history import FAIL, OK, UNKNOWN, History, Operation
from cowsqlpy.testing.linearizability import (
    KVModel,
    Model,
    RegisterModel,
    SearchBudgetExceeded,
    check,
)
from cowsqlpy.testing.workloads import KVOpGenerator, kv_apply

from .gen import timeline


def op(
    i: int,
    inp: dict[str, Any],
    call: float,
    ret: float | None,
    out: Any = None,
    status: str = OK,
    client: str = "c",
) -> Operation:
    return Operation(i, client, inp, call, ret, status, out)


def w(k: str, v: Any) -> dict[str, Any]:
    return {"f": "write", "key": k, "value": v}


def r(k: str) -> dict[str, Any]:
    return {"f": "read", "key": k}


def cas(k: str, a: Any, b: Any) -> dict[str, Any]:
    return {"f": "cas", "key": k, "old": a, "new": b}


# -- known histories: register ------------------------------------------------------------------


def test_concurrent_writes_either_order() -> None:
    h = [
        op(0, w("x", 1), 0, 10),
        op(1, w("x", 2), 1, 9),
        op(2, r("x"), 11, 12, 1),
        op(3, r("x"), 13, 14, 1),
    ]
    assert check(h, RegisterModel()).ok
    h[2].output = 2
    assert not check(h, RegisterModel()).ok  # 2 then 1 with no write between


def test_read_during_write_sees_old_or_new() -> None:
    for seen in (None, 1):
        assert check([op(0, w("x", 1), 0, 10), op(1, r("x"), 2, 3, seen)], RegisterModel()).ok
    assert not check([op(0, w("x", 1), 0, 10), op(1, r("x"), 2, 3, 7)], RegisterModel()).ok


def test_stale_read_is_caught_with_a_minimal_counterexample() -> None:
    h = [
        op(0, w("x", 1), 0, 1),
        op(1, w("x", 2), 2, 3),
        op(2, r("x"), 4, 5, 1),
        op(3, w("y", 5), 0, 1),
        op(4, r("y"), 2, 3, 5),
        op(5, r("x"), 0.5, 1.5, None),
    ]
    result = check(h, RegisterModel())
    assert not result.ok
    assert result.blocking is not None and result.blocking.id == 2
    assert sorted(o.id for o in result.counterexample) == [0, 1, 2]
    assert "cannot be placed" in result.describe()


def test_lost_write() -> None:
    # an acknowledged write, then every later read shows the value before it
    h = [
        op(0, w("x", 1), 0, 1),
        op(1, w("x", 2), 2, 3),
        op(2, r("x"), 10, 11, 1),
        op(3, r("x"), 12, 13, 1),
    ]
    assert not check(h, RegisterModel()).ok


def test_double_apply_of_a_cas() -> None:
    # cas 1->2 acked once, another client's cas 2->1 succeeds, then 2 shows up again
    h = [
        op(0, w("x", 1), 0, 1),
        op(1, cas("x", 1, 2), 2, 3, True),
        op(2, cas("x", 2, 1), 4, 5, True, client="d"),
        op(3, r("x"), 6, 7, 2),
    ]
    assert not check(h, RegisterModel()).ok
    # while the first cas is still running it may land after the second one... but then the second fails
    # with the first cas still running, the read of 1 fits: cas 1->2, cas 2->1, read
    h[1] = op(1, cas("x", 1, 2), 2, 8, True)
    h[3] = op(3, r("x"), 6, 7, 1)
    assert check(h, RegisterModel()).ok
    h[3] = op(3, r("x"), 9, 10, 2)  # but 2 again after both: the first cas applied twice
    assert not check(h, RegisterModel()).ok


def test_cas_results_must_agree() -> None:
    h = [
        op(0, w("x", 1), 0, 1),
        op(1, cas("x", 1, 2), 2, 3, True),
        op(2, cas("x", 1, 3), 4, 5, True),
    ]
    assert not check(h, RegisterModel()).ok
    h[2].output = False
    assert check(h, RegisterModel()).ok


def test_unknown_write_may_or_may_not_have_happened() -> None:
    base = [op(0, w("x", 1), 0, 1), op(1, w("x", 2), 2, None, status=UNKNOWN)]
    assert check([*base, op(2, r("x"), 5, 6, 2)], RegisterModel()).ok
    assert check([*base, op(2, r("x"), 5, 6, 1)], RegisterModel()).ok
    # once seen it happened: the value cannot go back
    assert not check([*base, op(2, r("x"), 5, 6, 2), op(3, r("x"), 7, 8, 1)], RegisterModel()).ok
    # an unknown op cannot take effect before it was invoked
    assert not check(
        [op(0, r("x"), 0, 1, 2), op(1, w("x", 2), 2, None, status=UNKNOWN)], RegisterModel()
    ).ok


def test_failed_write_never_happened() -> None:
    h = [op(0, w("x", 1), 0, 1, status=FAIL), op(1, r("x"), 2, 3, 1)]
    assert not check(h, RegisterModel()).ok


def test_unknown_reads_are_ignored() -> None:
    h = [op(0, w("x", 1), 0, 1), op(1, r("x"), 2, None, 99, status=UNKNOWN)]
    assert check(h, RegisterModel()).ok


def test_history_json_round_trip(tmp_path) -> None:
    h = History()
    a = h.invoke("c1", w("x", 1))
    h.ok(a)
    b = h.invoke("c2", r("x"))
    h.ok(b, 1)
    c = h.invoke("c3", w("x", 2))
    h.unknown(c, "lost")
    h.invoke("c4", w("x", 3))  # pending: counts as unknown
    path = tmp_path / "h.json"
    h.save(path)
    again = History.load(path).operations()
    assert [(o.status, o.input, o.output) for o in again] == [
        (o.status, o.input, o.output) for o in h.operations()
    ]
    assert again[3].status == UNKNOWN and again[2].ret is None
    assert check(again, RegisterModel()).ok
    with pytest.raises(ValueError, match="already completed"):
        h.ok(a)
    with pytest.raises(ValueError, match="not a cowsqlpy history"):
        History.from_json('{"operations": []}')


def test_record_context_classifies_errors() -> None:
    h = History()
    with pytest.raises(KeyError), h.record("c", w("x", 1), definite=(KeyError,)):
        raise KeyError("x")
    with pytest.raises(OSError), h.record("c", w("x", 2), definite=(KeyError,)):
        raise OSError("reset")
    assert [o.status for o in h.operations()] == [FAIL, UNKNOWN]


def test_budget_is_enforced() -> None:
    # many concurrent writes of distinct values and reads that no order explains
    h = [op(i, w("x", i), 0, 100) for i in range(40)] + [op(40, r("x"), 101, 102, -1)]
    with pytest.raises(SearchBudgetExceeded):
        check(h, RegisterModel(), max_steps=1000, shrink=False)


# -- known histories: the whole-store KV model ---------------------------------------------------


def put(k: str, v: str) -> dict[str, Any]:
    return {"f": "put", "key": k, "value": v}


def get(k: str) -> dict[str, Any]:
    return {"f": "get", "key": k}


def test_kv_revisions_order_writes() -> None:
    m = KVModel(initial_revision=1)
    good = [
        op(0, put("a", "1"), 0, 1, {"rev": 2}),
        op(1, put("b", "1"), 2, 3, {"rev": 3}),
        op(2, get("a"), 4, 5, {"value": "1", "mod": 2, "rev": 3}),
    ]
    assert check(good, m).ok
    # out of order: the later put got the earlier revision
    bad = [op(0, put("a", "1"), 0, 1, {"rev": 3}), op(1, put("b", "1"), 2, 3, {"rev": 2})]
    assert not check(bad, m).ok
    # a read's revision must be the store's
    stale = [*good[:2], op(2, get("a"), 4, 5, {"value": "1", "mod": 2, "rev": 2})]
    assert not check(stale, m).ok


def test_kv_double_apply_shows_in_revisions() -> None:
    m = KVModel(initial_revision=1)
    h = [
        op(0, put("a", "1"), 0, 1, {"rev": 2}),
        op(1, get("a"), 2, 3, {"value": "1", "mod": 3, "rev": 3}),
    ]
    assert not check(h, m).ok


def test_kv_txn_and_delete() -> None:
    m = KVModel(initial_revision=1)
    txn = {
        "f": "txn",
        "cmp": [["a", "version", "=", 0]],
        "then": [["put", "a", "x"], ["get", "b"]],
        "else": [["get", "a"]],
    }
    h = [
        op(0, txn, 0, 1, {"ok": True, "rev": 2, "results": [None, None]}),
        op(1, txn, 2, 3, {"ok": False, "rev": 2, "results": ["x"]}),
        op(2, {"f": "delete", "key": "b"}, 4, 5, {"deleted": 0, "rev": 2}),
        op(3, {"f": "delete", "key": "a"}, 6, 7, {"deleted": 1, "rev": 3}),
        op(4, {"f": "range", "start": "a", "end": "z"}, 8, 9, {"kvs": [], "rev": 3}),
    ]
    assert check(h, m).ok
    h[1] = op(1, txn, 2, 3, {"ok": True, "rev": 3, "results": [None, None]})
    assert not check(h, m).ok


def test_kv_unknown_put_fills_a_revision_gap() -> None:
    m = KVModel(initial_revision=1)
    h = [op(0, put("a", "1"), 0, None, status=UNKNOWN), op(1, put("b", "1"), 2, 3, {"rev": 3})]
    assert check(h, m).ok  # the unknown put took revision 2
    h[0] = op(0, put("a", "1"), 0, 1, status=FAIL)
    assert not check(h, m).ok  # nothing else could take revision 2


def test_kv_unknown_initial_revision() -> None:
    h = [
        op(0, get("a"), 0, 1, {"value": None, "mod": 0, "rev": 41}),
        op(1, put("a", "1"), 2, 3, {"rev": 42}),
    ]
    assert check(h, KVModel(initial_revision=None)).ok
    h[1].output = {"rev": 44}
    assert not check(h, KVModel(initial_revision=None)).ok


# -- generated histories ---------------------------------------------------------------------------


def simulate(
    rng: random.Random,
    clients: int,
    per_client: int,
    make_op: Any,
    run: Any,
    unknown_rate: float = 0.0,
    observe: Any = None,
) -> list[Operation]:
    """Clients issue ops one after another with random overlapping intervals; each op takes
    effect at a random point inside its interval; `run` executes it on the real store at
    that point, in linearization order (ops are drawn in that order too, so a client can
    use what it learnt: `observe(client, input, output)` sees each acknowledged result)."""
    slots = sorted((point, n, c, call, ret) for n, (c, call, ret, point) in enumerate(timeline(rng, clients, per_client)))
    ops = []
    for _point, i, c, call, ret in slots:
        inp = make_op(c)
        out = run(inp)
        if rng.random() < unknown_rate:
            ops.append(Operation(i, f"c{c}", inp, call, None, UNKNOWN, None))
            continue
        ops.append(Operation(i, f"c{c}", inp, call, ret, OK, out))
        if observe is not None:
            observe(c, inp, out)
    return sorted(ops, key=lambda o: o.id)


def register_run(state: dict[str, Any]) -> Any:
    def run(inp: dict[str, Any]) -> Any:
        k = inp["key"]
        if inp["f"] == "read":
            return state.get(k)
        if inp["f"] == "write":
            state[k] = inp["value"]
            return None
        ok = state.get(k) == inp["old"]
        if ok:
            state[k] = inp["new"]
        return ok

    return run


def register_op(rng: random.Random, keys: int = 1, values: int = 3) -> Any:
    def make(_client: int) -> dict[str, Any]:
        k = f"k{rng.randrange(keys)}"
        x = rng.random()
        if x < 0.4:
            return r(k)
        if x < 0.75:
            return w(k, rng.randrange(values))
        return cas(k, rng.randrange(values), rng.randrange(values))

    return make


def brute_force(ops: list[Operation], model: Model) -> bool:
    """Every order that respects real time (a before b when a returned before b was called),
    each prefix run through the model; unknown ops have no return; failed ops are left out."""
    live = [o for o in ops if o.status != FAIL and not (o.status != OK and model.is_read(o.input))]
    for order in itertools.permutations(live):
        if any(
            b.ret is not None and b.ret < a.call
            for i, a in enumerate(order)
            for b in order[i + 1 :]
        ):
            continue
        states = {model.init()}
        for o in order:
            out = o.output if o.status == OK else None
            states = {s2 for s in states for s2 in model.step(s, o.input, out)}
            if not states:
                break
        if states:
            return True
    return False


def mutate(rng: random.Random, ops: list[Operation], values: list[Any]) -> list[Operation]:
    ops = [Operation(**vars(o)) for o in ops]
    target = rng.choice(ops)
    kind = rng.random()
    if kind < 0.5 and target.status == OK:
        target.output = rng.choice(values)
    elif kind < 0.75:
        a, b = rng.sample(range(len(ops)), 2) if len(ops) > 1 else (0, 0)
        ops[a].call, ops[b].call = ops[b].call, ops[a].call
        for o in (ops[a], ops[b]):
            if o.ret is not None and o.ret < o.call:
                o.ret = o.call + 0.5
    else:
        target.status = FAIL
    return ops


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    clients=st.integers(1, 4),
    per_client=st.integers(1, 12),
    keys=st.integers(1, 3),
    unknown=st.sampled_from([0.0, 0.2]),
)
def test_generated_register_histories_pass(
    seed: int, clients: int, per_client: int, keys: int, unknown: float
) -> None:
    rng = random.Random(seed)
    ops = simulate(rng, clients, per_client, register_op(rng, keys), register_run({}), unknown)
    result = check(ops, RegisterModel())
    assert result.ok, result.describe()


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), clients=st.integers(1, 3), per_client=st.integers(1, 3))
def test_mutated_register_histories_agree_with_brute_force(
    seed: int, clients: int, per_client: int
) -> None:
    rng = random.Random(seed)
    ops = simulate(rng, clients, per_client, register_op(rng, 1, 3), register_run({}), 0.15)
    bad = mutate(rng, ops, [None, True, False, 0, 1, 2])
    assert check(bad, RegisterModel()).ok == brute_force(bad, RegisterModel())


def mem_kv_history(rng: random.Random, clients: int, per_client: int, keys: int, unknown: float
                   ) -> tuple[list[Operation], int]:
    """A simulated history run on a real mem: store, and the store's revision before it."""
    gens = [KVOpGenerator(rng, keys=keys, client=f"c{c}") for c in range(clients)]
    kv = kvstore.open(f"mem:lin-{uuid.uuid4().hex[:8]}")
    try:
        rev = kv.revision()
        ops = simulate(rng, clients, per_client, lambda c: gens[c].next(), lambda inp: kv_apply(kv, inp), unknown,
                       lambda c, inp, out: gens[c].observe(inp, out))
    finally:
        kv.close()
    return ops, rev


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    clients=st.integers(1, 4),
    per_client=st.integers(1, 10),
    unknown=st.sampled_from([0.0, 0.2]),
)
def test_generated_kv_histories_from_the_mem_store_pass(
    seed: int, clients: int, per_client: int, unknown: float
) -> None:
    ops, rev = mem_kv_history(random.Random(seed), clients, per_client, 3, unknown)
    result = check(ops, KVModel(initial_revision=rev))
    assert result.ok, result.describe()


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), clients=st.integers(1, 3), per_client=st.integers(1, 2))
def test_mutated_kv_histories_agree_with_brute_force(
    seed: int, clients: int, per_client: int
) -> None:
    rng = random.Random(seed)
    ops, rev = mem_kv_history(rng, clients, per_client, 2, 0.15)
    bad = mutate(
        rng,
        ops,
        [
            {"rev": rev + 1},
            {"rev": rev + 2},
            {"value": None, "mod": 0, "rev": rev},
            {"deleted": 1, "rev": rev + 1},
        ],
    )
    model = KVModel(initial_revision=rev)
    assert check(bad, model).ok == brute_force(bad, model)


def test_large_histories_timed(capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(20261203)
    ops = simulate(rng, 8, 625, register_op(rng, 10, 5), register_run({}), 0.02)
    started = time.monotonic()
    result = check(ops, RegisterModel())
    reg_time = time.monotonic() - started
    assert result.ok, result.describe()
    stale = [Operation(**vars(o)) for o in ops]
    reads = [o for o in stale if o.input["f"] == "read" and o.status == OK]
    reads[len(reads) // 2].output = 99  # a value no one wrote
    bad = check(stale, RegisterModel())
    assert not bad.ok and len(bad.counterexample) <= 8, bad.describe()

    kv_ops, rev = mem_kv_history(rng, 6, 350, 6, 0.01)
    started = time.monotonic()
    kv_result = check(kv_ops, KVModel(initial_revision=rev))
    kv_time = time.monotonic() - started
    assert kv_result.ok, kv_result.describe()
    with capsys.disabled():
        print(
            f"\nregister: {len(ops)} ops in {result.partitions} partitions checked in {reg_time:.2f}s; "
            f"kv whole-store: {len(kv_ops)} ops checked in {kv_time:.2f}s; "
            f"counter-example of {len(bad.counterexample)} ops found in {bad.elapsed:.2f}s"
        )


def test_kv_leases_grant_put_revoke() -> None:
    m = KVModel(initial_revision=1)
    h = [
        op(0, {"f": "grant", "ttl": 60}, 0, 1, {"id": 7}),
        op(1, {"f": "put", "key": "a", "value": "1", "lease": 7}, 2, 3, {"rev": 2}),
        op(2, {"f": "put", "key": "b", "value": "1"}, 4, 5, {"rev": 3}),
        op(3, {"f": "revoke", "id": 7}, 6, 7, {}),
        op(4, {"f": "range", "start": "a", "end": "z"}, 8, 9, {"kvs": [["b", "1"]], "rev": 4}),
    ]
    assert check(h, m).ok  # the revoke deleted a in one revision (4)
    h[4] = op(4, {"f": "get", "key": "a"}, 8, 9, {"value": "1", "mod": 2, "rev": 4})
    assert not check(h, m).ok  # a outlived its lease
    h[1] = op(1, {"f": "put", "key": "a", "value": "1", "lease": 8}, 2, 3, {"rev": 2})
    assert not check(h[:2], m).ok  # a put on a lease that was never granted
