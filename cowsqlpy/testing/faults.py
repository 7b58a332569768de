"""FaultProxy: a TCP proxy that drops, delays, refuses or cuts connections.

A node *process* cannot call a proxy object of the harness as its dial hook, so a
proxy can also be a *relay*: ``FaultProxy(relay=True)`` listens, and `dial_via`
(``python -m cowsqlpy node --dial-via HOST:PORT``) connects to it and names the
target in a one-line header; the relay answers one byte once it reached the
target. Faults then apply per target exactly as for the in-process dial hook."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["FaultProxy", "dial_via"]

# The relay handshake: "host:port\n" from the dialer, RELAY_ACK back once connected.
RELAY_ACK = b"+"
_MAX_HEADER = 300


# -- FaultProxy ----------------------------------------------------------------------------


@dataclass
class _Faults:
    drop: bool = False  # swallow bytes, keep the connection open (a silent partition)
    delay: float = 0.0  # seconds added before forwarding each chunk
    refuse: bool = False  # close new connections at once


class _Link:
    def __init__(self, proxy: FaultProxy, a: socket.socket, b: socket.socket, target: str) -> None:
        self.proxy, self.a, self.b, self.target = proxy, a, b, target
        self.closed = False
        self.tainted = False  # bytes were swallowed: the stream has a hole
        self._lock = threading.Lock()
        for src, dst in ((a, b), (b, a)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True, name=f"faultproxy-{target}").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                faults = self.proxy._faults_for(self.target)
                if faults.drop:
                    self.tainted = True
                    self.proxy._count_dropped(len(data))
                    continue
                if faults.delay:
                    time.sleep(faults.delay)
                dst.sendall(data)
        except OSError:
            pass
        self.close()

    def close(self, *, reset: bool = False) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.a, self.b):
            how = socket.SHUT_RDWR
            if reset and s.family != socket.AF_UNIX:
                # RST instead of FIN: no lingering on close; SHUT_RD wakes our own pump
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                how = socket.SHUT_RD
            with contextlib.suppress(OSError):
                s.shutdown(how)
            with contextlib.suppress(OSError):
                s.close()
        self.proxy._forget(self)


class FaultProxy:
    """A TCP proxy that injects network faults.

    Two uses, one fault model:

    * ``FaultProxy(target)`` listens on an OS-chosen port of 127.0.0.1 and
      forwards every connection to `target`; give ``proxy.address`` to a client.
    * ``FaultProxy()`` is a dial function: pass it as ``Node(..., dial=proxy)``
      or ``App(..., dial=proxy)`` and the engine's Raft connections run through it.
    * ``FaultProxy(relay=True)`` listens like the first and forwards each
      connection to the target its `dial_via` client names: the dial hook of a
      node process (``--dial-via proxy.address``).

    Faults apply to all links, or with ``address=`` to links towards one target:
    `drop()` swallows bytes in both directions while connections stay open (a
    silent partition), `delay()` adds latency per chunk, `refuse()` rejects new
    connections, `cut()` closes the live ones (peers see EOF), `reset()` aborts
    them (peers see a TCP reset); `heal()` clears everything and closes the
    links that lost bytes while dropping (a stream with a hole in it would feed
    the peer garbage: a real network loses packets, not bytes).
    """

    def __init__(
        self, target: str | None = None, *, relay: bool = False, host: str = "127.0.0.1", connect_timeout: float = 5.0
    ) -> None:
        if relay and target is not None:
            raise ValueError("a relay forwards to the target each dialer names: give no target")
        self.target = target
        self.relay = relay
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._default = _Faults()
        self._per_target: dict[str, _Faults] = {}
        self._links: set[_Link] = set()
        self._closed = False
        self.accepted = 0
        self.dropped_bytes = 0  # swallowed by drop(), all links, ever
        self.address: str | None = None
        self._listener: socket.socket | None = None
        if target is not None or relay:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, 0))
            listener.listen(128)
            self._listener = listener
            self.address = f"{host}:{listener.getsockname()[1]}"
            threading.Thread(target=self._accept_loop, daemon=True, name=f"faultproxy-accept-{target or 'relay'}").start()

    # -- faults --

    def _faults_for(self, target: str) -> _Faults:
        with self._lock:
            return self._per_target.get(target, self._default)

    def _update(self, address: str | None, **change: Any) -> None:
        with self._lock:
            if address is None:
                for f in [self._default, *self._per_target.values()]:
                    for k, v in change.items():
                        setattr(f, k, v)
            else:
                f = self._per_target.setdefault(address, _Faults(**vars(self._default)))
                for k, v in change.items():
                    setattr(f, k, v)

    def drop(self, on: bool = True, *, address: str | None = None) -> None:
        self._update(address, drop=on)

    def delay(self, seconds: float, *, address: str | None = None) -> None:
        self._update(address, delay=float(seconds))

    def refuse(self, on: bool = True, *, address: str | None = None) -> None:
        self._update(address, refuse=on)

    def cut(self, *, address: str | None = None) -> int:
        """Close live connections (towards `address`, or all); returns how many."""
        with self._lock:
            links = [link for link in self._links if address is None or link.target == address]
        for link in links:
            link.close()
        return len(links)

    def reset(self, *, address: str | None = None) -> int:
        """Abort live connections (towards `address`, or all) with a TCP reset; returns how many."""
        with self._lock:
            links = [link for link in self._links if address is None or link.target == address]
        for link in links:
            link.close(reset=True)
        return len(links)

    def heal(self) -> None:
        with self._lock:
            self._default = _Faults()
            self._per_target.clear()
            holed = [link for link in self._links if link.tainted]
        for link in holed:
            link.close(reset=True)

    def _count_dropped(self, n: int) -> None:
        with self._lock:
            self.dropped_bytes += n

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._links)

    # -- plumbing --

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _open_upstream(self, target: str) -> socket.socket:
        if self._closed:
            raise ConnectionRefusedError(f"fault proxy closed (towards {target})")
        if self._faults_for(target).refuse:
            raise ConnectionRefusedError(f"fault proxy refuses connections to {target}")
        host, port = target.rsplit(":", 1)
        return socket.create_connection((host.strip("[]"), int(port)), timeout=self.connect_timeout)

    def _link(self, near: socket.socket, upstream: socket.socket, target: str) -> None:
        upstream.settimeout(None)
        near.settimeout(None)
        link = _Link(self, near, upstream, target)
        with self._lock:
            self._links.add(link)

    def __call__(self, address: str) -> socket.socket:
        """Dial `address` through the proxy (a Node `dial` function)."""
        upstream = self._open_upstream(address)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._link(theirs, upstream, address)
        return mine

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.relay:  # the header may be slow: never hold up the next dialer
                threading.Thread(target=self._relay_one, args=(client,), daemon=True, name="faultproxy-relay").start()
                continue
            assert self.target is not None
            try:
                upstream = self._open_upstream(self.target)
            except OSError:
                client.close()
                continue
            self._link(client, upstream, self.target)

    def _relay_one(self, client: socket.socket) -> None:
        try:
            client.settimeout(self.connect_timeout)
            target = _read_header(client)
            upstream = self._open_upstream(target)
            client.sendall(RELAY_ACK)
        except (OSError, ValueError):  # a refused target or a bad header: the dialer sees EOF
            client.close()
            return
        self._link(client, upstream, target)

    def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        self.cut()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "relay" if self.relay else self.address or "dial"
        return f"<FaultProxy {kind} {self.address or ''} -> {self.target or '*'} links={self.connections}>"


def _read_header(sock: socket.socket) -> str:
    """The relay header: ``host:port`` up to a newline (read a byte at a time, so no
    byte of the stream after it is taken)."""
    raw = bytearray()
    while len(raw) < _MAX_HEADER:
        b = sock.recv(1)
        if not b:
            raise ValueError("relay header cut short")
        if b == b"\n":
            target = raw.decode("ascii", errors="replace")
            host, sep, port = target.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"relay header {target!r} is not host:port")
            return target
        raw += b
    raise ValueError("relay header too long")


def dial_via(relay: str, *, timeout: float = 5.0) -> Callable[[str], socket.socket]:
    """A dial hook (``Node(dial=...)``) that reaches every peer through the relay
    `FaultProxy(relay=True)` listening at `relay` (``host:port``).

    The returned function raises `ConnectionRefusedError` when the relay refuses or
    cannot reach the target, `OSError` when the relay itself is unreachable.
    """
    host, sep, port = relay.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"relay address {relay!r} is not host:port")

    def dial(address: str) -> socket.socket:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        try:
            sock.sendall(address.encode("ascii") + b"\n")
            if sock.recv(1) != RELAY_ACK:
                raise ConnectionRefusedError(f"relay {relay} refused or could not reach {address}")
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return sock

    return dial
