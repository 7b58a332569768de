"""A bare engine node in its own process, for the guard tests: a crash kills only it.

    python -m tests.security.engine_child PUBLIC_ADDRESS BIND_ADDRESS DATA_DIR

The node's Raft address is the front's public address; it listens on BIND_ADDRESS
(an abstract socket, as go-cowsql puts its engine behind a TLS front).
"""

from __future__ import annotations

import signal
import sys

from cowsqlpy.node import BOOTSTRAP_ID, Node


def main() -> None:
    address, bind, data_dir = sys.argv[1:4]
    node = Node(BOOTSTRAP_ID, address, data_dir, bind_address=bind, network_latency=0.02)
    node.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    node.close()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
