"""Start a local 3-node demo cluster (``make demo`` runs this).

    python -m demo.local [--nodes 3] [--api-port 8001] [--db-port 9001] [--dir ./demo-data]
                         [--host 127.0.0.1] [--fresh]

Node i (1-based) serves HTTP on ``api-port + i - 1`` and the engine on
``db-port + i - 1``, with its data in ``DIR/node<i>``. Waits until every node
answers ``/_health``, prints the commands to try, then runs until Ctrl-C (or
SIGTERM), which stops the nodes one by one with hand-over. Data survive a
restart (``--fresh`` wipes them first). Exit code 2 when a port is taken.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from cowsqlpy.tls import TLSConfig, make_cert

from .server import check_port_free
from .testing import DemoProcess


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo.local",
                                description="Run a local demo cluster until Ctrl-C")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--api-port", type=int, default=8001)
    p.add_argument("--db-port", type=int, default=9001)
    p.add_argument("--dir", default="demo-data", help="data directory (default ./demo-data)")
    p.add_argument("--fresh", action="store_true", help="delete the data directory first")
    p.add_argument("--timeout", type=float, default=60.0, help="start-up timeout (seconds)")
    p.add_argument("--tls", action="store_true",
                   help="mutual TLS everywhere and HTTPS for the API, with a cluster certificate "
                        "made (once) in <dir>/cert")
    args = p.parse_args(argv)

    base = Path(args.dir).resolve()
    if args.fresh:
        shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    first_db = f"{args.host}:{args.db_port}"
    tls = None
    if args.tls:
        tls = TLSConfig(base / "cert" / "cluster.crt", base / "cert" / "cluster.key")
        if not os.path.exists(tls.cert):
            tls = make_cert(base / "cert")
    procs = [DemoProcess(i + 1, base, f"{args.host}:{args.api_port + i}", f"{args.host}:{args.db_port + i}",
                         None if i == 0 else first_db, own_session=True, tls=tls)
             for i in range(args.nodes)]
    for pr in procs:
        for addr, what in ((pr.api, "HTTP API port"), (pr.db, "engine port")):
            try:
                check_port_free(addr, what)
            except OSError as exc:
                print(f"demo.local: {exc}.\n  Stop whatever listens there (`ss -ltnp | grep "
                      f"{addr.rpartition(':')[2]}`) or choose other ports: --api-port N "
                      f"--db-port M.", file=sys.stderr)
                return 2

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, f: stop.set())

    def shutdown() -> None:
        print("\nstopping the nodes (each hands over before it exits)...", flush=True)
        for pr in reversed(procs):
            if pr.running:
                assert pr.proc is not None
                pr.proc.send_signal(signal.SIGTERM)
                try:
                    code = pr.proc.wait(60)
                    print(f"  node {pr.index} ({pr.api}) stopped, exit code {code}", flush=True)
                except subprocess.TimeoutExpired:
                    pr.proc.kill()
                    print(f"  node {pr.index} did not stop in 60 s: killed", flush=True)

    print(f"starting {args.nodes} demo nodes (data and logs in {base})...", flush=True)
    try:
        procs[0].start()
        deadline = time.monotonic() + args.timeout
        started = 1
        while not stop.is_set():
            for pr in procs:
                if pr.proc is not None and not pr.running:
                    print(f"demo.local: node {pr.index} exited with code {pr.proc.returncode}; "
                          f"its log ({pr.log}):\n{_tail(pr.log)}", file=sys.stderr)
                    shutdown()
                    return 1
            if started < len(procs) and procs[0].served():
                for pr in procs[1:]:
                    pr.start()
                started = len(procs)
            if started == len(procs) and all(pr.healthy() for pr in procs):
                break
            if time.monotonic() > deadline:
                print(f"demo.local: the cluster did not come up within {args.timeout:g} s; "
                      f"logs in {base}", file=sys.stderr)
                shutdown()
                return 1
            stop.wait(0.2)
        if stop.is_set():
            shutdown()
            return 0
        a = [pr.api for pr in procs]
        dbs = ",".join(pr.db for pr in procs)
        web = "http" if tls is None else "https"
        curl = "curl" if tls is None else \
            f"curl --cacert {tls.cert} --cert {tls.cert} --key {tls.key}"
        py = sys.executable  # the interpreter with fusefs installed, as the user can type it
        if py.startswith(os.getcwd() + os.sep):
            py = os.path.relpath(py)
        fs_tls = "" if tls is None else f" --cert {tls.cert} --key {tls.key}"
        print(f"""
The cluster is up: {len(procs)} nodes, each serves the whole API.

  status page      {web}://{a[0]}/   (any node; refreshes itself)
  write on node 1  {curl} -X PUT -d my-value {web}://{a[0]}/my-key
  read on node 2   {curl} {web}://{a[1 % len(a)]}/my-key
  list a prefix    {curl} '{web}://{a[0]}/?prefix=my-'
  compare-and-set  {curl} -i -X PUT -d new -H 'If-Match: "<ETag of my-key>"' {web}://{a[0]}/my-key
                   {curl} -i -X PUT -d newer '{web}://{a[0]}/my-key?prev=new'
  watch a key      {curl} '{web}://{a[1 % len(a)]}/my-key?watch=1'      (waits for the next change)
  temporary key    {curl} -X PUT -d here '{web}://{a[0]}/session?ttl=10'
  cluster / health {curl} {web}://{a[0]}/_cluster ; {curl} {web}://{a[0]}/_health
  mount it
  (fusefs)         {py} -m fusefs mkfs --cluster {dbs}{fs_tls} && mkdir -p /tmp/cowsqlfs &&
                   {py} -m fusefs mount --cluster {dbs}{fs_tls} /tmp/cowsqlfs     (umount: fusermount3 -u /tmp/cowsqlfs)

Kill a node (here node 1, pid {procs[0].proc.pid if procs[0].proc else '?'}) and the others keep serving:
  kill -9 {procs[0].proc.pid if procs[0].proc else '<pid>'}
  {curl} {web}://{a[1 % len(a)]}/my-key ; {curl} -X PUT -d still-here {web}://{a[2 % len(a)]}/other-key

Press Ctrl-C to stop all {len(procs)} nodes (each hands its role and leadership over).
Logs: {base}/node<N>.log
""", flush=True)
        while not stop.wait(1.0):
            for pr in procs:
                if pr.proc is not None and pr.proc.poll() is not None and not getattr(
                        pr, "reported", False):
                    pr.reported = True  # type: ignore[attr-defined]
                    print(f"node {pr.index} ({pr.api}) exited with code {pr.proc.returncode}; "
                          f"the others keep serving", flush=True)
        shutdown()
        return 0
    except BaseException:
        shutdown()
        raise


if __name__ == "__main__":
    sys.exit(main())
