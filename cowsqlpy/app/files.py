"""The App's files in its data dir: its identity (apsw state file) and the refusal of foreign dirs."""

from __future__ import annotations

import os
import re
import threading

from ..errors import NodeIdentityError

STATE_FILE = "cowsqlpy-app.sqlite"

_ENGINE_FILE = re.compile(r"^(metadata[12]|open-\d+|snapshot-.*|\d+-\d+)$")
_GO_DQLITE_FILES = ("info.yaml", "cluster.yaml")


class Identity:
    """identity table in the App's state file: id, address, cluster id, join pending."""

    def __init__(self, path: str) -> None:
        import apsw

        self._db = apsw.Connection(path)
        self._db.setbusytimeout(5000)
        self._lock = threading.Lock()
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS identity (k INTEGER PRIMARY KEY CHECK (k = 1), "
            "id INTEGER NOT NULL, address TEXT NOT NULL, cluster TEXT, join_pending INTEGER NOT NULL)"
        )

    def load(self) -> tuple[int, str, str | None, bool] | None:
        with self._lock:
            row = self._db.execute("SELECT id, address, cluster, join_pending FROM identity").fetchone()
        if row is None:
            return None
        return int(row[0]) & ((1 << 64) - 1), row[1], row[2], bool(row[3])

    def save(self, node_id: int, address: str, join_pending: bool) -> None:
        signed = node_id - (1 << 64) if node_id >= 1 << 63 else node_id
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO identity (k, id, address, cluster, join_pending) VALUES (1, ?, ?, NULL, ?)",
                (signed, address, int(join_pending)),
            )

    def set_cluster(self, cluster_id: str) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE identity SET cluster = ?", (cluster_id,))

    def joined(self) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE identity SET join_pending = 0")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def check_foreign_dir(data_dir: str) -> None:
    """Refuse a data dir that holds engine state but no App identity."""
    try:
        names = os.listdir(data_dir)
    except FileNotFoundError:
        return
    if any(n in _GO_DQLITE_FILES for n in names):
        raise NodeIdentityError(
            f"data dir {data_dir} belongs to a go-dqlite app (it has info.yaml/cluster.yaml); "
            "cowsqlpy.App will not adopt it"
        )
    engine = sorted(n for n in names if _ENGINE_FILE.match(n))
    if engine:
        raise NodeIdentityError(
            f"data dir {data_dir} holds engine data ({', '.join(engine[:3])}...) but no "
            f"{STATE_FILE}: it was not created by cowsqlpy.App; use an empty dir"
        )


