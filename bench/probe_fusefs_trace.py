"""Where one create's time goes: the FUSE callbacks of the mount daemon and the engine
requests each sends, with timestamps, beside the application's open(O_CREAT) and close.

    .venv/bin/python bench/probe_fusefs_trace.py [--files 200] [--show 3] [--unlink]
        [--write MIB] [--keep]

Runs a 3-node cluster (processes, loopback), a mount daemon with its callbacks and the
driver's wire traced (`COWSQLPY_TRACE=client`), creates N files from one thread
(os.open(O_CREAT | O_WRONLY) + os.close, as bench_fusefs), and prints, for the last
`--show` creates, every event in order with its time since the create's open began (ms,
CLOCK_MONOTONIC, shared by the processes), then the median time of each FUSE callback and
of the gaps between them over all N: what the kernel and libfuse cost (the time between a
callback's return and the next one's start) against the daemon's own time. With
`--write MIB`, the same for a file written in 1 MiB writes, fsynced and read back cold
(each MiB one operation); `--keep` leaves the trace file for a closer look.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

CALLBACKS = (
    "getattr", "create", "open", "flush", "release", "unlink", "mknod", "mkdir", "utimens",
    "write", "read", "fsync",
)  # fmt: skip


class _Mono(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.mono = time.monotonic()
        return True


def daemon(argv: list[str], trace: str) -> int:
    """The mount daemon (fusefs.cli) with every callback in CALLBACKS timed into `trace`."""
    os.environ["COWSQLPY_TRACE"] = "client"
    import functools

    from fusefs import binding, cli

    handler = logging.FileHandler(trace)
    handler.addFilter(_Mono())
    handler.setFormatter(logging.Formatter("%(mono).6f %(thread)d %(name)s %(message)s"))
    for name in ("cowsqlpy.wire", "probe"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        logger.propagate = False
    plog = logging.getLogger("probe")

    def timed(name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(self: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
            plog.debug("> %s %s", name, path)
            try:
                return fn(self, path, *args, **kwargs)
            except OSError as exc:
                plog.debug("< %s errno %s", name, exc.errno)
                raise
            finally:
                plog.debug("< %s", name)

        return wrapper

    for name in CALLBACKS:
        setattr(binding.Operations, name, timed(name, getattr(binding.Operations, name)))
    return cli.main(argv)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--show", type=int, default=3)
    ap.add_argument("--unlink", action="store_true", help="trace the unlinks too")
    ap.add_argument(
        "--write",
        type=int,
        default=0,
        help="instead: MiB written in 1 MiB writes, fsynced, then read back cold (steps per MiB)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the trace (and work directory)")
    ap.add_argument("--daemon", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    ap.add_argument("--trace", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.daemon is not None:
        sys.exit(daemon(args.daemon, args.trace))

    import cowsqlpy
    from cowsqlpy.testing import Cluster, wait_for
    from fusefs import mkfs
    from fusefs.testing import mount_command

    work = Path(tempfile.mkdtemp(prefix="probe-trace-"))
    mnt = work / "mnt"
    mnt.mkdir()
    trace = work / "trace.log"
    cluster = Cluster(3, processes=True, base_dir=work / "cluster", network_latency=0.1)
    proc = None
    marks: list[tuple[float, str]] = []
    try:
        conn = cowsqlpy.connect(cluster.addresses, database="fs")
        mkfs(conn, capacity=1 << 30)
        conn.close()
        cmd = mount_command(cluster.addresses, mnt)
        cmd[1:3] = [__file__, "--trace", str(trace), "--daemon"]  # sys.executable stays
        with open(work / "mount.log", "wb") as log:
            proc = subprocess.Popen(
                cmd,
                env=dict(os.environ, PYTHONPATH=ROOT),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: os.path.ismount(mnt), 60, "mount")
        d = mnt / "d"
        d.mkdir()
        for i in range(20):  # warm up: connections, prepared statements, inode range
            os.close(os.open(d / f"w{i}", os.O_CREAT | os.O_WRONLY, 0o644))
        with open(trace, "a") as f:
            f.write(f"{time.monotonic():.6f} 0 app START\n")
        if args.write:
            sequential(d / "big", args.write, marks)
            args.files = 0
        for i in range(args.files):
            p = d / f"f{i:06d}"
            marks.append((time.monotonic(), f"open {p.name}"))
            fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
            marks.append((time.monotonic(), "opened"))
            os.close(fd)
            marks.append((time.monotonic(), "closed"))
        if args.unlink:
            for i in range(args.files):
                p = d / f"f{i:06d}"
                marks.append((time.monotonic(), f"unlink {p.name}"))
                os.unlink(p)
                marks.append((time.monotonic(), "unlinked"))
        creates = sum(1 for _, m in marks if m.startswith("open "))
        if creates:
            first = next(t for t, m in marks if m.startswith("open "))
            last = next(t for t, m in reversed(marks) if m == "closed")
            rate = f"{creates} creates, {creates / (last - first):.1f}/s"
        else:
            rate = ", ".join(m for _, m in marks if "MiB/s" in m)
        print(f"load {os.getloadavg()[0]:.1f}; {rate}")
    finally:
        if proc is not None:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            proc.wait(30)
        cluster.close()
    events = report(trace, marks, args.show)
    print(f"(trace: {trace}, {events} events)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def sequential(path: Path, mib: int, marks: list[tuple[float, str]]) -> None:
    """Write `mib` MiB to `path` in 1 MiB writes and fsync, then read it back after
    dropping its pages: a mark at each MiB (the steps of one MiB are an "operation")."""
    block = os.urandom(1 << 20)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    start = time.monotonic()
    for i in range(mib):
        marks.append((time.monotonic(), f"write {i}"))
        os.write(fd, block)
    marks.append((time.monotonic(), "fsync"))
    os.fsync(fd)
    os.close(fd)
    took = time.monotonic() - start
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    start = time.monotonic()
    for i in range(mib):
        marks.append((time.monotonic(), f"read {i}"))
        os.read(fd, 1 << 20)
    marks.append((time.monotonic(), "done"))
    os.close(fd)
    marks.append(
        (0.0, f"write {mib / took:.1f} MiB/s, read {mib / (time.monotonic() - start):.1f} MiB/s")
    )


def report(trace: Path, marks: list[tuple[float, str]], show: int) -> int:
    """Print the last `show` operations' events and the median step times; returns the count."""
    events: list[tuple[float, str]] = []
    started = False
    for line in trace.read_text().splitlines():
        t, thread, name, msg = line.split(" ", 3)
        if msg == "START":
            started = True
            continue
        if started:
            who = "fuse" if name == "probe" else "wire"
            events.append((float(t), f"{who} {int(thread) % 100000:5d} {msg[:110]}"))
    events += [(t, f"app       {m}") for t, m in marks if t]
    events.sort()
    starts = [
        i
        for i, (_, m) in enumerate(events)
        if m.startswith(
            ("app       open ", "app       unlink ", "app       write ", "app       read ")
        )
    ]
    for s, e in list(zip(starts, [*starts[1:], len(events)], strict=True))[-show:]:
        t0 = events[s][0]
        print("----")
        for t, m in events[s:e]:
            print(f"{1000 * (t - t0):8.3f}  {m}")
    # median of each step: between consecutive events of one operation, keyed by their kinds
    steps: dict[str, list[float]] = collections.defaultdict(list)
    for s, e in zip(starts, [*starts[1:], len(events)], strict=False):
        op = events[s:e]
        for (ta, ma), (tb, mb) in zip(op, op[1:], strict=False):
            steps[f"{_kind(ma)} .. {_kind(mb)}"].append(1000 * (tb - ta))
        steps["whole operation"].append(1000 * (op[-1][0] - op[0][0]))
    print("---- medians over all operations (ms), count")
    for key, values in sorted(steps.items(), key=lambda kv: -len(kv[1])):
        if len(values) >= len(starts) // 2:
            print(f"{statistics.median(values):8.3f}  {len(values):5d}  {key}")
    return len(events)


def _kind(message: str) -> str:
    who, rest = message.split(None, 1)
    if who == "app":
        return "app " + rest.split()[0]
    rest = rest.split(None, 1)[1]  # the thread
    if who == "fuse":
        return "fuse " + " ".join(rest.split()[:2])
    parts = rest.split()  # address, arrow, request or reply name
    return f"wire {parts[1]} {parts[2]}"


if __name__ == "__main__":
    main()
