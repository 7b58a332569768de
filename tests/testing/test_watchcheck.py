"""The watch checker on real event streams of the mem store and on broken copies of them."""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kvstore
from cowsqlpy.testing.history import FAIL, History, Operation
from cowsqlpy.testing.watchcheck import Violation, WatchRecord, check_watches, format_violations
from cowsqlpy.testing.workloads import KVOpGenerator, event_json, kv_apply


def drain(stream: kvstore.WatchStream, upto: int) -> list[dict[str, Any]]:
    events = []
    while not events or events[-1]["rev"] < upto:
        e = stream.get(5.0)
        assert e is not None, f"watch stalled before revision {upto}"
        events.append(event_json(e))
    while (e := stream.get(0.1)) is not None:  # the rest of the last revision
        events.append(event_json(e))
    return events


@pytest.fixture
def recorded() -> Iterator[tuple[list[WatchRecord], list[Operation]]]:
    """A real history on the mem store with three watches: everything from revision 1,
    one key, and a prefix resumed from the middle."""
    kv = kvstore.open(f"mem:watch-{uuid.uuid4().hex[:8]}")
    history = History()
    rng = random.Random(7)
    gen = KVOpGenerator(rng, prefix="k/", keys=3)
    everything = kv.watch_prefix("k/", start_revision=1)
    one = kv.watch_key("k/1")
    opened = kv.revision()
    for _ in range(60):
        inp = gen.next()
        op = history.invoke("c", inp)
        history.ok(op, kv_apply(kv, inp))
    # a multi-key revision
    txn = {"f": "txn", "cmp": [], "then": [["put", "k/0", "m0"], ["put", "k/2", "m2"]], "else": []}
    history.ok(history.invoke("c", txn), kv_apply(kv, txn))
    middle = (opened + kv.revision()) // 2
    resumed = kv.watch_prefix("k/", start_revision=middle)
    end = kv.revision()
    records = [
        WatchRecord("k/", "k0", 1, drain(everything, end)),
        WatchRecord("k/1", None, 0, [], opened_revision=opened, last_revision=end),
        WatchRecord("k/", "k0", middle, drain(resumed, end)),
    ]
    while (e := one.get(0.2)) is not None:
        records[1].events.append(event_json(e))
    yield records, history.operations()
    kv.close()


def rules(violations: list[Violation]) -> set[str]:
    return {v.rule for v in violations}


def test_real_streams_pass(recorded: tuple[list[WatchRecord], list[Operation]]) -> None:
    watches, ops = recorded
    assert watches[1].events, "the single-key watch saw nothing: the fixture is too small"
    assert len({e["rev"] for e in watches[0].events}) < len(watches[0].events), (
        "no multi-key revision"
    )
    violations = check_watches(watches, ops, require_prev_kv=True, complete_from=1)
    assert not violations, format_violations(violations)


