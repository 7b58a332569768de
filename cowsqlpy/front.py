"""The front: the node's public listener, in front of an engine on an internal address.

As in go-cowsql, the engine speaks plain TCP (or an abstract Unix socket) on an internal
address; the front accepts on the public address, optionally with mutual TLS
(`cowsqlpy.tls`), and relays to the engine:

* a client connection: the handshake word and then every request frame are parsed and
  checked by a `guard.ConnectionGuard` before the engine sees them; a refused frame gets a
  FAILURE reply (in its place among the replies) or a closed connection, and a log line.
  Replies are relayed as they come; the front follows their frame boundaries (multi-part
  ROWS included) to keep requests and replies matched and to learn prepared statement ids.
* a Raft peer: it sends the handshake and then CONNECT (type 11) as its first request; the
  front passes it and becomes a byte pipe. With TLS every peer has shown a certificate
  the CA signed (and, with ``rights=``, one with `Access.PEER`); without TLS there is
  nothing to authenticate and CONNECT passes from any admitted address (loopback only,
  unless ``allow_remote``), and the pipe leaves the event loop: both sockets go to a C
  loop on a thread of their own (`cowsqlpy.node.relay_sockets`, no GIL held), so a Raft
  message costs no wake-up of the front's loop.

With TLS, ``rights=`` (`cowsqlpy.rights.Rights`) gives each client certificate a level:
read-only, read-write, admin or peer; the guard refuses what the level does not cover
with FAILURE 279 (`cowsqlpy.errors.AccessDeniedError` in the client).

Limits (`Limits`): connections in total and per peer address, handshake and idle
timeouts, request frame size. Without TLS, non-loopback peers are refused unless
``allow_remote=True``, and a front on a non-loopback address warns at start.

Run it on an asyncio loop (``await front.start_async()`` / ``await front.stop_async()``)
or on its own thread (``front.start()`` / ``front.stop()``), e.g. beside a `Node`::

    front = Front("10.0.0.5:9001", "@cowsql-1", engine_features(), tls=TLSConfig(...))
    front.start()
    node = Node(id, "10.0.0.5:9001", data_dir, bind_address="@cowsql-1", dial=front.dial)
    node.start()

An abstract socket ('@name') is the internal address to use: cowsql serves it only to
connections from its own process, i.e. the front.

`Front.dial` is the node's Raft dial hook when TLS is on: it opens a TLS connection to a
peer's public address and hands the engine one end of a local socket pair. The TLS of
that pipe runs in C (`cowsqlpy.node.NativeTLSClient`, OpenSSL with the settings of
`cowsqlpy.tls.make_client_context`): the handshake on the engine's dial thread, then a
thread of its own per pipe moves engine bytes <-> TLS records, the GIL released
(``native_tls=False``, or a binding built without OpenSSL, keeps it on the loop's SSL).
The accepting side of a TLS pipe stays on the loop (uvloop's SSL).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ipaddress
import logging
import os
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from . import protocol as P
from ._loop import BusyPoll, enable_busy_poll, new_event_loop
from .errors import EngineUnavailableError
from .guard import FORWARD, HANDSHAKES, PIPE, ConnectionGuard, Refusal, failure_frame
from .rights import Access, Rights
from .tls import ClientTLS, TLSConfig, make_server_context
from .versions import EngineFeatures
from .wire import connect_abstract

log = logging.getLogger("cowsqlpy.front")

_HEADER = struct.Struct("<IBBH")
_U64 = struct.Struct("<Q")
_PART = P.PART.to_bytes(8, "little")
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)
_HOLD_LIMIT = 64 << 10  # reply bytes held back for a read's last reply (`send_replies`)


@dataclass(frozen=True)
class Limits:
    """Bounds of a front; every default is documented in docs/security.md.

    Each client connection costs two descriptors (client and engine side), so keep
    ``2 * max_connections`` well under the process's descriptor limit.
    """

    max_connections: int = 400
    max_per_peer: int = 200  # per peer IP address
    max_frame: int = 64 << 20  # request body bytes
    handshake_timeout: float = 10.0  # seconds for TLS and the protocol version word
    idle_timeout: float | None = 600.0  # seconds without a request or a reply owed; None: never
    engine_connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_per_peer", "max_frame"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")
        for name in ("handshake_timeout", "engine_connect_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be > 0")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            raise ValueError("Limits.idle_timeout must be > 0 or None")


@dataclass
class FrontStats:
    """Counters of a running front (read them from any thread)."""

    accepted: int = 0
    refused_connections: int = 0
    refused_requests: int = 0
    forwarded_requests: int = 0
    closed_idle: int = 0
    pipes: int = 0
    native_pipes: int = 0  # of `pipes`, those relayed off the event loop (`relay_sockets`)
    native_tls_dials: int = 0  # Raft pipes `dial` opened with the TLS in C (`native_tls`)
    open: int = 0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)


class _RateLimitedLog:
    """At most `per_second` warning lines a second; the rest are counted and summarised."""

    def __init__(self, per_second: int = 20) -> None:
        self.per_second = per_second
        self.window = 0.0
        self.count = 0
        self.suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.window >= 1.0:
            if self.suppressed:
                log.warning("%d more refusals in the last second (not logged)", self.suppressed)
            self.window, self.count, self.suppressed = now, 0, 0
        if self.count < self.per_second:
            self.count += 1
            log.warning(msg, *args)
        else:
            self.suppressed += 1


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address must be 'host:port', got {address!r}")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# -- The two sides of a relayed connection -------------------------------------------


class _Link(asyncio.Protocol):
    """One socket of a relay; `peer` is the other. In pipe mode bytes pass unparsed."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Link | None = None
        self.piping = False
        self.closed = False
        self.detached = False  # the socket went to a native relay: the transport is a husk
        self.sock: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = sock

    def quick_ack(self) -> None:
        # The engine leaves Nagle on: a delayed ACK from us would hold its next reply (or
        # Raft message) back ~40 ms. The kernel clears QUICKACK, so set it on every read.
        if self.sock is not None:
            self.sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)

    def data_received(self, data: bytes) -> None:
        self.quick_ack()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def pause_writing(self) -> None:  # our socket is full: stop reading the other one
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.peer is not None and not self.detached:
            self.peer.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()  # flushes what is buffered


