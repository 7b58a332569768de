"""What one ORM commit and one ``session.get()`` send to the engine: ours and sqlalchemy-dqlite's
(diagnostic for issue 17).

    .venv/bin/python bench/probe_orm_requests.py --peer-python /tmp/venv313/bin/python [--ops 300]

One 3-node cluster (nodes in child processes). Each side runs --ops ORM ``add`` + ``commit``
and --ops ``session.get()`` by primary key (bench_sqlalchemy's model) and reports, per
operation, the requests by type and the writes (system calls) that carried them, with
the wall and CPU time of the client process. Both sides reach the leader through one
counting proxy that parses their request frames and, in the leader's answers to
LEADER, puts its own address in place of the leader's (the same length: two 5-digit
ports), so each side's leader discovery keeps talking through it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sqlalchemy as common  # the main benchmark's model and rows
import sqlalchemy as sa
from sqlalchemy.orm import Session

NAMES: dict[int, str] = {}  # request type -> name (cowsqlpy.protocol's, set in main)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cells(engine: sa.Engine, ops: int, base: int, mark: Any) -> dict[str, dict[str, float]]:
    """Per-op wall/CPU ms of both cells; `mark(cell)` starts counting a cell's requests."""
    common.Base.metadata.create_all(engine)
    out: dict[str, dict[str, float]] = {}
    with Session(engine) as s:
        s.add(common.Item(**common.row(base - 1)))
        s.commit()
        mark("orm_commit")
        t, c = time.perf_counter(), cpu()
        for i in range(ops):
            s.add(common.Item(**common.row(base + i)))
            s.commit()
        out["orm_commit"] = {
            "wall": (time.perf_counter() - t) / ops * 1e3,
            "cpu": (cpu() - c) / ops * 1e3,
        }
    with Session(engine) as s:
        s.get(common.Item, base - 1)
        mark("orm_get")
        t, c = time.perf_counter(), cpu()
        for i in range(ops):
            s.get(common.Item, base + i)
        out["orm_get"] = {
            "wall": (time.perf_counter() - t) / ops * 1e3,
            "cpu": (cpu() - c) / ops * 1e3,
        }
        mark(None)
    engine.dispose()
    return out


def peer_worker(args: argparse.Namespace) -> None:
    engine = sa.create_engine(f"dqlite://{args.address}/orm_requests_peer")
    print(json.dumps(cells(engine, args.ops, 10_000_000, marker(args.control))))


def marker(control: str) -> Any:
    """`mark(cell)`: tells the proxy which cell the next requests belong to."""
    import urllib.request

    def mark(cell: str | None) -> None:
        urllib.request.urlopen(f"http://{control}/{cell or '-'}").read()

    return mark


class CountingProxy:
    """TCP proxy to `target` that counts the client's request frames and the chunks
    (one per send of the client, on loopback) that carried them, per cell."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.cell: str | None = None
        self.requests: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.sends: collections.Counter[str] = collections.Counter()
        self.loop = asyncio.new_event_loop()
        self.address = ""
        self.control = ""
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            control = await asyncio.start_server(self._control, "127.0.0.1", 0)
            self.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
            self.control = f"127.0.0.1:{control.sockets[0].getsockname()[1]}"
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().split()
        while (await reader.readline()).strip():
            pass
        cell = line[1].strip("/")
        self.cell = None if cell == "-" else cell
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))

        async def upstream() -> None:
            buf = b""
            handshake = True
            while chunk := await reader.read(65536):
                up_writer.write(chunk)
                if self.cell:
                    self.sends[self.cell] += 1
                buf += chunk
                if handshake and len(buf) >= 8:
                    buf, handshake = buf[8:], False
                while not handshake and len(buf) >= 8:
                    size = 8 + 8 * int.from_bytes(buf[:4], "little")
                    if len(buf) < size:
                        break
                    if self.cell:
                        self.requests[self.cell][NAMES.get(buf[4], str(buf[4]))] += 1
                    buf = buf[size:]
            up_writer.close()

        async def downstream() -> None:
            while chunk := await up_reader.read(65536):
                writer.write(chunk.replace(self.target.encode(), self.address.encode()))
            writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)


def report(
    side: str, ops: int, timing: dict[str, dict[str, float]], requests: Any, sends: Any
) -> None:
    for cell in ("orm_commit", "orm_get"):
        kinds = ", ".join(f"{k} {v / ops:.2f}" for k, v in sorted(requests[cell].items()))
        total = sum(requests[cell].values()) / ops
        print(
            f"{side:<18} {cell:<11} wall {timing[cell]['wall']:6.3f} ms  cpu {timing[cell]['cpu']:6.3f} ms  "
            f"requests {total:5.2f} ({kinds})  sends {sends[cell] / ops:5.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--peer-python")
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--control", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_worker:
        peer_worker(args)
        return
    sys.path.insert(0, str(common.ROOT))
    from cowsqlpy.protocol import REQUEST_NAMES
    from cowsqlpy.sqlalchemy import create_engine

    NAMES.update(REQUEST_NAMES)
    from cowsqlpy.testing import Cluster

    with Cluster(3, processes=True) as cluster:
        proxy = CountingProxy(cluster.addresses[cluster.leader_index() or 0])
        if len(proxy.address) != len(proxy.target):
            sys.exit(
                f"the proxy's address {proxy.address} and the leader's {proxy.target} differ in length"
            )
        url = f"cowsql://{proxy.address}/orm_requests?read_consistency=serializable"
        timing = cells(create_engine(url), args.ops, 20_000_000, marker(proxy.control))
        report("cowsqlpy", args.ops, timing, proxy.requests, proxy.sends)
        proxy.requests.clear()
        proxy.sends.clear()
        if args.peer_python:
            cmd = [
                args.peer_python,
                __file__,
                "--peer-worker",
                "--address",
                proxy.address,
                "--control",
                proxy.control,
                "--ops",
                str(args.ops),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if proc.returncode:
                sys.exit("peer failed: " + proc.stderr[-2000:])
            peer = json.loads(proc.stdout.strip().splitlines()[-1])
            report("sqlalchemy-dqlite", args.ops, peer, proxy.requests, proxy.sends)


if __name__ == "__main__":
    main()
