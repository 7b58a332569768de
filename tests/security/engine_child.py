"""A bare engine node in its own process, for the guard tests: a crash kills only it.

    python -m tests.security.engine_child PUBLIC_ADDRESS BIND_ADDRESS DATA_DIR
        [--id N] [--front [--cert C --key K]]

The node's Raft address is the public address; the engine listens on BIND_ADDRESS. With
``--front`` the process also runs the front (a TLS one with --cert/--key, which is also
the node's Raft dial hook), as a node would in production; without it the test process
runs the front.
"""

from __future__ import annotations

import argparse
import signal

from cowsqlpy.front import Front
from cowsqlpy.node import BOOTSTRAP_ID, Node, engine_features
from cowsqlpy.tls import TLSConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("address")
    ap.add_argument("bind")
    ap.add_argument("dir")
    ap.add_argument("--id", type=int, default=BOOTSTRAP_ID)
    ap.add_argument("--front", action="store_true")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    args = ap.parse_args()
    tls = TLSConfig(args.cert, args.key) if args.cert else None
    front = Front(args.address, args.bind, engine_features(), tls=tls) if args.front else None
    if front is not None:
        front.start()
    node = Node(
        args.id,
        args.address,
        args.dir,
        bind_address=args.bind,
        network_latency=0.02,
        dial=front.dial if front is not None and tls is not None else None,
    )
    node.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    node.close()
    if front is not None:
        front.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
