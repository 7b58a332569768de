"""One connection to one node: handshake, pipelined requests, FIFO replies.

The engine answers requests on a connection strictly in order and carries no
request ids, so replies are matched to a FIFO of waiters. A query's reply is a
stream of ROWS frames that ends with DONE; the stream applies back-pressure
(the socket stops being read) so a million-row result never piles up in memory.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from . import codec, protocol
from ._loop import busy_poll_of
from .errors import ConnectionLostError, Error, ProtocolError, ReplyTimeoutError, error_for
from .tls import ClientTLS

log = logging.getLogger("cowsqlpy.wire")
_TRACE = "client" in os.environ.get("COWSQLPY_TRACE", "").split(",")

# The reply each request gets when it succeeds (a FAILURE can replace any of them).
REPLY: dict[int, int] = {
    protocol.LEADER: protocol.SERVER,
    protocol.CLIENT: protocol.WELCOME,
    protocol.OPEN: protocol.DB,
    protocol.PREPARE: protocol.STMT,
    protocol.EXEC: protocol.RESULT,
    protocol.QUERY: protocol.ROWS,
    protocol.FINALIZE: protocol.EMPTY,
    protocol.EXEC_SQL: protocol.RESULT,
    protocol.QUERY_SQL: protocol.ROWS,
    protocol.INTERRUPT: protocol.EMPTY,
    protocol.ADD: protocol.EMPTY,
    protocol.ASSIGN: protocol.EMPTY,
    protocol.REMOVE: protocol.EMPTY,
    protocol.DUMP: protocol.FILES,
    protocol.CLUSTER: protocol.SERVERS,
    protocol.TRANSFER: protocol.EMPTY,
    protocol.DESCRIBE: protocol.METADATA,
    protocol.WEIGHT: protocol.EMPTY,
}

# A query stream stops reading the socket once this many frames wait unconsumed.
_STREAM_HIGH_WATER = 8
_PART = protocol.PART.to_bytes(8, "little")
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)

_QUERIES = (protocol.QUERY, protocol.QUERY_SQL)
# CLUSTER with format 2, which no engine implements: how each answers tells them apart
_ENGINE_PROBE = (1).to_bytes(4, "little") + bytes([protocol.CLUSTER, 0, 0, 0]) + (2).to_bytes(8, "little")


def _after_rows_header(body: bytes) -> bytes | None:
    """The FAILURE past a result's column header (count word, NUL-padded names), or None.

    libdqlite 1.11.1 and cowsql 1.15 encode a query's column header before its first
    step, and a step that fails (integer overflow, malformed JSON, a constraint of a
    RETURNING write) appends its FAILURE to that buffer: the header comes first
    (tests/client/test_query_failures.py)."""
    if len(body) < 8:
        return None
    count = int.from_bytes(body[:8], "little")
    if count > (len(body) - 8) // 8:
        return None
    pos = 8
    for _ in range(count):
        end = body.find(b"\0", pos)
        if end < 0:
            return None
        pos = (end + 8) & ~7  # NUL-terminated, padded to the next word
    return body[pos:]


async def connect_abstract(loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol], name: str) -> None:
    """Connect `factory()` to the abstract Unix socket `name` (an '@name' address).

    uvloop's create_unix_connection refuses abstract names (EINVAL), so the socket is
    connected first and handed over. :raises OSError: cannot connect.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, "\0" + name)
        await loop.create_unix_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        raise


class _Waiter:
    """The reply (or stream of ROWS replies) owed to one request."""

    __slots__ = ("rtype", "expect", "future", "frames", "wakeup", "format", "discard", "begun")

    def __init__(self, rtype: int, loop: asyncio.AbstractEventLoop, stream: bool, fmt: int) -> None:
        self.rtype = rtype
        self.expect = REPLY[rtype]
        self.format = fmt
        self.future: asyncio.Future[Any] | None = None if stream else loop.create_future()
        self.frames: collections.deque[tuple[int, bytes] | BaseException] | None = (
            collections.deque() if stream else None
        )
        self.wakeup: asyncio.Event | None = asyncio.Event() if stream else None
        self.discard = False  # the consumer left early: drop the rest of the stream
        self.begun = False  # a stream's first frame arrived (its last has not, while it is owed)


