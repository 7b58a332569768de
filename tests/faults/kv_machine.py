"""Run by tests/faults/test_kv_statemachine.py in a child process (in-process engines;
see tests/faults/child.py): ``python -m tests.faults.kv_machine``.

A hypothesis state machine: several clients on several nodes interleave KV operations
(put, get, range, delete, txn with compares, lease grant / put on a lease / revoke)
with nemesis steps (kill or restart the
leader, partitions, one-way cuts, bridges, delays, leadership transfer, demotion, heal).

At teardown, after healing: the history (plus a read of every key) is linearizable
(whole-store model), every acknowledged write survived (the final reads are part of
the checked history), the watch obeys etcd's rules, and every node holds the same data.
On a failure hypothesis prints the shrunk steps; the message has the nemesis log with
its seed and the checker's counter-example."""

from __future__ import annotations

import faulthandler
import sys
import uuid
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    multiple,
    rule,
    run_state_machine_as_test,
)

import kvstore
from cowsqlpy.testing import Cluster
from cowsqlpy.testing.history import History
from cowsqlpy.testing.linearizability import KVModel, check
from cowsqlpy.testing.nemesis import Nemesis
from cowsqlpy.testing.scenarios import converged, kv_definite, patch_with_watch
from cowsqlpy.testing.watchcheck import WatchRecord, check_watches, format_violations
from cowsqlpy.testing.workloads import event_json, kv_apply

from .child import cowsql_opener

KEYS = st.sampled_from([f"s/{i}" for i in range(3)])
CLIENTS = st.integers(0, 2)
FAULTS = ["kill", "restart", "stop", "partition-leader-minority", "partition-leader-majority", "bridge",
          "one-way", "delay", "reset", "transfer", "demote"]


class ClusterKV(RuleBasedStateMachine):
    cluster: Cluster
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.database = f"sm-{uuid.uuid4().hex[:10]}"
        opener = cowsql_opener(self.cluster, self.database)
        self.handles = [opener(i) for i in range(3)]
        self.own = opener(3)
        self.rev0 = self.own.revision()
        self.watch = self.own.watch_prefix("s/", start_revision=self.rev0 + 1)
        self.history = History()
        self.values = 0
        self.nemesis: Nemesis | None = None

    @initialize(seed=st.integers(0, 2**16))
    def start_nemesis(self, seed: int) -> None:
        self.nemesis = Nemesis(self.cluster, seed, faults=FAULTS)

    def value(self) -> str:
        self.values += 1
        return f"v{self.values}"

    def run(self, client: int, inp: dict[str, Any]) -> None:
        self.history.call(f"c{client}", inp, lambda: kv_apply(self.handles[client], inp), kv_definite(inp))

    # two rules, so operations and nemesis steps come about equally often
    @rule(kind=st.sampled_from(["put", "put", "get", "get", "range", "delete", "txn"]), client=CLIENTS, key=KEYS,
          version=st.integers(0, 3))
    def operation(self, kind: str, client: int, key: str, version: int) -> None:
        if kind == "put":
            inp: dict[str, Any] = {"f": "put", "key": key, "value": self.value()}
        elif kind == "get":
            inp = {"f": "get", "key": key}
        elif kind == "range":
            inp = {"f": "range", "start": "s/", "end": "s0"}
        elif kind == "delete":
            inp = {"f": "delete", "key": key}
        else:
            inp = {"f": "txn", "cmp": [[key, "version", "=", version]], "then": [["put", key, self.value()]],
                   "else": [["get", key]]}
        self.run(client, inp)

    @rule(target=leases, client=CLIENTS)
    def grant(self, client: int) -> Any:
        op = self.history.call(f"c{client}", {"f": "grant", "ttl": 3600}, lambda: kv_apply(self.handles[client], {"f": "grant", "ttl": 3600}))
        return op.output["id"] if op.status == "ok" else multiple()

    @rule(client=CLIENTS, key=KEYS, lease=leases)
    def put_on_lease(self, client: int, key: str, lease: int) -> None:
        self.run(client, {"f": "put", "key": key, "value": self.value(), "lease": lease})

    @rule(client=CLIENTS, lease=consumes(leases))
    def revoke(self, client: int, lease: int) -> None:
        self.run(client, {"f": "revoke", "id": lease})

    @rule(fault=st.sampled_from([*FAULTS, "heal"]))
    def nemesis_step(self, fault: str) -> None:
        assert self.nemesis is not None
        if fault == "heal":
            self.nemesis.heal_all(wait_roles=False)
        else:
            self.nemesis.inject(fault)

    def teardown(self) -> None:
        try:
            log = ""
            if self.nemesis is not None:
                self.nemesis.heal_all()
                log = self.nemesis.format_log()
            for k in range(3):
                inp = {"f": "get", "key": f"s/{k}"}
                self.history.ok(self.history.invoke("final", inp), kv_apply(self.own, inp))
            end = self.own.revision()
            events = []
            while not events or events[-1]["rev"] < end:
                if end == self.rev0:
                    break
                e = self.watch.get(15.0)
                assert e is not None, f"the watch stalled before revision {end}\n{log}"
                events.append(event_json(e))
            ops = self.history.operations()
            record = WatchRecord("s/", "s0", self.rev0 + 1, events, last_revision=end)
            violations = check_watches([record], ops, require_prev_kv=True, complete_from=self.rev0 + 1)
            assert not violations, format_violations(violations) + "\n" + log
            model = KVModel(initial_revision=self.rev0)
            result = check(patch_with_watch(ops, events), model)
            assert result.ok, result.describe(model) + "\n" + log
            ok, detail = converged(self.cluster, self.database)
            assert ok, detail + "\n" + log
            print(f"example: {len(ops)} ops, {len(events)} watch events, nemesis steps: "
                  f"{[s.action for s in self.nemesis.log] if self.nemesis else []}")
        finally:
            self.watch.cancel()
            for h in [*self.handles, self.own]:
                try:
                    h.close()
                except kvstore.KVError:
                    pass


def main() -> int:
    """Run the machine on a fresh in-process cluster; 0 when every example passed."""
    faulthandler.enable()
    with Cluster(3, fault_proxies=True) as cluster:
        machine = type("BoundClusterKV", (ClusterKV,), {"cluster": cluster})
        run_state_machine_as_test(machine, settings=settings(
            max_examples=4, stateful_step_count=25, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
