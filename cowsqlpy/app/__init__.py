"""The turnkey node an application embeds: bootstrap or join, role balancing, hand-over.

    app = cowsqlpy.App("/var/lib/myapp", "10.0.0.1:9001")                    # first node
    app = cowsqlpy.App("/var/lib/myapp", "10.0.0.2:9001", cluster=["10.0.0.1:9001"])
    app.ready(timeout=30)
    conn = app.open("mydb")          # PEP 249 connection that follows the leader
    ...
    app.close()                      # hands leadership and its role over, then stops

The counterpart of go-dqlite's ``app`` package (see docs/app.md for the
differences). One core: every long operation is a coroutine run on the
background event loop (`cowsqlpy.runtime`); ``ready()``/``handover()``/``close()``
wait for it, ``ready_async()``/``handover_async()``/``close_async()`` await it
from any event loop.

What lives in the data dir, beside the engine's own files:

* ``cowsqlpy-app.sqlite`` (apsw): table ``identity`` (node id, address, the
  cluster's id, whether the join is still pending) and table ``servers`` (the
  node store, refreshed from the leader on every roles tick).

The cluster's id is a random UUID kept in the replicated database
``__cowsqlpy__`` (created by the first App that finds none, so a cluster
started by go-dqlite gets one too). It lets an App refuse a data dir that
belongs to another cluster.

Modules, as go-dqlite splits its ``app`` package: `core` (App), `roles` (the pure
roles planner), `files` (the App's files in its data dir).
"""

from __future__ import annotations

from .core import HANDOVER_TIMEOUT, INTERNAL_DATABASE, App
from .files import STATE_FILE
from .roles import MIN_VOTERS, NodeState, RolesPlanner, role_name

__all__ = ["App", "HANDOVER_TIMEOUT", "INTERNAL_DATABASE", "MIN_VOTERS", "NodeState", "RolesPlanner",
           "STATE_FILE", "role_name"]
