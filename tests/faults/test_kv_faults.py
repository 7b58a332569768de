"""The kvstore KV workload (public API only) with watches, recorded and checked by the
whole-store model and the watch checker: on cowsql:// under the nemesis, and on raft://
(pysyncobj) and a real 3-member etcd as references."""

from __future__ import annotations

from dataclasses import replace

import pytest

import kvstore
from cowsqlpy.testing import Cluster
from cowsqlpy.testing.linearizability import KVModel, check
from cowsqlpy.testing.nemesis import Nemesis
from cowsqlpy.testing.scenarios import RunReport, kv_workload
from kvstore.testing import EtcdCluster, RaftCluster, etcd_available

from .child import cowsql_opener
from .conftest import SEEDS
from .isolated import run_scenario

pytestmark = pytest.mark.slow


def assert_clean(report: RunReport) -> None:
    print(report.summary())
    assert report.stats["ok"] > 30, report.summary()
    if not report.ok:
        pytest.fail(report.summary(), pytrace=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_kv_cowsql_under_nemesis(seed: int, tmp_path) -> None:
    report = run_scenario(tmp_path, scenario="kv_workload", seed=seed)  # in-process cluster, in a child
    assert report["stats"]["ok"] > 30, report["summary"]
    if not report["ok"]:
        pytest.fail(report["summary"], pytrace=False)


def test_kv_cowsql_under_sigkill_and_sigstop(proc_cluster: Cluster, tmp_path) -> None:
    seed = SEEDS[0]
    nemesis = Nemesis(proc_cluster, seed, faults=["kill", "pause", "restart", "transfer"])
    report = kv_workload(cowsql_opener(proc_cluster, f"kvp{seed}"), seed, name="kv-cowsql-processes", duration=8.0,
                         interval=1.5, nemesis=nemesis, save_dir=str(tmp_path))
    assert_clean(report)


def test_kv_raft_reference(tmp_path) -> None:
    with RaftCluster(tmp_path, 3) as raft:
        report = kv_workload(lambda i: raft.handles[i % 3], SEEDS[0], name="kv-raft", duration=6.0,
                             save_dir=str(tmp_path), close=False)
    assert_clean(report)


def test_kv_etcd_reference(tmp_path) -> None:
    if not etcd_available():
        pytest.skip("etcd server binary not installed (Debian package etcd-server)")
    with EtcdCluster(tmp_path, 3) as etcd:
        report = kv_workload(lambda i: kvstore.open(etcd.member_url(i % 3)), SEEDS[0], name="kv-etcd",
                             duration=6.0, save_dir=str(tmp_path))
    assert_clean(report)


def test_checker_catches_a_stale_read_planted_in_a_real_etcd_history(tmp_path) -> None:
    """The reference must pass, and the same history with one read made stale must not."""
    if not etcd_available():
        pytest.skip("etcd server binary not installed (Debian package etcd-server)")
    with EtcdCluster(tmp_path, 1) as etcd:
        report = kv_workload(lambda i: kvstore.open(etcd.url), SEEDS[0], name="kv-etcd-1", duration=3.0)
    assert report.ok, report.summary()
    ops = [replace(o) for o in report.history]
    # a get that saw a value, answered later with the key's previous value and revision
    last_put: dict[str, tuple[str, int]] = {}
    previous: dict[int, tuple[str, int]] = {}
    for o in sorted(ops, key=lambda o: o.ret or o.call):
        if o.status == "ok" and o.input["f"] == "put":
            if o.input["key"] in last_put:
                previous[o.output["rev"]] = last_put[o.input["key"]]
            last_put[o.input["key"]] = (o.input["value"], o.output["rev"])
    target = next(o for o in ops if o.status == "ok" and o.input["f"] == "get" and o.output["mod"] in previous)
    value, mod = previous[target.output["mod"]]
    target.output = dict(target.output, value=value, mod=mod)
    result = check(ops, KVModel(initial_revision=None))
    assert not result.ok
    assert result.blocking is not None and result.blocking.id == target.id or target.id in {o.id for o in result.counterexample}
