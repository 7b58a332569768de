"""Elle's list-append checker and Jepsen's bank checker on hand-built anomalies and clean
generated histories."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cowsqlpy.testing.bank import check_bank
from cowsqlpy.testing.history import FAIL, OK, UNKNOWN, Operation
from cowsqlpy.testing.listappend import check_list_append, tarjan_scc

from .gen import timeline

_ids = iter(range(10**9))


def T(mops: list[list[Any]], call: float, ret: float | None, status: str = OK) -> Operation:  # a transaction
    """A transaction: reads written as ["r", k, [values]] (the input gets None)."""
    inp = [[m[0], m[1], None] if m[0] == "r" else list(m) for m in mops]
    return Operation(
        next(_ids),
        "c",
        {"f": "txn", "mops": inp},
        call,
        ret,
        status,
        mops if status == OK else None,
    )


def kinds(ops: list[Operation], realtime: bool = True) -> set[str]:
    return set(check_list_append(ops, realtime=realtime).anomalies)


def test_serial_history_is_clean() -> None:
    h = [
        T([["append", "x", 1], ["r", "x", [1]]], 0, 1),
        T([["append", "x", 2], ["append", "y", 1]], 2, 3),
        T([["r", "x", [1, 2]], ["r", "y", [1]]], 4, 5),
        T([["r", "z", []]], 6, 7),
    ]
    result = check_list_append(h)
    assert result.ok, result.describe()


def test_g0_write_cycle() -> None:
    h = [
        T([["append", "x", 1], ["append", "y", 2]], 0, 10),
        T([["append", "x", 3], ["append", "y", 4]], 0, 10),
        T([["r", "x", [1, 3]], ["r", "y", [4, 2]]], 11, 12),
    ]
    result = check_list_append(h)
    assert "G0" in result.anomalies, result.describe()
    cycle = result.anomalies["G0"][0].cycle
    assert {k for _, k, _ in cycle} == {"ww"} and len(cycle) == 2


def test_g1a_aborted_read() -> None:
    h = [T([["append", "x", 1]], 0, 1, FAIL), T([["r", "x", [1]]], 2, 3)]
    assert "G1a" in kinds(h)


def test_g1b_intermediate_read() -> None:
    h = [
        T([["append", "x", 1], ["append", "x", 2]], 0, 10),
        T([["r", "x", [1]]], 1, 2),
        T([["r", "x", [1, 2]]], 11, 12),
    ]
    assert "G1b" in kinds(h)


def test_g1c_circular_information_flow() -> None:
    h = [
        T([["append", "x", 1], ["r", "y", [2]]], 0, 10),
        T([["append", "y", 2], ["r", "x", [1]]], 0, 10),
    ]
    found = kinds(h)
    assert "G1c" in found and "G0" not in found


def test_g_single_read_skew() -> None:
    h = [
        T([["append", "x", 1], ["append", "y", 1]], 0, 10),
        T([["r", "x", []], ["r", "y", [1]]], 0, 10),
        T([["r", "x", [1]]], 11, 12),
    ]
    found = kinds(h)
    assert "G-single" in found and "G2" not in found


def test_g2_write_skew() -> None:
    h = [
        T([["r", "y", []], ["append", "x", 1]], 0, 10),
        T([["r", "x", []], ["append", "y", 1]], 0, 10),
        T([["r", "x", [1]], ["r", "y", [1]]], 11, 12),
    ]
    found = kinds(h)
    assert "G2" in found and "G-single" not in found


def test_stale_read_is_a_realtime_violation_only() -> None:
    h = [T([["append", "x", 1]], 0, 1), T([["r", "x", []]], 2, 3), T([["r", "x", [1]]], 4, 5)]
    assert kinds(h) == {"G-single-realtime"}
    assert kinds(h, realtime=False) == set()  # serializable: the read ordered first


def test_g0_realtime() -> None:
    # T2 starts after T1 finished, yet its append comes first in x's order
    h = [
        T([["append", "x", 1]], 0, 1),
        T([["append", "x", 2]], 2, 3),
        T([["r", "x", [2, 1]]], 4, 5),
    ]
    assert "G0-realtime" in kinds(h)
    assert kinds(h, realtime=False) == set()


def test_sanity_anomalies() -> None:
    assert "incompatible-order" in kinds(
        [
            T([["append", "x", 1]], 0, 9),
            T([["append", "x", 2]], 0, 9),
            T([["r", "x", [1, 2]]], 10, 11),
            T([["r", "x", [2, 1]]], 12, 13),
        ]
    )
    assert "garbage-read" in kinds([T([["r", "x", [7]]], 0, 1)])
    assert "duplicate-elements" in kinds(
        [T([["append", "x", 1]], 0, 1), T([["r", "x", [1, 1]]], 2, 3)]
    )
    assert "internal" in kinds([T([["append", "x", 1], ["r", "x", []]], 0, 1)])
    assert "duplicate-append" in kinds(
        [T([["append", "x", 1]], 0, 1), T([["append", "x", 1]], 2, 3)]
    )


def test_unknown_transactions_may_have_committed() -> None:
    h = [T([["append", "x", 1]], 0, None, UNKNOWN), T([["r", "x", [1]]], 2, 3)]
    assert kinds(h) == set()
    h = [T([["append", "x", 1]], 0, None, UNKNOWN), T([["r", "x", []]], 2, 3)]
    assert kinds(h) == set()


def test_tarjan() -> None:
    succ = {1: [2], 2: [3], 3: [1, 4], 4: [5], 5: [4], 6: []}
    comps = sorted(sorted(c) for c in tarjan_scc([1, 2, 3, 4, 5, 6], succ))
    assert comps == [[1, 2, 3], [4, 5], [6]]
    chain = {i: [i + 1] for i in range(20000)}  # deep: no recursion limit
    assert len(tarjan_scc(list(chain), chain)) == 20001


def simulate_strict(
    rng: random.Random, clients: int, per_client: int, keys: int
) -> list[Operation]:
    """Transactions that take effect atomically at a point inside their interval."""
    state: dict[str, list[int]] = {}
    planned = []
    counter = 0
    for _c, call, ret, point in timeline(rng, clients, per_client, 2.0):
        mops: list[list[Any]] = []
        for _ in range(rng.randint(1, 4)):
            k = f"k{rng.randrange(keys)}"
            if rng.random() < 0.5:
                counter += 1
                mops.append(["append", k, counter])
            else:
                mops.append(["r", k, None])
        planned.append((point, call, ret, mops))
    ops = []
    for _point, call, ret, mops in sorted(planned):
        out = []
        for kind, k, v in mops:
            if kind == "append":
                state.setdefault(k, []).append(v)
                out.append([kind, k, v])
            else:
                out.append([kind, k, list(state.get(k, []))])
        status = OK if rng.random() > 0.1 else UNKNOWN
        ops.append(
            Operation(
                next(_ids),
                "c",
                {"f": "txn", "mops": mops},
                call,
                ret if status == OK else None,
                status,
                out if status == OK else None,
            )
        )
    return ops


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    clients=st.integers(1, 5),
    per_client=st.integers(1, 15),
    keys=st.integers(1, 4),
)
def test_generated_strict_serializable_histories_are_clean(
    seed: int, clients: int, per_client: int, keys: int
) -> None:
    result = check_list_append(simulate_strict(random.Random(seed), clients, per_client, keys))
    assert result.ok, result.describe()


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_a_read_made_stale_is_caught(seed: int) -> None:
    rng = random.Random(seed)
    ops = simulate_strict(rng, 3, 10, 2)
    # take a read that saw a non-empty list and make it see one element less, after
    # the append it drops had completed: a realtime (or worse) anomaly
    for op in ops:
        if op.status != OK:
            continue
        for mop in op.output:
            if mop[0] == "r" and mop[2]:
                last = mop[2][-1]
                writer = next((o for o in ops if ["append", mop[1], last] in o.input["mops"]), None)
                if writer is None or writer is op or writer.ret is None or writer.ret >= op.call:
                    continue
                mop[2] = mop[2][:-1]
                assert not check_list_append(ops).ok
                return


def test_bank_checker() -> None:
    def read(balances: dict[str, int], i: int = 0) -> Operation:
        return Operation(i, "c", {"f": "read"}, 0, 1, OK, balances)

    transfer = Operation(9, "c", {"f": "transfer", "from": 0, "to": 1, "amount": 5}, 0, 1, OK)
    good = check_bank([transfer, read({"0": 5, "1": 15})], range(2), 20)
    assert good.ok and good.reads == 1 and good.transfers == 1
    assert {a[0] for a in check_bank([read({"0": 5, "1": 14})], range(2), 20).anomalies} == {
        "wrong-total"
    }
    assert {a[0] for a in check_bank([read({"0": -1, "1": 21})], range(2), 20).anomalies} == {
        "negative"
    }
    assert check_bank([read({"0": -1, "1": 21})], range(2), 20, negative_ok=True).ok
    assert {a[0] for a in check_bank([read({"0": 20})], range(2), 20).anomalies} == {
        "wrong-accounts"
    }
    failed_read = Operation(1, "c", {"f": "read"}, 0, 1, FAIL)
    assert check_bank([failed_read], range(2), 20).ok
