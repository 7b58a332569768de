"""Child process of the raft:// power-loss test: three pysyncobj members in this process
with their journals under DIR (a LazyMount), so the parent can SIGKILL all of them at
once and then drop what the filesystem had not synced.

    python -m tests.faults.raft_power_child write DIR PORTS ACKED_FILE [--flush]  # PUT until killed
    python -m tests.faults.raft_power_child read DIR PORTS ACKED_FILE [--flush]   # print what survived (JSON)

PORTS: three comma-separated ports. `write` appends every acknowledged key to
ACKED_FILE (outside the mount, flushed per line) and prints ``ready`` once the
members have a leader. ``--flush`` applies, from outside, the fix docs/kvstore.md
describes (msync the journal after every change, fsync the term/vote file before
it replaces the old one), to show that it is enough and what it costs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import kvstore


def flush_before_acknowledging() -> None:
    """Make every pysyncobj member of this process sync its journal and term/vote file
    before it answers (test-only: the real fix belongs in kvstore's raft backend)."""
    import pysyncobj.journal as journal
    import pysyncobj.syncobj as syncobj

    class FlushingJournal(journal.FileJournal):
        def add(self, command: Any, idx: int, term: int) -> None:
            super().add(command, idx, term)
            self.flush()

        def deleteEntriesFrom(self, entryFrom: int) -> None:
            super().deleteEntriesFrom(entryFrom)
            self.flush()

    class SyncedMeta(journal.MetaStorer):
        def storeMeta(self, meta: dict[str, Any]) -> None:
            tmp = self.getPath() + ".tmp"
            with open(tmp, "wb") as f:
                f.write(journal.dumps(meta))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.getPath())

    journal.MetaStorer = SyncedMeta
    syncobj.createJournal = lambda path=None: (
        journal.MemoryJournal() if path is None else FlushingJournal(path)
    )


def urls(base: str, ports: list[int]) -> list[str]:
    addrs = [f"127.0.0.1:{p}" for p in ports]
    return [
        f"raft://{a}?peers={','.join(b for b in addrs if b != a)}&dir={base}/raft-{i}&timeout=5"
        for i, a in enumerate(addrs)
    ]


def main(mode: str, base: str, ports: list[int], acked_path: str, flush: bool = False) -> int:
    if flush:
        flush_before_acknowledging()
    handles = [kvstore.open(u) for u in urls(base, ports)]
    if mode == "read":
        deadline = time.monotonic() + 60
        while True:  # the members need a leader again before they answer
            try:
                got = handles[0].get_prefix(b"p/")
                break
            except kvstore.KVError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        print(json.dumps(sorted(kv.key.decode() for kv in got)), flush=True)
        return 0
    print("ready", flush=True)
    with open(acked_path, "a") as acked:
        seq = 0
        while True:
            seq += 1
            key = f"p/{seq:07d}"
            try:
                handles[seq % 3].put(key.encode(), key.encode())
            except kvstore.KVError:
                time.sleep(0.01)
                continue
            acked.write(key + "\n")
            acked.flush()


if __name__ == "__main__":
    sys.exit(
        main(
            sys.argv[1],
            sys.argv[2],
            [int(p) for p in sys.argv[3].split(",")],
            sys.argv[4],
            flush="--flush" in sys.argv[5:],
        )
    )