class _EngineSide(_Link):
    """The front's connection to the engine: follows reply frames to match them to requests."""

    def __init__(self, client: _ClientSide) -> None:
        super().__init__()
        self.peer = client
        self.client = client
        self._header = bytearray()
        self._left = 0  # body bytes of the current reply still to come
        self._rtype = 0
        self._keep = bytearray()  # STMT: the body's first word; ROWS: its last 8 bytes

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client.front.poller is not None:
            client.front.poller.touch()
        if self.piping or client.transport is None:
            super().data_received(data)
            return
        self.quick_ack()
        client.last_activity = time.monotonic()
        start = 0
        pos = 0
        n = len(data)
        if not self._left and not self._header:
            # Fast path: whole reply frames, the usual case; a cut one is left to the loop below.
            while pos + 8 <= n:
                words, rtype, _, _ = _HEADER.unpack_from(data, pos)
                end = pos + 8 + words * 8
                if end > n:
                    break
                if rtype != P.ROWS or data[end - 8 : end] != _PART:
                    kept = data[pos + 8 : pos + 16] if rtype == P.STMT else b""
                    refusals = client.reply_done(rtype, kept)
                    if refusals:
                        client.send_replies(data[start:end] + refusals)
                        start = end
                pos = end
        while pos < n:
            if self._left == 0:
                take = min(8 - len(self._header), n - pos)
                self._header += data[pos : pos + take]
                pos += take
                if len(self._header) < 8:
                    break
                words, self._rtype, _, _ = _HEADER.unpack(self._header)
                self._header.clear()
                self._keep.clear()
                self._left = words * 8
                if self._left:
                    continue
            else:
                take = min(self._left, n - pos)
                if self._rtype == P.STMT:
                    need = 8 - len(self._keep)
                    if need > 0:
                        self._keep += data[pos : pos + min(need, take)]
                elif self._rtype == P.ROWS:
                    self._keep += data[max(pos, pos + take - 8) : pos + take]
                    del self._keep[:-8]
                pos += take
                self._left -= take
                if self._left:
                    continue
            # A whole reply frame ends at `pos`.
            if self._rtype == P.ROWS and self._keep == _PART:
                continue
            refusals = client.reply_done(self._rtype, bytes(self._keep))
            if refusals:
                client.send_replies(data[start:pos] + refusals)
                start = pos
        if start < n:
            client.send_replies(data[start:] if start else data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.piping and not self.detached:
            self.client.flush_held()  # the replies the engine sent before it closed
        super().connection_lost(exc)


class _ClientSide(_Link):
    """A connection accepted on the public address."""

    def __init__(self, front: Front) -> None:
        super().__init__()
        self.front = front
        self.host = ""
        self.buf = bytearray()
        self.handshaken = False
        self.version = P.PROTOCOL_VERSION
        self.eof = False  # the client half-closed; close once the replies owed are sent
        self.engine: _EngineSide | None = None
        self.guard: ConnectionGuard | None = None
        self.pending: collections.deque[int | bytes] = (
            collections.deque()
        )  # rtype, or a FAILURE owed
        self.accepted_at = self.last_activity = time.monotonic()
        self.counted = False
        # Replies to the requests of one read are sent to the client together, so that a
        # pipelined BEGIN, statement, COMMIT wakes it once, not once per reply.
        self.queued = 0  # entries ever put in `pending`
        self.answered = 0  # entries ever taken out of it
        self.batch_ends: collections.deque[int] = collections.deque()  # `queued` after each read
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.relay: _NativeRelay | None = None

    # -- accept --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.host = peer[0] if isinstance(peer, tuple) else str(peer or "")
        reason = self.front._admit(self)
        if reason is not None:
            self.front._refuse_connection(self, reason)
            assert self.transport is not None
            self.transport.abort()
            self.closed = True
            return
        self.counted = True
        self.guard = ConnectionGuard(self.front.features, access=self.front._access(transport))

    def eof_received(self) -> bool | None:
        """The client finished sending: answer what it sent in whole frames, then close."""
        if self.piping or self.closed:
            return None  # close now (a pipe: the peer sees EOF as the engine would)
        self.eof = True
        if self.engine is not None and self.engine.transport is not None:
            self.finish_if_done()
        return True

    def finish_if_done(self) -> None:
        """After EOF: drop a frame cut short, close once no reply is owed."""
        if not self.eof:
            return
        self.buf.clear()
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.close_gracefully)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.counted and not self.detached:  # a relayed pipe is forgotten when it ends
            self.counted = False
            self.front._forget(self)

    # -- client bytes --

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.front.poller is not None:
            self.front.poller.touch()
        self.last_activity = time.monotonic()
        if self.piping:
            super().data_received(data)
            return
        if (
            self.handshaken
            and not self.buf
            and self.engine is not None
            and self.engine.transport is not None
        ):
            self.process(data)  # nothing buffered: check the frames in place
            return
        self.buf += data
        if not self.handshaken:
            if len(self.buf) < 8:
                return
            (version,) = _U64.unpack_from(self.buf)
            if version not in HANDSHAKES:
                self.refuse_and_close(f"bad protocol version {version:#x}")
                return
            self.handshaken = True
            self.version = version
            del self.buf[:8]
            self.front._connect_engine(self)
            return
        if self.engine is None or self.engine.transport is None:
            if len(self.buf) > self.front.limits.max_frame + 8 and self.transport is not None:
                self.transport.pause_reading()  # until the engine connection is up
            return
        self.process()

    def process(self, data: bytes | None = None) -> None:
        """Check every whole frame in the buffer (or in `data`, when nothing is buffered);
        forward or refuse each one in order."""
        assert (
            self.engine is not None and self.engine.transport is not None and self.guard is not None
        )
        buf: bytes | bytearray = self.buf if data is None else data
        out: list[bytes | bytearray] = []
        n = len(buf)
        pos = run = 0  # `run`: where the frames forwarded since the last refusal start
        limit = self.front.limits.max_frame
        check = self.guard.check
        pending = self.pending
        queued = owed = 0  # entries put in `pending` by this read; FAILUREs among them
        while n - pos >= 8:
            words, rtype, schema, _ = _HEADER.unpack_from(buf, pos)
            size = words * 8
            if size > limit:
                self.refuse_and_close(f"request body of {size} bytes is over the limit of {limit}")
                return
            end = pos + 8 + size
            if n < end:
                break
            decision = check(rtype, schema, buf[pos + 8 : end])
            if decision is FORWARD:
                pending.append(rtype)
                queued += 1
                pos = end
                continue
            if decision is PIPE:
                pos = n  # the CONNECT frame and whatever follows it: Raft's bytes
                self.start_pipe()
                break
            assert isinstance(decision, Refusal)
            if run < pos:
                out.append(buf[run:pos])
            pos = run = end
            self.front._refuse_request(self, rtype, decision)
            if decision.close:
                self.refuse_and_close(None)
                return
            if pending:
                pending.append(failure_frame(decision))
                queued += 1
                owed += 1
            elif self.transport is not None:
                self.transport.write(failure_frame(decision))
        if run < pos:
            # Frames forwarded as they came: no copy when they are the whole read.
            out.append(buf if run == 0 and pos == n and data is not None else buf[run:pos])
        if queued:
            self.front.stats.forwarded_requests += queued - owed
            self.queued += queued
            self.batch_ends.append(self.queued)
        if data is None:
            del self.buf[:pos]
        elif pos < n:
            self.buf += data[pos:]  # a frame cut short waits for the rest
        if out:
            self.engine.transport.write(out[0] if len(out) == 1 else b"".join(out))
        self.finish_if_done()

    def reply_done(self, rtype: int, kept: bytes) -> bytes:
        """A whole reply arrived: match it to its request; the FAILUREs owed right after it."""
        if not self.pending:
            return b""  # the engine sent a frame no request asked for: relay it unchanged
        request = self.pending.popleft()
        if request == P.PREPARE and rtype == P.STMT and len(kept) == 8 and self.guard is not None:
            self.guard.prepared(int.from_bytes(kept[4:8], "little"))
        owed = []
        while self.pending and isinstance(self.pending[0], bytes):
            owed.append(self.pending.popleft())
        self.answered += 1 + len(owed)
        self.finish_if_done()
        return b"".join(owed)  # type: ignore[arg-type]

    def send_replies(self, chunk: bytes) -> None:
        """Relay engine replies: held while the oldest read's requests still have replies
        owed (up to `_HOLD_LIMIT` bytes), sent with the rest once one is answered."""
        if self.transport is None:
            return
        ends = self.batch_ends
        finished = False
        while ends and self.answered >= ends[0]:
            ends.popleft()
            finished = True
        if not finished and ends and self.held_bytes + len(chunk) < _HOLD_LIMIT:
            self.held.append(chunk)
            self.held_bytes += len(chunk)
            return
        self.held.append(chunk)
        self.flush_held()

    def flush_held(self) -> None:
        """Send the replies held back (also when the engine closes its side)."""
        if self.held and self.transport is not None:
            self.transport.write(self.held[0] if len(self.held) == 1 else b"".join(self.held))
        self.held.clear()
        self.held_bytes = 0

    def close_gracefully(self) -> None:
        """Close after the replies written so far are flushed (the client sent EOF)."""
        self.close()
        if self.engine is not None:
            self.engine.close()

    def start_pipe(self) -> None:
        self.piping = True
        if self.engine is not None:
            self.engine.piping = True
        self.front.stats.pipes += 1
        native = self.front._relay is not None and self.engine is not None
        log.info("Raft peer %s: CONNECT passed, piping%s", self.host, " (native)" if native else "")
        if native:
            assert self.transport is not None and self.engine is not None
            assert self.engine.transport is not None
            self.transport.pause_reading()
            self.engine.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self.hand_over)

    def hand_over(self, tries: int = 1000) -> None:
        """Give both sockets to a native relay, once both sides took what we wrote to them
        (polled each millisecond; after `tries` the pipe stays on the loop)."""
        engine = self.engine
        if self.closed or engine is None or engine.closed:
            return
        assert self.transport is not None and engine.transport is not None
        relay = self.front._relay
        assert relay is not None
        fds: list[int] = []
        try:
            if self.transport.get_write_buffer_size() or engine.transport.get_write_buffer_size():
                if tries > 0:
                    asyncio.get_running_loop().call_later(0.001, self.hand_over, tries - 1)
                    return
                raise OSError("the bytes written before CONNECT passed were not taken")
            for link in (self, engine):
                assert link.transport is not None
                fds.append(os.dup(link.transport.get_extra_info("socket").fileno()))
        except OSError as exc:  # e.g. out of descriptors: stay on the loop
            for fd in fds:
                os.close(fd)
            log.warning("Raft peer %s: pipe stays on the event loop: %s", self.host, exc)
            self.transport.resume_reading()
            engine.transport.resume_reading()
            return
        self.detached = engine.detached = True
        self.transport.close()  # our duplicates keep the connections open
        engine.transport.close()
        self.front._relays.add(self)
        a, b = fds
        self.relay = _NativeRelay(
            lambda stop: relay(a, b, stop),
            lambda: _close_fds(a, b),
            lambda _relay, err: self.front._relay_ended(self, err),
        )
        self.front.stats.native_pipes += 1

    def refuse_and_close(self, reason: str | None) -> None:
        if self.relay is not None:
            self.relay.stop()
            return
        if reason is not None:
            self.front._refuse_connection(self, reason)
        if self.transport is not None:
            self.transport.abort()
        self.closed = True
        if self.engine is not None:
            self.engine.close()

    def idle_reason(self, now: float, limits: Limits) -> str | None:
        if self.piping or self.closed:
            return None
        if not self.handshaken or self.engine is None:
            if now - self.accepted_at > limits.handshake_timeout:
                return f"no handshake within {limits.handshake_timeout}s"
            return None
        if (
            limits.idle_timeout is not None
            and not self.pending
            and now - self.last_activity > limits.idle_timeout
        ):
            return f"idle for {limits.idle_timeout}s"
        return None


