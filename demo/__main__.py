"""``python -m demo --api 127.0.0.1:8001 --db 127.0.0.1:9001 [--join 127.0.0.1:9001] [--dir DIR]``

Runs one node of the HTTP key/value demo cluster until SIGTERM/SIGINT, then
hands its role and leadership over and exits 0 (a second signal skips the rest
of the hand-over and exits 1). Exit code 2: bad arguments, a port in use, or a
data dir that belongs to another node or cluster.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence

from cowsqlpy.runtime import MAX_BUSY_POLL

from . import DEFAULT_BUSY_POLL, DEFAULT_COMPACT_RETENTION

#: First line on stdout once the node serves HTTP (demo.local and the tests wait for it).
READY_PREFIX = "demo: serving"


def default_dir(db: str) -> str:
    return os.path.join(tempfile.gettempdir(), "cowsqlpy-demo", db.replace(":", "_"))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo",
                                description="One node of the cowsqlpy HTTP key/value demo cluster")
    p.add_argument("--api", required=True, metavar="HOST:PORT", help="HTTP API address")
    p.add_argument("--db", required=True, metavar="HOST:PORT",
                   help="engine (Raft and client protocol) address")
    p.add_argument("--join", default="", metavar="ADDR[,ADDR...]",
                   help="--db addresses of nodes of an existing cluster (first start only)")
    p.add_argument("--dir", default=None,
                   help="data directory (default: $TMPDIR/cowsqlpy-demo/<db address>)")
    p.add_argument("--network-latency", type=float, default=0.025, metavar="SECONDS",
                   help="one-way latency the engine derives its Raft timeouts from "
                        "(heartbeat 1.5x, election 15x; default 0.025: ~0.4 s elections)")
    p.add_argument("--roles-adjustment-frequency", type=float, default=5.0, metavar="SECONDS")
    p.add_argument("--request-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long a request waits for a leader before answering 503")
    p.add_argument("--handover-timeout", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--compact-retention", type=int, default=DEFAULT_COMPACT_RETENTION,
                   metavar="REVISIONS",
                   help="history kept for reads at past revisions and watches from a "
                        "revision (older revisions are compacted; 0: keep everything, "
                        "which grows the in-memory database for ever)")
    p.add_argument("--busy-poll", type=float, default=DEFAULT_BUSY_POLL * 1e6, metavar="MICROSECONDS",
                   help="keep polling the network this long after each request and engine "
                        "reply instead of sleeping (a sleeping thread is slow to wake on a "
                        "virtual machine; costs CPU only under load; 0: off; at most "
                        f"{MAX_BUSY_POLL * 1e6:.0f})")
    p.add_argument("--read", choices=("linearizable", "serializable"), default="linearizable",
                   help="GET and range consistency: linearizable (default, as etcd: each read "
                        "after a shared read barrier) or serializable (no barrier: faster, but "
                        "a deposed leader can serve a stale read)")
    p.add_argument("--cert", metavar="PEM", help="cluster certificate: mutual TLS between "
                   "nodes and for engine clients (go-cowsql's scheme, as cowsql-demo --cert), "
                   "and HTTPS for the API, which then asks clients for a certificate the "
                   "cluster trusts (make one: python -m cowsqlpy tls make-cert --out DIR)")
    p.add_argument("--key", metavar="PEM", help="private key of --cert")
    p.add_argument("--ca", metavar="PEM", help="CA bundle to trust (default: --cert itself)")
    p.add_argument("--api-tls", choices=("mutual", "server"), default="mutual",
                   help="with --cert: HTTPS clients must show a certificate the cluster "
                        "trusts (mutual, default) or only check ours (server: anyone who "
                        "reaches the port may use the API, as without TLS)")
    p.add_argument("--log-level", default=os.environ.get("COWSQLPY_LOG_LEVEL", "WARNING"))
    args = p.parse_args(argv)
    if args.compact_retention < 0:
        p.error("--compact-retention must be >= 0 revisions")
    if not 0 <= args.busy_poll <= MAX_BUSY_POLL * 1e6:
        p.error(f"--busy-poll must be 0..{MAX_BUSY_POLL * 1e6:.0f} microseconds")
    if (args.cert is None) != (args.key is None) or (args.ca and not args.cert):
        p.error("TLS needs both --cert and --key (--ca only with them)")

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d %(process)d %(name)s %(levelname)s "
                               "%(message)s", datefmt="%H:%M:%S")
    log = logging.getLogger("demo")

    from cowsqlpy.errors import Error, NodeIdentityError
    from cowsqlpy.runtime import StopSignals
    from cowsqlpy.tls import TLSConfig

    stop = StopSignals()

    from .server import DemoNode

    data_dir = args.dir or default_dir(args.db)
    node = DemoNode(args.api, args.db, data_dir,
                    join=[a.strip() for a in args.join.split(",") if a.strip()],
                    network_latency=args.network_latency,
                    roles_adjustment_frequency=args.roles_adjustment_frequency,
                    request_timeout=args.request_timeout,
                    compact_retention=args.compact_retention,
                    busy_poll=args.busy_poll / 1e6,
                    linearizable_reads=args.read == "linearizable",
                    tls=None if args.cert is None else TLSConfig(args.cert, args.key, args.ca),
                    api_client_certs=args.api_tls == "mutual")
    try:
        node.start_app()
    except (Error, ValueError, OSError) as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        if stop.wait_ready(node.app):
            node.start_http()
            scheme = "http" if args.cert is None else "https"
            print(f"{READY_PREFIX} {scheme}://{args.api} (node {node.app.id:#x}, db {args.db}, "
                  f"dir {os.path.abspath(data_dir)})", flush=True)
            stop.stopped.wait()
    except NodeIdentityError as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        node.app.close(handover=False)
        return 2
    except Exception as exc:  # report, then stop cleanly below
        print(f"demo: start-up failed: {exc!r}", file=sys.stderr, flush=True)
        node.app.close(handover=False)
        return 1
    log.info("signal: stopping HTTP, handing over")
    return stop.close(lambda: node.stop(handover_timeout=args.handover_timeout), node.app.node.close, log)


if __name__ == "__main__":
    sys.exit(main())