class WireConnection(asyncio.Protocol):
    """A connection to one node. Use `await WireConnection.connect(address)`."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._transport: asyncio.Transport | None = None
        self._sock: socket.socket | None = None
        self._reader = codec.FrameReader()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._closed_exc: BaseException | None = None
        self._paused = False
        self._loop = asyncio.get_running_loop()
        self._outbox: list[bytes] = []  # requests written at the next `_flush`
        self._progress_at = 0.0  # loop time of the last frame received, or of a send to an idle connection

    # -- set-up ---------------------------------------------------------------

    @classmethod
    async def connect(cls, address: str, *, timeout: float = 5.0, tls: ClientTLS | None = None) -> WireConnection:
        """Dial `address` ('host:port' or '@abstract'), send the protocol version;
        with `tls`, over mutual TLS (see `cowsqlpy.tls`).

        :raises ConnectionLostError: refused, unreachable, TLS refused or timed out.
        """
        loop = asyncio.get_running_loop()
        conn = cls(address)
        try:
            async with asyncio.timeout(timeout):
                if address.startswith("@"):
                    await connect_abstract(loop, lambda: conn, address[1:])
                else:
                    host, _, port = address.rpartition(":")
                    if not host or not port.isdigit():
                        raise ValueError(f"address must be 'host:port' or '@name', got {address!r}")
                    await loop.create_connection(
                        lambda: conn, host.strip("[]"), int(port),
                        ssl=tls.context if tls else None, server_hostname=tls.server_name if tls else None,
                    )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            raise ConnectionLostError(f"cannot connect to {address}: {exc or 'timed out'}") from exc
        assert conn._transport is not None
        conn._transport.write(codec.handshake())
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock

    # -- I/O callbacks ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._progress_at = self._loop.time()
        if (poller := busy_poll_of(self._loop)) is not None:
            poller.touch()
        self._reader.feed(data)
        try:
            while (frame := self._reader.next_frame()) is not None:
                self._dispatch(frame)
        except Error as exc:
            self._fail(exc)
            return
        if self._waiters and self._sock is not None:
            # The engine leaves Nagle on for its replies: while more replies are owed,
            # ACK at once so the next one is not held back by our delayed ACK (~40 ms).
            self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionLostError(f"connection to {self.address} lost" + (f": {exc}" if exc else "")))

    def _dispatch(self, frame: tuple[int, bytes]) -> None:
        if not self._waiters:
            raise ProtocolError(f"unsolicited frame of type {frame[0]} from {self.address}")
        waiter = self._waiters[0]
        if _TRACE:
            log.debug("%s <- %s %d bytes", self.address, protocol.RESPONSE_NAMES.get(frame[0], frame[0]), len(frame[1]))
        if waiter.frames is None:
            self._waiters.popleft()
            assert waiter.future is not None
            if not waiter.future.done():
                waiter.future.set_result(frame)
            return
        # Streaming: every ROWS frame until DONE belongs to this waiter.
        ftype, body = frame
        # Anything but a ROWS body ending in the PART marker ends the stream.
        last = ftype != protocol.ROWS or body[-8:] != _PART
        waiter.begun = True
        if not waiter.discard:
            waiter.frames.append(frame)
            assert waiter.wakeup is not None
            waiter.wakeup.set()
        if last:
            self._waiters.popleft()
        elif (len(waiter.frames) >= _STREAM_HIGH_WATER and len(self._waiters) == 1
              and not self._paused and self._transport):
            # Back-pressure only while the stream is the last reply owed: a reply queued
            # behind it (a pipelined read of another task) can only arrive once the rest
            # of the stream is read, and its owner must never wait on our consumer.
            self._paused = True
            self._transport.pause_reading()

    def _fail(self, exc: BaseException) -> None:
        if self._closed_exc is None:
            self._closed_exc = exc
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.future is not None:
                if not waiter.future.done():
                    waiter.future.set_exception(exc)
                    waiter.future.exception()  # mark retrieved: the caller may be gone
            else:
                assert waiter.frames is not None and waiter.wakeup is not None
                waiter.frames.append(exc)
                waiter.wakeup.set()
        if self._transport is not None:
            self._transport.abort()

    # -- requests -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed_exc is not None

    def _send(self, rtype: int, args: tuple[Any, ...], stream: bool, fmt: int = 1, data: bytes | None = None) -> _Waiter:
        """Queue a request (`data`: already encoded) and the waiter of its reply."""
        if self._closed_exc is not None:
            raise ConnectionLostError(f"connection to {self.address} is closed") from self._closed_exc
        if data is None:
            data = codec.encode_request(rtype, *args)  # refuses what the engine must not receive
        waiter = _Waiter(rtype, self._loop, stream, fmt)
        if not self._waiters:
            self._progress_at = self._loop.time()
        self._waiters.append(waiter)
        if self._paused and self._transport:
            self._paused = False  # this reply comes after the rest of the stream: read it all
            self._transport.resume_reading()
        assert self._transport is not None
        if _TRACE:
            log.debug("%s -> %s %r", self.address, protocol.REQUEST_NAMES.get(rtype, rtype), args)
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(data)
        return waiter

    def _flush(self) -> None:
        """Write every request queued since the last flush in one send.

        A send on loopback TCP runs the receiver's TCP path inside the system call
        (30 % of the loop thread's CPU with 32 connections): the requests a loop
        iteration pipelines on one connection (a group commit's BEGIN, statements
        and COMMIT; executemany's window) go out together, one iteration later.
        """
        out, self._outbox = self._outbox, []
        if self._closed_exc is not None or self._transport is None:
            return  # their waiters have failed already
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        if (poller := busy_poll_of(self._loop)) is not None:
            poller.touch()  # the reply may be back within microseconds: poll for it

    async def engine_probe(self, *, timeout: float | None = None) -> bool:
        """Send the engine probe, CLUSTER with format 2, and say whether the node
        answered FAILURE (True: cowsql 1.15) or a node list (False: libdqlite 1.11
        answers it as format 1). Both engines survive it (test_cluster_format_probe,
        tests/sql/test_engine_probe.py); the codec refuses the format for any other use.

        :raises ConnectionLostError, ReplyTimeoutError: no reply.
        :raises ProtocolError: any other reply (the connection is closed).
        """
        waiter = self._send(protocol.CLUSTER, (2,), stream=False, data=_ENGINE_PROBE)
        try:
            await self._reply(waiter, timeout)  # decoded as format 1, as 1.11 sends it
        except (ConnectionLostError, ProtocolError):
            raise
        except Error:
            return True  # the engine's FAILURE
        return False

    def _decode(self, waiter: _Waiter, frame: tuple[int, bytes]) -> Any:
        ftype, body = frame
        if ftype == protocol.FAILURE:
            try:
                failure = codec.decode_response(ftype, body)
            except ProtocolError:
                rest = _after_rows_header(body) if waiter.rtype in _QUERIES else None
                if rest is None:
                    raise
                failure = codec.decode_response(ftype, rest)
            raise error_for(failure.code, failure.message)
        if ftype != waiter.expect:
            exc = ProtocolError(
                f"{self.address} answered {protocol.REQUEST_NAMES[waiter.rtype]} with response type {ftype}"
            )
            self._fail(exc)
            raise exc
        return codec.decode_response(ftype, body, waiter.format)

    async def request(self, rtype: int, *args: Any, timeout: float | None = None) -> Any:
        """Send one request and return its decoded reply.

        :raises Error subclass: the FAILURE the engine sent (see errors.py).
        :raises ConnectionLostError: EOF, reset or timeout (the connection is closed).
        """
        return await self.submit(rtype, *args, timeout=timeout)

    def submit(self, rtype: int, *args: Any, timeout: float | None = None) -> Coroutine[Any, Any, Any]:
        """Write a request now and return an awaitable of its reply (for pipelining:
        several submits go out back to back; await them in order)."""
        fmt = args[0] if rtype == protocol.CLUSTER and args else 1
        return self._reply(self._send(rtype, args, stream=False, fmt=fmt), timeout)

    def _deadline(self, timeout: float | None, what: str) -> asyncio.TimerHandle | None:
        """A timer that fails the connection (every waiter) with ReplyTimeoutError
        unless cancelled within `timeout`: a tenth of asyncio.timeout's cost, paid on
        every request."""
        if timeout is None:
            return None
        return self._loop.call_later(timeout, self._time_out, f"{self.address}: {what} within {timeout}s")

    def _time_out(self, message: str) -> None:
        self._fail(ReplyTimeoutError(message))

    async def _reply(self, waiter: _Waiter, timeout: float | None) -> Any:
        assert waiter.future is not None
        timer = self._deadline(timeout, "no reply")
        try:
            frame = await waiter.future  # ReplyTimeoutError once the timer fires
        except asyncio.CancelledError:
            # The reply can no longer be matched to anyone: the connection is unusable.
            self._fail(ConnectionLostError(f"{self.address}: request cancelled"))
            raise
        finally:
            if timer is not None:
                timer.cancel()
        return self._decode(waiter, frame)

    async def query(self, rtype: int, *args: Any, timeout: float | None = None) -> AsyncIterator[tuple[list[str], list[tuple[Any, ...]]]]:
        """Send QUERY or QUERY_SQL and yield (columns, rows) per ROWS batch until DONE.

        Leaving the loop early drains the rest of the result in the background
        (1.11.1 cannot interrupt a query), keeping the connection usable.
        """
        waiter = self._send(rtype, args, stream=True)
        assert waiter.frames is not None and waiter.wakeup is not None
        finished = False
        try:
            while True:
                if not waiter.frames:
                    waiter.wakeup.clear()
                    timer = self._deadline(timeout, "no rows")  # fires: the error joins the frames
                    try:
                        await waiter.wakeup.wait()
                    finally:
                        if timer is not None:
                            timer.cancel()
                    continue
                item = waiter.frames.popleft()
                if self._paused and len(waiter.frames) < _STREAM_HIGH_WATER // 2 and self._transport:
                    self._paused = False
                    self._transport.resume_reading()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                ftype, body = item
                if ftype != protocol.ROWS:
                    finished = True
                    self._decode(waiter, item)  # raises the FAILURE (or ProtocolError)
                    raise ProtocolError(f"unexpected response type {ftype} in a result set")
                try:
                    columns, rows, done = codec.decode_rows(body)
                except Error as exc:
                    finished = True
                    self._fail(exc)
                    raise
                if done:
                    finished = True
                yield columns, rows
                if done:
                    return
        finally:
            if not finished:
                self._discard_stream(waiter)

    def _discard_stream(self, waiter: _Waiter) -> None:
        """Throw away the rest of an abandoned result set as it arrives."""
        assert waiter.frames is not None
        waiter.discard = True
        waiter.frames.clear()
        if self._paused and self._transport:
            self._paused = False
            self._transport.resume_reading()

    @property
    def mid_stream(self) -> bool:
        """A result set is arriving: its first page came, its last has not. A request
        sent now is answered only after the rest of it (see `cowsqlpy.shared_reads`)."""
        return bool(self._waiters) and self._waiters[0].begun

    def stalled_for(self) -> float:
        """Seconds a reply has been owed with nothing received from the node meanwhile
        (0 when none is owed, or while we stopped reading a stream ourselves)."""
        if not self._waiters or self._paused or self._closed_exc is not None:
            return 0.0
        return self._loop.time() - self._progress_at

    def close(self, error: ConnectionLostError | None = None) -> None:
        """Close; every reply still owed fails with `error` (default: closed by the client)."""
        if self._closed_exc is None:
            self._fail(error or ConnectionLostError(f"connection to {self.address} closed by the client"))

    def __repr__(self) -> str:
        return f"<WireConnection {self.address} {'closed' if self.closed else 'open'}>"
