"""SQL workloads through the DB-API against a real 3-node cluster under the nemesis,
recorded and checked: registers (linearizability), bank and list-append (Jepsen, Elle)."""

from __future__ import annotations

import pytest

from cowsqlpy.testing import Cluster
from cowsqlpy.testing.nemesis import ALL_FAULTS, NETWORK_FAULTS, Nemesis
from cowsqlpy.testing.scenarios import RunReport, sql_bank, sql_list_append, sql_register
from cowsqlpy.testing.workloads import sql_register_apply

from .conftest import SEEDS

pytestmark = pytest.mark.slow


def assert_clean(report: RunReport) -> None:
    print(report.summary())
    if not report.ok:
        pytest.fail(report.summary(), pytrace=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_register_under_network_and_node_faults(net_cluster: Cluster, seed: int, tmp_path) -> None:
    nemesis = Nemesis(net_cluster, seed)
    report = sql_register(net_cluster, seed, duration=6.0, nemesis=nemesis, save_dir=str(tmp_path))
    assert report.stats["ok"] > 100, report.summary()
    assert_clean(report)


def test_register_under_sigkill_and_sigstop(proc_cluster: Cluster, tmp_path) -> None:
    seed = SEEDS[0]
    nemesis = Nemesis(proc_cluster, seed, faults=["kill", "pause", "restart", "stop"])
    report = sql_register(proc_cluster, seed, duration=10.0, interval=1.5, nemesis=nemesis, save_dir=str(tmp_path))
    assert report.stats["ok"] > 50, report.summary()
    assert_clean(report)


@pytest.mark.parametrize("seed", SEEDS)
def test_bank_under_faults(net_cluster: Cluster, seed: int, tmp_path) -> None:
    # every fault, membership removal and re-adding included
    nemesis = Nemesis(net_cluster, seed, faults=[f for f in ALL_FAULTS if f != "pause"])
    report = sql_bank(net_cluster, seed, duration=6.0, nemesis=nemesis, save_dir=str(tmp_path))
    assert report.stats["ok"] > 50, report.summary()
    assert_clean(report)


@pytest.mark.parametrize("seed", SEEDS)
def test_list_append_under_faults(net_cluster: Cluster, seed: int, tmp_path) -> None:
    nemesis = Nemesis(net_cluster, seed, faults=[*NETWORK_FAULTS, "kill", "restart", "transfer"])
    report = sql_list_append(net_cluster, seed, duration=6.0, nemesis=nemesis, save_dir=str(tmp_path))
    assert report.stats["ok"] > 50, report.summary()
    # Queries inside a transaction take no read barrier (docs/client.md): a read-only
    # transaction on a deposed leader can be stale, which Elle sees as a -realtime cycle
    # while plain serializability holds. That is documented behaviour, reported as such.
    if not report.ok and set(report.failed) == {"strict-serializable"}:
        pytest.xfail(f"read-only transactions are serializable, not strict (no barrier), seed={seed}:\n"
                     + report.checks["strict-serializable"])
    assert_clean(report)


def test_register_kill_during_snapshot_heavy_load(tmp_path) -> None:
    """Snapshots every 64 entries while nodes are killed and restarted on their data
    dirs; then the whole cluster is killed and restarted: every acknowledged write is
    still there (the final reads before and after agree)."""
    seed = SEEDS[0]
    with Cluster(3, snapshot_params=(64, 128)) as cluster:
        nemesis = Nemesis(cluster, seed, faults=["kill", "restart", "stop"])
        report = sql_register(cluster, seed, duration=8.0, interval=1.0, nemesis=nemesis, save_dir=str(tmp_path))
        assert report.stats["ok"] > 200, report.summary()  # enough entries for several snapshots
        assert_clean(report)
        print(nemesis.format_log())
        before = {o.input["key"]: o.output for o in report.history if o.client == "final"}
        cluster.restart_all(graceful=False)
        conn = cluster.connect(f"reg{seed}", autocommit=True)
        after = {k: sql_register_apply(conn, {"f": "read", "key": k}) for k in before}
        assert after == before, nemesis.format_log()
