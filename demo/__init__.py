"""The HTTP key/value demo cluster (the counterpart of go-dqlite's ``dqlite-demo``).

``python -m demo --api 127.0.0.1:8001 --db 127.0.0.1:9001 [--join 127.0.0.1:9001] [--dir DIR]``
runs one node: an embedded :class:`cowsqlpy.App` plus an HTTP server that serves the
``kvstore`` API (``cowsql`` backend) over HTTP. ``python -m demo.local`` starts three of
them on this machine. See ``docs/demo.md``.
"""

from __future__ import annotations

#: Replicated database that holds the demo's key/value store.
DATABASE = "demo"
