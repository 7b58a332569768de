"""'@name' (abstract Unix socket) addresses connect under the client's loop (uvloop's
create_unix_connection refuses abstract names; `wire.connect_abstract` works around it)."""

from __future__ import annotations

import os
import socket

from cowsqlpy import codec
from cowsqlpy.runtime import run_sync
from cowsqlpy.wire import WireConnection


def test_abstract_address_connects_and_sends_the_handshake() -> None:
    name = f"cowsqlpy-test-abstract-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind("\0" + name)
        listener.listen()
        conn = run_sync(WireConnection.connect("@" + name, timeout=5))
        try:
            peer, _ = listener.accept()
            with peer:
                peer.settimeout(5)
                assert peer.recv(8) == codec.handshake()
        finally:
            conn.close()