class _NativeRelay:
    """A Raft pipe moved in C on a thread of its own; `stop()` ends it.

    `work(stop_fd)` runs the C relay (GIL released) and returns its errno; it owns the
    pipe's descriptors, `release()` closes them if it raised; `done(relay, err)` follows.
    """

    def __init__(
        self,
        work: Callable[[int], int],
        release: Callable[[], None],
        done: Callable[[_NativeRelay, int], None],
    ) -> None:
        self._stop_r, self._stop_w = os.pipe()
        self._lock = threading.Lock()
        self.finished = False

        def run() -> None:
            try:
                err = work(self._stop_r)
            except BaseException:  # never here with a binding that passed its probe
                release()
                raise
            finally:
                with self._lock:
                    os.close(self._stop_r)
                    os.close(self._stop_w)
                    self._stop_w = -1
            self.finished = True
            done(self, err)

        self.thread = threading.Thread(target=run, name="cowsqlpy-relay", daemon=True)
        try:
            self.thread.start()
        except BaseException:  # e.g. no thread to be had: the caller still owns the pipe
            os.close(self._stop_r)
            os.close(self._stop_w)
            raise

    def stop(self) -> None:
        with self._lock:
            if self._stop_w >= 0:
                os.write(self._stop_w, b"x")


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


