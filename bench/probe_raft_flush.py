"""What flushing pysyncobj's journal before acknowledging would cost (kvstore raft://).

pysyncobj's FileJournal writes every Raft entry into an mmap of the journal file and
never msyncs it while running (only on close); its term/vote file is replaced without
fsync. So an acknowledged raft:// write lives in the page cache only, and a power loss
loses it (tests/faults/test_crash_durability.py shows every acknowledged PUT lost and
journals the members cannot reopen). The fix is an msync of the journal after each
append and an fsync of the meta file; this probe times FileJournal.add with and
without that flush on the given directory, against a plain fdatasync'd append as the
anchor (what a write-ahead log pays anyway).

    .venv/bin/python bench/probe_raft_flush.py [--dir /var/tmp] [--entries 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from pysyncobj.journal import FileJournal


def journal_rate(directory: str, entries: int, flush: bool) -> float:
    with tempfile.TemporaryDirectory(dir=directory) as d:
        journal = FileJournal(os.path.join(d, "raft.journal"))
        payload = b"x" * 100
        t0 = time.perf_counter()
        for i in range(entries):
            journal.add(payload, i + 1, 1)
            if flush:
                journal.flush()
        elapsed = time.perf_counter() - t0
        journal._destroy()
    return entries / elapsed


def fdatasync_rate(directory: str, entries: int) -> float:
    with tempfile.TemporaryDirectory(dir=directory) as d:
        fd = os.open(os.path.join(d, "wal"), os.O_CREAT | os.O_WRONLY | os.O_APPEND)
        t0 = time.perf_counter()
        for _ in range(entries):
            os.write(fd, b"x" * 124)
            os.fdatasync(fd)
        elapsed = time.perf_counter() - t0
        os.close(fd)
    return entries / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = {
        "FileJournal.add (pysyncobj today)": [journal_rate(args.dir, args.entries, False) for _ in range(args.repeat)],
        "FileJournal.add + flush (msync)": [journal_rate(args.dir, args.entries, True) for _ in range(args.repeat)],
        "write + fdatasync (anchor)": [fdatasync_rate(args.dir, args.entries) for _ in range(args.repeat)],
    }
    print(f"\n{args.entries} entries of 100 bytes in {args.dir}, median of {args.repeat} ({os.cpu_count()} CPUs)\n")
    print("| journal append | entries/s | us/entry |")
    print("|---|---|---|")
    for name, rates in rows.items():
        rate = statistics.median(rates)
        print(f"| {name} | {rate:,.0f} | {1e6 / rate:.1f} |")


if __name__ == "__main__":
    main()
