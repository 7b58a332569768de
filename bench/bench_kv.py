"""kvstore benchmark: put / get / txn throughput and watch latency for each
replicated backend, as ratios to a 3-member etcd cluster.

    .venv/bin/python bench/bench_kv.py [--duration 2.0] [--backends etcd,raft]

* etcd: 3 ``etcd`` processes on loopback (temp dirs, free ports), driven
  through our ``etcd://`` backend's async face (``kv.aio`` on its uvloop
  thread): N concurrent asyncio tasks for concurrency N.
* raft: 3 members; members 0 and 1 live in this process (a ``raft://`` handle
  is a member), member 2 is a child process. Load goes through member 0 from
  N threads (pysyncobj is thread-based).
* watch latency: a put through member 0, the event seen by a watcher on
  member 1 (etcd: a client of member 1).

Every load loop is bounded by ``--duration`` seconds and ``--max-ops``.
To add a backend, append a ``Backend`` to ``make_backends``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import kvstore
from kvstore import ModRevision, Put
from kvstore.testing import EtcdCluster, RaftCluster

CONCURRENCY = (1, 8, 32)
OPS = ("put", "get", "txn", "watch")
KEYS = 1000
VALUE = b"v" * 100


@dataclass
class Result:
    ops: int
    seconds: float
    lat: list[float]

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.lat:
            return float("nan")
        s = sorted(self.lat)
        return s[min(len(s) - 1, int(p * len(s)))] * 1000


@dataclass
class Backend:
    name: str
    setup: Callable[[], None]
    teardown: Callable[[], None]
    run: Callable[[str, int, float, int], Result]
    notes: str = ""
    state: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------- drivers
def thread_load(fn: Callable[[int, int], None], conc: int, duration: float, max_ops: int
                ) -> Result:
    lat: list[list[float]] = [[] for _ in range(conc)]
    stop = time.monotonic() + duration
    per = max(1, max_ops // conc)

    def worker(w: int) -> None:
        out = lat[w]
        for i in range(per):
            if time.monotonic() >= stop:
                break
            t = time.perf_counter()
            fn(w, i)
            out.append(time.perf_counter() - t)
    ts = [threading.Thread(target=worker, args=(w,)) for w in range(conc)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    el = time.perf_counter() - t0
    all_lat = [x for w in lat for x in w]
    return Result(len(all_lat), el, all_lat)


async def async_load(fn: Callable[[int, int], Any], conc: int, duration: float, max_ops: int
                     ) -> Result:
    lat: list[float] = []
    stop = time.monotonic() + duration
    per = max(1, max_ops // conc)

    async def worker(w: int) -> None:
        for i in range(per):
            if time.monotonic() >= stop:
                break
            t = time.perf_counter()
            await fn(w, i)
            lat.append(time.perf_counter() - t)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(conc)))
    return Result(len(lat), time.perf_counter() - t0, lat)


def watch_latency(writer: kvstore.KV, watcher: kvstore.KV, conc: int, duration: float,
                  max_ops: int, prefix: bytes) -> Result:
    """conc writers; each put waits until the watcher (another member) sees it."""
    pending: dict[tuple[bytes, bytes], threading.Event] = {}
    lock = threading.Lock()
    stream = watcher.watch_prefix(prefix)
    done = threading.Event()

    def dispatch() -> None:
        while not done.is_set():
            ev = stream.get(timeout=0.2)
            if ev is None:
                continue
            with lock:
                e = pending.pop((ev.key, ev.value or b""), None)
            if e is not None:
                e.set()
    d = threading.Thread(target=dispatch, daemon=True)
    d.start()

    def one(w: int, i: int) -> None:
        key, val = prefix + b"%d" % w, b"%d" % i
        e = threading.Event()
        with lock:
            pending[(key, val)] = e
        writer.put(key, val)
        if not e.wait(10):
            raise RuntimeError("watch event not seen within 10s")
    try:
        return thread_load(one, conc, duration, max_ops)
    finally:
        done.set()
        stream.cancel()
        d.join(5)


# ----------------------------------------------------------------- backends
def run_on_core(st: dict[str, Any], op: str, conc: int, duration: float, max_ops: int) -> Result:
    """One cell for a backend with an async core (etcd, cowsql): N asyncio tasks on its loop."""
    a = st["a"]
    if op == "watch":
        return watch_latency(a, st["b"], conc, duration, max_ops, b"bw/")
    kv = a.aio   # the public async face, on the loop its backend runs on

    async def put(w: int, i: int) -> None:
        await kv.put(b"bench/%d" % ((w * 7919 + i) % KEYS), VALUE)

    async def get(w: int, i: int) -> None:
        await kv.get(b"bench/%d" % ((w * 7919 + i) % KEYS))

    async def txn(w: int, i: int) -> None:
        k = b"bench/%d" % ((w * 7919 + i) % KEYS)
        await kv.txn([ModRevision(k) > 0], [Put(k, VALUE)], [])

    fn = {"put": put, "get": get, "txn": txn}[op]
    fut = asyncio.run_coroutine_threadsafe(async_load(fn, conc, duration, max_ops), kv.loop)
    return fut.result(duration + 120)


def etcd_backend(base: str) -> Backend:
    st: dict[str, Any] = {}

    def setup() -> None:
        c = EtcdCluster(os.path.join(base, "etcd"), 3).start()
        st["cluster"] = c
        st["a"] = kvstore.open(c.member_url(0))
        st["b"] = kvstore.open(c.member_url(1))
        for i in range(KEYS):
            st["a"].put(b"bench/%d" % i, VALUE)

    def teardown() -> None:
        for k in ("a", "b"):
            if k in st:
                st[k].close()
        if "cluster" in st:
            st["cluster"].stop()

    def run(op: str, conc: int, duration: float, max_ops: int) -> Result:
        return run_on_core(st, op, conc, duration, max_ops)

    return Backend("etcd", setup, teardown, run,
                   "3 etcd 3.4 members; our etcd:// backend's async gRPC core, N asyncio tasks")


def raft_backend(base: str) -> Backend:
    st: dict[str, Any] = {}

    def setup() -> None:
        c = RaftCluster(os.path.join(base, "raft"), 3)
        st["cluster"] = c
        child = subprocess.Popen([sys.executable, "-m", "kvstore.backends.raft", c.url(2)],
                                 cwd=os.path.join(os.path.dirname(__file__), ".."),
                                 stdout=subprocess.DEVNULL)
        st["child"] = child
        st["a"] = kvstore.open(c.url(0))
        st["b"] = kvstore.open(c.url(1))
        st["a"].backend.wait_ready(60)
        st["b"].backend.wait_ready(60)
        for i in range(KEYS):
            st["a"].put(b"bench/%d" % i, VALUE)

    def teardown() -> None:
        for k in ("a", "b"):
            if k in st:
                st[k].close_session()
        if "child" in st:
            st["child"].terminate()
            try:
                st["child"].wait(15)
            except subprocess.TimeoutExpired:
                st["child"].kill()
        for k in ("a", "b"):
            if k in st:
                st[k].close()

    def run(op: str, conc: int, duration: float, max_ops: int) -> Result:
        a = st["a"]
        if op == "watch":
            return watch_latency(a, st["b"], conc, duration, max_ops, b"bw/")

        def put(w: int, i: int) -> None:
            a.put(b"bench/%d" % ((w * 7919 + i) % KEYS), VALUE)

        def get(w: int, i: int) -> None:
            a.get(b"bench/%d" % ((w * 7919 + i) % KEYS))

        def txn(w: int, i: int) -> None:
            k = b"bench/%d" % ((w * 7919 + i) % KEYS)
            a.txn([ModRevision(k) > 0], [Put(k, VALUE)], [])
        return thread_load({"put": put, "get": get, "txn": txn}[op], conc, duration, max_ops)

    return Backend("raft", setup, teardown, run,
                   "3 pysyncobj members (2 in the bench process, 1 child); N threads via member 0")


def cowsql_backend(base: str, read: str = "linearizable") -> Backend:
    st: dict[str, Any] = {}

    def setup() -> None:
        from cowsqlpy.testing import Cluster
        c = Cluster(3, app=False, network_latency=0.02, base_dir=os.path.join(base, f"cowsql-{read}"))
        st["cluster"] = c
        url = f"cowsql://{','.join(c.addresses)}/bench?read={read}"
        st["a"] = kvstore.open(url)
        st["b"] = kvstore.open(url + "&private=1")  # its own core: polls like another process
        for i in range(KEYS):
            st["a"].put(b"bench/%d" % i, VALUE)

    def teardown() -> None:
        for k in ("b", "a"):
            if k in st:
                st[k].close()
        if "cluster" in st:
            st["cluster"].close()

    def run(op: str, conc: int, duration: float, max_ops: int) -> Result:
        return run_on_core(st, op, conc, duration, max_ops)

    name = "cowsql" if read == "linearizable" else f"cowsql-{read}"
    return Backend(name, setup, teardown, run,
                   f"3 in-process cowsql 1.15 nodes; the cowsql:// backend's async core "
                   f"(group commit), {read} reads, N asyncio tasks; watch: event seen by a second core")


def make_backends(base: str) -> list[Backend]:
    """The reference (etcd, linearizable gets) first; cowsql with linearizable reads (its
    default, like for like with etcd) and with serializable ones (no read barrier)."""
    return [etcd_backend(base), raft_backend(base), cowsql_backend(base),
            cowsql_backend(base, "serializable")]


# ----------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--max-ops", type=int, default=20000, help="op cap per measurement")
    ap.add_argument("--backends", default="", help="comma list (default: all)")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bench-kv-")
    backends = make_backends(base)
    if args.backends:
        keep = set(args.backends.split(","))
        backends = [b for b in backends if b.name in keep or b.name == "etcd"]
    results: dict[tuple[str, str, int], Result] = {}
    try:
        for b in backends:
            print(f"# {b.name}: {b.notes}", file=sys.stderr, flush=True)
            b.setup()
            try:
                for op in OPS:
                    for conc in CONCURRENCY:
                        r = b.run(op, conc, args.duration, args.max_ops)
                        results[(b.name, op, conc)] = r
                        print(f"  {b.name:5} {op:5} c={conc:<3} {r.rate:9.0f} ops/s  "
                              f"p50 {r.pct(.5):6.2f} ms  p99 {r.pct(.99):6.2f} ms",
                              file=sys.stderr, flush=True)
            finally:
                b.teardown()
    finally:
        shutil.rmtree(base, ignore_errors=True)  # the data dirs reach 1-2 GB per run

    names = [b.name for b in backends]
    print(f"\nMachine: {platform.platform()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; duration {args.duration}s per cell\n")
    head = "| op | conc | " + " | ".join(
        f"{n} ops/s | {n} p50 ms | {n} p99 ms" + ("" if n == "etcd" else f" | {n}/etcd")
        for n in names) + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for op in OPS:
        for conc in CONCURRENCY:
            cells = []
            base_r = results.get(("etcd", op, conc))
            for n in names:
                r = results[(n, op, conc)]
                cells.append(f"{r.rate:,.0f} | {r.pct(.5):.2f} | {r.pct(.99):.2f}")
                if n != "etcd" and base_r is not None:
                    ratio = (r.rate / base_r.rate) if base_r.rate else float("nan")
                    cells.append(f"{ratio:.2f}")
            print(f"| {op} | {conc} | " + " | ".join(cells) + " |")
    print("\n(watch rows: ops/s is completed put->event round trips; p50/p99 is the latency "
          "from the put call to the event on the other member)")


if __name__ == "__main__":
    main()
