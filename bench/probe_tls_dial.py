"""One dialled TLS Raft pipe alone: round trips of small messages through `Front.dial`'s
socket pair with the TLS in C (``native_tls=True``) and on the front's loop
(``native_tls=False``), in alternating rounds, to a Python TLS echo server in a child
process. Prints the wall time and this process's CPU (the front's side) per round trip.

    .venv/bin/python bench/probe_tls_dial.py [--rounds 4] [--trips 3000] [--size 200]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cowsqlpy.front import Front
from cowsqlpy.node import engine_features
from cowsqlpy.tls import TLSConfig, make_cert, make_server_context


def serve(cert: str, key: str) -> None:
    """Child: a TLS echo server on loopback, a thread per connection; prints its port."""
    ctx = make_server_context(TLSConfig(cert, key))
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)

    def echo(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = ctx.wrap_socket(conn, server_side=True)
        try:
            while data := tls.recv(1 << 16):
                tls.sendall(data)
        except OSError:
            pass

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def trips(front: Front, address: str, count: int, size: int) -> tuple[float, float]:
    """(wall us, CPU us) per round trip of `size` bytes over one dialled pipe."""
    engine_end = front.dial(address)
    msg = b"x" * size
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            engine_end.sendall(msg)
            got = 0
            while got < size:
                chunk = engine_end.recv(1 << 16)
                if not chunk:
                    raise RuntimeError("the pipe closed")
                got += len(chunk)
        return (
            (time.perf_counter() - wall) / count * 1e6,
            (time.process_time() - cpu) / count * 1e6,
        )
    finally:
        engine_end.close()


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--trips", type=int, default=3000)
    ap.add_argument("--size", type=int, default=200)
    args = ap.parse_args()
    cert = make_cert(tempfile.mkdtemp(prefix="probe-tls-dial-"))
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", str(cert.cert), str(cert.key)], stdout=subprocess.PIPE
    )
    assert server.stdout is not None
    address = f"127.0.0.1:{int(server.stdout.readline())}"
    fronts = {
        native: Front("127.0.0.1:0", "127.0.0.1:1", engine_features(), tls=cert, native_tls=native)
        for native in (True, False)
    }
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    try:
        for front in fronts.values():
            front.start()
        assert fronts[True]._tls_dialer is not None, "the binding has no TLS in C"
        for r in range(args.rounds):
            for native in (True, False) if r % 2 == 0 else (False, True):
                got = trips(fronts[native], address, args.trips, args.size)
                results[native].append(got)
                print(f"native_tls={native}: {got[0]:.0f} us/trip, CPU {got[1]:.0f} us/trip")
    finally:
        for front in fronts.values():
            front.stop()
        server.kill()
        server.wait()
    c, loop = results[True], results[False]
    print(
        f"median wall us/trip C {statistics.median(x[0] for x in c):.0f}, loop "
        f"{statistics.median(x[0] for x in loop):.0f}; CPU C "
        f"{statistics.median(x[1] for x in c):.0f}, loop {statistics.median(x[1] for x in loop):.0f}"
    )


if __name__ == "__main__":
    main()
