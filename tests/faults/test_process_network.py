"""Network faults on node *processes*: Raft links through each node's relay
(``Cluster(processes=True, fault_proxies=True)``, the runner's ``--dial-via``)."""

from __future__ import annotations

import pytest

from cowsqlpy import RetryPolicy, SyncClient
from cowsqlpy.testing import Cluster, wait_for
from cowsqlpy.testing.nemesis import NETWORK_FAULTS, Nemesis
from cowsqlpy.testing.scenarios import converged

pytestmark = pytest.mark.slow


def believed_leader(address: str) -> str | None:
    """The leader the node at `address` alone names (None: it knows none)."""
    with SyncClient(
        [address], policy=RetryPolicy(deadline=1.0, attempt_timeout=0.5, connect_timeout=0.5)
    ) as c:
        leader = c.leader()
    return None if leader is None else leader.address


def test_minority_partition_of_processes_keeps_no_leader_and_heals(
    proc_net_cluster: Cluster,
) -> None:
    c = proc_net_cluster
    assert all(
        p is not None and p.relay and p.accepted > 0 for p in c.proxies
    )  # Raft goes through the relays
    conn = c.connect("p", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    old = c.wait_leader()
    isolated = c.addresses[old]
    majority = [i for i in range(3) if i != old]
    c.partition([old], majority)
    new = c.wait_leader(exclude=old, timeout=30)
    assert new in majority
    # the cut-off old leader steps down and, alone, cannot elect itself again
    wait_for(lambda: believed_leader(isolated) is None, 30, "the isolated node to know no leader")
    conn.execute("INSERT INTO t VALUES (1)")  # the majority commits
    assert believed_leader(isolated) is None
    assert c.proxies[old].dropped_bytes > 0  # type: ignore[union-attr]
    c.heal()
    wait_for(
        lambda: believed_leader(isolated) == c.addresses[new],
        30,
        "the healed node to follow the leader",
    )
    conn.execute("INSERT INTO t VALUES (2)")
    ok, detail = converged(c, "p")
    assert ok, detail


def test_nemesis_network_faults_on_processes(proc_net_cluster: Cluster) -> None:
    c = proc_net_cluster
    nemesis = Nemesis(c, 23, faults=[*NETWORK_FAULTS, "pause"])
    assert set(NETWORK_FAULTS) | {"pause"} == set(nemesis.faults)
    conn = c.connect("p", autocommit=True)
    conn.execute("CREATE TABLE t (x)")
    for fault in ("one-way", "bridge", "partition-leader-majority"):
        assert nemesis.inject(fault) is not None, fault
        nemesis.heal_all()
        conn.execute("INSERT INTO t VALUES (?)", (fault,))
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(3,)]
    ok, detail = converged(c, "p")
    assert ok, detail + "\n" + nemesis.format_log()


def test_discovery_waits_out_the_election_not_a_frozen_leader(proc_net_cluster: Cluster) -> None:
    """SIGSTOP of the leader, then leader discovery with it as the hint: the others
    first name the frozen node (or none) and only later elect; discovery asks them
    again while the hint stays silent instead of waiting its attempt timeout (an
    hour here), so it returns the new leader."""
    import asyncio

    from cowsqlpy.client import find_leader
    from cowsqlpy.runtime import run_sync
    from cowsqlpy.store import MemoryNodeStore

    c = proc_net_cluster
    old = c.wait_leader()
    frozen = c.addresses[old]
    policy = RetryPolicy(attempt_timeout=3600.0, connect_timeout=5.0)

    async def discover() -> str:
        async with asyncio.timeout(60):  # far below the attempt timeout: not a speed check
            conn = await find_leader(MemoryNodeStore(c.addresses), policy, hint=frozen)
        conn.close()
        return conn.address

    c.pause(old)
    try:
        leader = run_sync(discover())
    finally:
        c.resume(old)
    assert leader != frozen and c.index_of(leader) in [i for i in range(3) if i != old]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dial-via", "nowhere"], "--dial-via: relay address 'nowhere' is not host:port"),
        (["--snapshot-params", "64"], "--snapshot-params takes THRESHOLD,TRAILING"),
        (["--snapshot-params", "a,b"], "--snapshot-params takes THRESHOLD,TRAILING"),
    ],
)
def test_runner_refuses_bad_fault_options(tmp_path, args: list[str], message: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "cowsqlpy", "node", "--address", "127.0.0.1:0",
                           "--dir", str(tmp_path / "n"), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "n").exists() or not any((tmp_path / "n").iterdir())  # refused before the node started


def test_dial_via_refuses_tls(tmp_path) -> None:
    import subprocess
    import sys

    cert = tmp_path / "c.pem"
    cert.write_text("")
    proc = subprocess.run([sys.executable, "-m", "cowsqlpy", "node", "--address", "127.0.0.1:0", "--dir",
                           str(tmp_path / "n"), "--cert", str(cert), "--key", str(cert), "--dial-via", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--dial-via cannot be combined with --cert" in proc.stderr, proc.stderr
