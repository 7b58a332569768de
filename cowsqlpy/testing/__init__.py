"""A test harness for code that uses cowsqlpy: real clusters in temp dirs, faults on demand.

    from cowsqlpy.testing import Cluster

    with Cluster(3) as cluster:                       # in-process App nodes
        conn = cluster.connect("app", autocommit=True)
        ...
    with Cluster(3, processes=True) as cluster:       # one `python -m cowsqlpy node` each
        cluster.kill(cluster.leader_index())          # SIGKILL
        cluster.restart(...)

Every node gets its own temp dir and an OS-chosen port; node logs are kept per
node (``cluster.logs()``) and, with the pytest plugin (`cowsqlpy.pytest_plugin`),
attached to the report of a failing test.

Faults: ``kill(i)`` (SIGKILL a process; in-process: stop the engine without
hand-over, see below), ``stop(i)`` (graceful: hand-over then stop),
``restart(i)``, ``pause(i)``/``resume(i)`` (SIGSTOP/SIGCONT, processes only),
and `FaultProxy`, a TCP proxy that can drop, delay, refuse or cut connections,
usable as a client address, as a node's ``dial``, or as a relay a node process
dials through (``--dial-via``): ``Cluster(..., fault_proxies=True)`` puts one
under every node's Raft links, in-process or ``processes=True``.

Beyond single faults: `Nemesis` (``cowsqlpy.testing.nemesis``) draws seeded
random process, network and membership faults; `History` records what clients
did; ``linearizability``, ``watchcheck``, ``bank`` and ``listappend`` check
histories; ``scenarios`` has ready workloads; ``python -m
cowsqlpy.testing.torture --minutes N`` runs them for long (docs/consistency.md).

In-process ``kill(i)`` is the closest honest equivalent of SIGKILL an embedded
node allows: the engine is stopped with no hand-over and no demotion, but its
stop still closes sockets cleanly (peers see EOF at once, not a silent peer)
and it flushes nothing extra. Use ``processes=True`` when a test depends on a
crash being abrupt.
"""

from __future__ import annotations

from .cluster import (
           READY_PREFIX,
           Cluster,
           HarnessError,
           cluster,
           form_cluster,
           live_clusters,
           transfer_leadership,
)
from .faults import FaultProxy
from .history import History
from .nemesis import Nemesis
from .wait import wait_for

__all__ = ["READY_PREFIX", "Cluster", "FaultProxy", "HarnessError", "History", "Nemesis", "cluster", "form_cluster",
           "live_clusters", "transfer_leadership", "wait_for"]