def test_each_broken_rule_is_reported(recorded: tuple[list[WatchRecord], list[Operation]]) -> None:
    watches, ops = recorded
    full = watches[0].events
    multi = next(r for r in {e["rev"] for e in full} if sum(1 for e in full if e["rev"] == r) > 1)

    def variant(change: Any, index: int = 0) -> list[Violation]:
        ws = copy.deepcopy(watches)
        change(ws[index].events)
        return check_watches(ws, ops, require_prev_kv=True, complete_from=1)

    def swap(ev: list[dict[str, Any]]) -> None:
        ev[3], ev[4] = ev[4], ev[3]

    assert "ordered" in rules(variant(swap))
    assert "unique" in rules(variant(lambda ev: ev.insert(5, ev[5])))
    assert "reliable" in rules(variant(lambda ev: ev.pop(5)))
    assert "atomic" in rules(
        variant(lambda ev: ev.remove(next(e for e in ev if e["rev"] == multi)))
    )
    assert "resumable" in rules(variant(lambda ev: ev.pop(0), index=2))
    assert "resumable" in rules(variant(lambda ev: ev.insert(0, dict(full[0])), index=2))

    def outside(ev: list[dict[str, Any]]) -> None:
        ev.append(dict(ev[-1], key="z/9", rev=ev[-1]["rev"] + 1))

    assert "filter" in rules(variant(outside, index=1))

    def wrong_prev(ev: list[dict[str, Any]]) -> None:
        e = next(e for e in ev if e["prev"] is not None)
        e["prev"] = dict(e["prev"], value="bogus")

    assert "prev_kv" in rules(variant(wrong_prev))

    def missing_prev(ev: list[dict[str, Any]]) -> None:
        for e in ev:
            e["prev"] = None

    assert "prev_kv" in rules(variant(missing_prev))

    def wrong_create(ev: list[dict[str, Any]]) -> None:
        e = next(e for e in ev if e["type"] == "put" and e["create"] != e["rev"])
        e["create"] = e["rev"]

    assert "create" in rules(variant(wrong_create))

    def wrong_version(ev: list[dict[str, Any]]) -> None:
        e = next(e for e in ev if e["type"] == "put" and e["version"] > 1)
        e["version"] += 1

    assert {"create", "history"} & rules(variant(wrong_version))

    def invented(ev: list[dict[str, Any]]) -> None:
        e = next(e for e in ev if e["type"] == "put")
        e["value"] = "never-written"

    assert "history" in rules(variant(invented))


def test_event_of_a_failed_write_and_wrong_revision(
    recorded: tuple[list[WatchRecord], list[Operation]],
) -> None:
    watches, ops = recorded
    ops = copy.deepcopy(ops)
    put = next(
        o
        for o in ops
        if o.input["f"] == "put" and o.output["rev"] in {e["rev"] for e in watches[0].events}
    )
    put.status = FAIL
    assert any("failed" in v.detail for v in check_watches(watches, ops))
    put.status = "ok"
    put.output = {"rev": put.output["rev"] + 1000}
    assert "history" in rules(check_watches(watches, ops))


def test_acknowledged_write_missing_from_every_stream(
    recorded: tuple[list[WatchRecord], list[Operation]],
) -> None:
    watches, ops = recorded
    ws = copy.deepcopy(watches)
    last = ws[0].events[-1]["rev"]
    extra = Operation(
        10_000, "c", {"f": "put", "key": "k/0", "value": "lost"}, 0.0, 1.0, "ok", {"rev": last + 1}
    )
    for w in ws:
        w.last_revision = last + 1
    assert "reliable" in rules(check_watches(ws, [*ops, extra]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), drop=st.integers(0, 10_000))
def test_any_single_dropped_event_is_found(seed: int, drop: int) -> None:
    kv = kvstore.open(f"mem:watchp-{uuid.uuid4().hex[:8]}")
    try:
        history = History()
        gen = KVOpGenerator(random.Random(seed), prefix="p/", keys=3)
        stream = kv.watch_prefix("p/", start_revision=1)
        for _ in range(25):
            inp = gen.next()
            history.ok(history.invoke("c", inp), kv_apply(kv, inp))
        end = kv.revision()
        if end == 1:
            return
        events = drain(stream, end)
    finally:
        kv.close()
    record = WatchRecord("p/", "p0", 1, events, last_revision=end)
    assert not check_watches([record], history.operations(), require_prev_kv=True, complete_from=1)
    record.events.pop(drop % len(events))
    assert check_watches([record], history.operations(), require_prev_kv=True, complete_from=1)


def test_record_json_round_trip() -> None:
    r = WatchRecord(
        "a",
        "b",
        3,
        [
            {
                "type": "put",
                "key": "a",
                "value": "1",
                "rev": 3,
                "create": 3,
                "version": 1,
                "prev": None,
            }
        ],
    )
    assert WatchRecord.from_json(r.to_json()) == r
