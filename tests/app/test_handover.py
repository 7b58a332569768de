"""Graceful close of the leader while clients write: nothing fails, nothing is lost."""

from __future__ import annotations

import threading

from cowsqlpy.errors import Error
from cowsqlpy.protocol import VOTER
from cowsqlpy.testing import Cluster, wait_for


def _writers(c: Cluster, n: int, stop: threading.Event) -> tuple[list[threading.Thread], list[list[int]], list[BaseException]]:
    acked: list[list[int]] = [[] for _ in range(n)]
    failures: list[BaseException] = []

    def write(w: int) -> None:
        conn = c.connect("h", autocommit=True)
        seq = 0
        while not stop.is_set():
            seq += 1
            try:
                conn.execute("INSERT INTO t (writer, seq) VALUES (?, ?)", (w, seq))
            except Error as exc:  # any failure is a test failure
                failures.append(exc)
                return
            acked[w].append(seq)

    threads = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(n)]
    return threads, acked, failures


def _check(c: Cluster, acked: list[list[int]]) -> None:
    conn = c.connect("h")
    rows = set(conn.execute("SELECT writer, seq FROM t").fetchall())
    for w, seqs in enumerate(acked):
        missing = [s for s in seqs if (w, s) not in rows]
        assert not missing, f"writer {w}: acknowledged writes lost: {missing[:10]}"


def test_graceful_close_of_the_leader_process_while_clients_write(cluster_factory) -> None:
    c = cluster_factory(4, processes=True, voters=3, standbys=1)
    c.wait_roles(voters=3, standbys=1)
    c.connect("h", autocommit=True).execute("CREATE TABLE t (writer INTEGER, seq INTEGER, PRIMARY KEY (writer, seq))")
    stop = threading.Event()
    threads, acked, failures = _writers(c, 3, stop)
    for t in threads:
        t.start()
    wait_for(lambda: all(len(a) >= 20 for a in acked) or failures, 20, "writes before the hand-over")
    leader = c.wait_leader()
    assert c.stop(leader) == 0  # SIGTERM: hand-over, exit 0
    before = [len(a) for a in acked]
    wait_for(lambda: all(len(a) >= b + 20 for a, b in zip(acked, before, strict=True)) or failures, 20, "writes after the hand-over")
    stop.set()
    for t in threads:
        t.join(30)
    assert not failures, failures
    _check(c, acked)
    # The stand-by took the voting role of the node that left; it left as a spare.
    nodes = {n.address: n.role for n in c.wait_roles(voters=3, standbys=0, timeout=10)}
    assert nodes[c.addresses[leader]] != VOTER


def test_graceful_close_of_an_in_process_leader_app(cluster3: Cluster) -> None:
    c = cluster3
    c.connect("h", autocommit=True).execute("CREATE TABLE t (writer INTEGER, seq INTEGER, PRIMARY KEY (writer, seq))")
    stop = threading.Event()
    threads, acked, failures = _writers(c, 2, stop)
    for t in threads:
        t.start()
    wait_for(lambda: all(len(a) >= 20 for a in acked) or failures, 20, "writes before the close")
    leader = c.wait_leader()
    c.apps[leader].close()  # hand-over, then stop
    before = [len(a) for a in acked]
    wait_for(lambda: all(len(a) >= b + 20 for a, b in zip(acked, before, strict=True)) or failures, 20, "writes after the close")
    stop.set()
    for t in threads:
        t.join(30)
    assert not failures, failures
    _check(c, acked)