class _NativeTLSDialer:
    """`Front.dial`'s TLS in C (`cowsqlpy.node.NativeTLSClient`, OpenSSL): the client
    handshake with the settings of `cowsqlpy.tls.make_client_context`, then a
    `_NativeRelay` moves engine bytes <-> TLS records with no Python on a Raft message's
    path."""

    def __init__(self, config: TLSConfig, server_name: str) -> None:
        from .node import NativeTLSClient

        self.client = NativeTLSClient(config, server_name)

    def dial(
        self, address: str, timeout: float, done: Callable[[_NativeRelay, int], None]
    ) -> tuple[socket.socket, _NativeRelay]:
        """Connect, handshake (both within `timeout`) and start the relay; returns the
        engine's end of a socket pair and the relay, which owns everything else.

        :raises OSError: cannot connect, or the handshake failed (ssl.SSLError; the
            server's certificate refused: ssl.SSLCertVerificationError) or timed out
            (TimeoutError).
        """
        deadline = time.monotonic() + timeout
        sock = socket.create_connection(_split_address(address), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"TLS dial of {address}: timed out connecting")
            session = self.client.connect(sock.fileno(), left)
        except BaseException:
            sock.close()
            raise
        try:
            engine_end, our_end = socket.socketpair()
        except BaseException:
            session.close()
            sock.close()
            raise
        tcp, plain = sock.detach(), our_end.detach()  # the relay closes both
        try:
            relay = _NativeRelay(
                lambda stop: session.relay(plain, stop),
                lambda: _close_fds(tcp, plain),
                done,
            )
        except BaseException:  # no thread: nothing owns the session
            session.close()
            _close_fds(tcp, plain)
            engine_end.close()
            raise
        return engine_end, relay


