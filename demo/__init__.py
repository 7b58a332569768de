"""The HTTP key/value demo cluster (the counterpart of go-dqlite's ``dqlite-demo``).

``python -m demo --api 127.0.0.1:8001 --db 127.0.0.1:9001 [--join 127.0.0.1:9001] [--dir DIR]``
runs one node: an embedded :class:`cowsqlpy.App` plus an HTTP server that serves the
``kvstore`` API (``cowsql`` backend) over HTTP. ``python -m demo.local`` starts three of
them on this machine. See ``docs/demo.md``.
"""

from __future__ import annotations

#: Replicated database that holds the demo's key/value store.
DATABASE = "demo"

#: Revisions of history a node keeps (``--compact-retention``).
DEFAULT_COMPACT_RETENTION = 10_000

#: Seconds the event loop keeps polling after network activity (``--busy-poll``; see
#: cowsqlpy.runtime.BusyPoll): covers an engine round trip (~30 us) and the next request
#: of a client that sends one at a time; longer windows only burn CPU the engine
#: threads need.
DEFAULT_BUSY_POLL = 0.0001