def _native_relay() -> Callable[[int, int, int], int] | None:
    from .node import relay_sockets

    try:
        relay_sockets(-1, -1, -1)  # returns EBADF at once: the binding has the relay
    except (EngineUnavailableError, AttributeError) as exc:
        log.warning(
            "the front's Raft pipes stay on its event loop: %s",
            "no engine binding"
            if isinstance(exc, EngineUnavailableError)
            else "the engine binding predates the relay (rebuild: scripts/setup.sh)",
        )
        return None
    return relay_sockets


def _native_tls_dialer(config: TLSConfig, server_name: str) -> _NativeTLSDialer | None:
    try:
        return _NativeTLSDialer(config, server_name)
    except EngineUnavailableError as exc:
        log.warning("the front's TLS Raft pipes stay on its event loop: %s", exc)
        return None


# -- The front ------------------------------------------------------------------------


class Front:
    """The guarded public listener of one node (see the module docstring).

    :param address: public 'host:port' to accept on (port 0: the OS picks; read `address`).
    :param engine_address: the engine's internal 'host:port' or '@abstract' socket.
    :param features: the engine version's switches (`cowsqlpy.node.engine_features()`).
    :param tls: mutual TLS with the cluster certificate; None: plain TCP.
    :param limits: connection, time and size bounds.
    :param allow_remote: without TLS, admit peers that are not on loopback.
    :param rights: with TLS, the access level of each client certificate
        (`cowsqlpy.rights.Rights`, e.g. ``Rights.parse("node=peer,app=write,*=read")``
        with a CA that signs node and client certificates). None: every certificate the
        CA signed is a peer (go-cowsql's scheme, where nodes and clients share one
        certificate).
    :param busy_poll: seconds the front's loop polls instead of sleeping after network
        activity (0: off; see `cowsqlpy.runtime`): saves a thread wake-up per hop at the
        price of CPU.
    :param native_relay: without TLS, relay Raft pipes in C off the event loop (the
        default); False keeps them on the loop (for A/B measurements).
    :param native_tls: with TLS, `dial` does the Raft pipes' TLS in C (OpenSSL) on a
        thread per pipe (the default, where the binding has it); False, or the
        environment's ``COWSQLPY_NATIVE_TLS=0`` (for fronts that `Node(tls=...)` makes),
        keeps them on the loop's SSL.
    :raises ValueError: bad address or limits, `rights` without TLS; ssl.SSLError/OSError:
        unusable certificate.
    """

    def __init__(
        self,
        address: str,
        engine_address: str,
        features: EngineFeatures,
        *,
        tls: TLSConfig | None = None,
        limits: Limits | None = None,
        allow_remote: bool = False,
        rights: Rights | None = None,
        busy_poll: float = 0.0,
        native_relay: bool = True,
        native_tls: bool = True,
    ) -> None:
        self.busy_poll = busy_poll
        self.poller: BusyPoll | None = None
        if rights is not None and tls is None:
            raise ValueError("rights= needs tls= (rights come from client certificates)")
        self.rights = rights
        self._host, self._port = _split_address(address)
        if not engine_address.startswith("@"):
            _split_address(engine_address)
        self.engine_address = engine_address
        self.features = features
        self.tls = tls
        self.limits = limits or Limits()
        self.allow_remote = allow_remote
        self.stats = FrontStats()
        self._server_ctx = make_server_context(tls) if tls is not None else None
        self._client_tls = ClientTLS.of(tls) if tls is not None else None
        self._clients: set[_ClientSide] = set()
        self._dialled: weakref.WeakSet[_Link] = weakref.WeakSet()  # Raft pipes from `dial`
        self._per_host: collections.Counter[str] = collections.Counter()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._log = _RateLimitedLog()
        # TLS pipes need the loop's SSL; plain ones go to C.
        self._relay = _native_relay() if native_relay and tls is None else None
        self._relays: set[_ClientSide] = set()
        native_tls = native_tls and os.environ.get("COWSQLPY_NATIVE_TLS", "1") != "0"
        self._tls_dialer = (
            _native_tls_dialer(tls, self._client_tls.server_name)
            if native_tls and tls is not None and self._client_tls is not None
            else None
        )
        self._tls_pipes: set[_NativeRelay] = set()  # Raft pipes `dial` gave to C
        self._tls_lock = threading.Lock()
        self._tls_closing = False  # stopping: `dial` opens no more pipes in C

    @property
    def address(self) -> str:
        """The public address (with the port the OS chose, once started)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    # -- asyncio face --

    async def start_async(self) -> None:
        """Listen on the public address (on the running loop). :raises OSError: bind failed."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        with self._tls_lock:
            self._tls_closing = False  # a front started again dials again
        if self.busy_poll:
            self.poller = enable_busy_poll(loop, self.busy_poll)
        self._server = await loop.create_server(
            lambda: _ClientSide(self),
            self._host,
            self._port,
            ssl=self._server_ctx,
            ssl_handshake_timeout=self.limits.handshake_timeout if self._server_ctx else None,
            backlog=512,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.ensure_future(self._sweep())
        if self.tls is None and not _is_loopback(self._host):
            log.warning(
                "front on %s WITHOUT TLS: anyone who reaches it can read, write and reconfigure the "
                "cluster%s",
                self.address,
                ""
                if self.allow_remote
                else " (non-loopback peers are refused: allow_remote=False)",
            )
        log.info(
            "front on %s -> engine %s (tls=%s, guard for %s)",
            self.address,
            self.engine_address,
            "on" if self.tls else "off",
            self.features.name,
        )

    async def stop_async(self) -> None:
        """Stop accepting and close every relayed connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for c in list(self._clients):
            c.refuse_and_close(None)
        for link in list(self._dialled):
            link.close()
        for pipe in self._close_tls_pipes():
            pipe.stop()
        await asyncio.sleep(0)

    def _close_tls_pipes(self) -> list[_NativeRelay]:
        """Refuse new TLS pipes in C; the ones still running (to stop)."""
        with self._tls_lock:
            self._tls_closing = True
            return list(self._tls_pipes)

    # -- thread face --

    def start(self) -> None:
        """Run the front on its own thread and loop; returns once it listens.

        :raises OSError: bind failed.
        """
        if self._thread is not None:
            raise RuntimeError("front already started")
        loop = new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:  # handed to start()'s caller
                started.set_exception(exc)
                loop.close()
                return
            started.set_result(None)
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._thread = threading.Thread(
            target=run, name=f"cowsqlpy-front-{self._port}", daemon=True
        )
        self._thread.start()
        try:
            started.result()
        except BaseException:
            self._thread.join()
            self._thread = None
            raise

    def stop(self) -> None:
        """Stop a front started with `start()` (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        thread.join()
        for client in list(self._relays):
            if client.relay is not None:
                client.relay.thread.join(5.0)
            self._forget_relay(client)  # its call on the loop may have come too late
        for pipe in self._close_tls_pipes():
            pipe.stop()
            pipe.thread.join(5.0)

    def __enter__(self) -> Front:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- Raft dial hook --

    def dial(self, address: str, timeout: float = 5.0) -> socket.socket:
        """Connect to a peer's public `address` through TLS and return the engine's end of a
        local socket pair (a `Node` dial hook; called from the engine's threads).

        Without TLS it is a plain TCP connection. :raises OSError: cannot connect.
        """
        if self._client_tls is None:
            host, port = _split_address(address)
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.settimeout(None)
            return sock
        if self._loop is None:
            raise OSError("front is not running")
        if self._tls_dialer is not None:
            if self._tls_closing:
                raise OSError("front is stopping")
            engine_end, pipe = self._tls_dialer.dial(address, timeout, self._tls_pipe_ended)
            with self._tls_lock:
                closing = self._tls_closing
                if not pipe.finished and not closing:  # if finished, it was "forgotten"
                    self._tls_pipes.add(pipe)
                self.stats.native_tls_dials += 1
            if closing:  # stop() came while we dialled: it cannot see this pipe
                pipe.stop()
                engine_end.close()
                raise OSError("front is stopping")
            return engine_end
        future = asyncio.run_coroutine_threadsafe(self._dial_tls(address, timeout), self._loop)
        try:
            return future.result(timeout + 1)
        except (TimeoutError, concurrent.futures.TimeoutError) as exc:
            future.cancel()
            raise OSError(f"TLS dial of {address} timed out") from exc

    async def _dial_tls(self, address: str, timeout: float) -> socket.socket:
        assert self._client_tls is not None and self._loop is not None
        host, port = _split_address(address)
        engine_end, our_end = socket.socketpair()
        near, far = _Link(), _Link()
        near.peer, far.peer = far, near
        try:
            async with asyncio.timeout(timeout):
                await self._loop.create_connection(
                    lambda: far,
                    host,
                    port,
                    ssl=self._client_tls.context,
                    server_hostname=self._client_tls.server_name,
                )
            await self._loop.connect_accepted_socket(lambda: near, our_end)
        except BaseException:
            engine_end.close()
            our_end.close()
            far.close()
            raise
        near.piping = far.piping = True
        self._dialled.add(far)
        return engine_end

    def _tls_pipe_ended(self, pipe: _NativeRelay, err: int) -> None:
        """From a TLS pipe's thread, once it closed."""
        with self._tls_lock:
            self._tls_pipes.discard(pipe)
        if err:
            log.info("front %s: Raft pipe (TLS in C) ended: %s", self.address, os.strerror(err))

    # -- connection bookkeeping (loop thread) --

    def _admit(self, client: _ClientSide) -> str | None:
        limits = self.limits
        if self.tls is None and not self.allow_remote and not _is_loopback(client.host):
            return "non-loopback peer without TLS (allow_remote is off)"
        if len(self._clients) >= limits.max_connections:
            return f"{limits.max_connections} connections already (max_connections)"
        if self._per_host[client.host] >= limits.max_per_peer:
            return f"{limits.max_per_peer} connections from this address already (max_per_peer)"
        self._clients.add(client)
        self._per_host[client.host] += 1
        self.stats.accepted += 1
        self.stats.open = len(self._clients)
        return None

    def _access(self, transport: asyncio.BaseTransport) -> Access:
        if self.rights is None:
            return Access.PEER
        try:
            return self.rights.access(transport.get_extra_info("peercert"))
        except Exception:  # a failing rights map (a subclass's bug) grants nothing
            log.exception("front %s: the rights map failed", self.address)
            return Access.NONE

    def _relay_ended(self, client: _ClientSide, err: int) -> None:
        """From a relay's thread: the pipe is closed; forget it on the loop."""
        if err:
            log.info("Raft peer %s: pipe ended: %s", client.host, os.strerror(err))
        loop = self._loop
        try:
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._forget_relay, client)
                return
        except RuntimeError:  # the loop closed meanwhile
            pass
        self._forget_relay(client)

    def _forget_relay(self, client: _ClientSide) -> None:
        if client.counted:
            client.counted = False
            self._forget(client)
        self._relays.discard(client)

    def _forget(self, client: _ClientSide) -> None:
        self._clients.discard(client)
        self._per_host[client.host] -= 1
        if self._per_host[client.host] <= 0:
            del self._per_host[client.host]
        self.stats.open = len(self._clients)

    def _refuse_connection(self, client: _ClientSide, reason: str) -> None:
        self.stats.refused_connections += 1
        self.stats.reasons[reason.split(" (")[0]] += 1
        self._log.warning(
            "front %s: closed connection from %s: %s", self.address, client.host, reason
        )

    def _refuse_request(self, client: _ClientSide, rtype: int, refusal: Refusal) -> None:
        self.stats.refused_requests += 1
        self.stats.reasons[P.REQUEST_NAMES.get(rtype, str(rtype))] += 1
        self._log.warning(
            "front %s: refused %s from %s: %s",
            self.address,
            P.REQUEST_NAMES.get(rtype, f"type {rtype}"),
            client.host,
            refusal.message,
        )

    def _connect_engine(self, client: _ClientSide) -> None:
        asyncio.ensure_future(self._open_engine(client))

    async def _open_engine(self, client: _ClientSide) -> None:
        loop = asyncio.get_running_loop()
        engine = _EngineSide(client)
        try:
            async with asyncio.timeout(self.limits.engine_connect_timeout):
                if self.engine_address.startswith("@"):
                    await connect_abstract(loop, lambda: engine, self.engine_address[1:])
                else:
                    await loop.create_connection(
                        lambda: engine, *_split_address(self.engine_address)
                    )
        except (OSError, TimeoutError) as exc:
            log.warning(
                "front %s: engine %s unreachable: %s", self.address, self.engine_address, exc
            )
            client.refuse_and_close(None)
            return
        if client.closed:
            engine.close()
            return
        assert engine.transport is not None
        engine.transport.write(_U64.pack(client.version))
        client.engine = client.peer = engine
        if client.transport is not None:
            client.transport.resume_reading()
        client.process()

    async def _sweep(self) -> None:
        limits = self.limits
        period = min(1.0, limits.handshake_timeout / 2, (limits.idle_timeout or 1.0) / 2)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for c in list(self._clients):
                reason = c.idle_reason(now, limits)
                if reason is not None:
                    self.stats.closed_idle += 1
                    c.refuse_and_close(reason)


__all__ = ["Front", "Limits", "FrontStats"]
