"""Raw frames for the guard tests: bodies the client codec would never encode."""

from __future__ import annotations

import socket
import ssl
import struct

from cowsqlpy import codec, protocol

_HEADER = struct.Struct("<IBBH")


def frame(rtype: int, body: bytes, *, schema: int = 0, words: int | None = None) -> bytes:
    """A request frame; `words` overrides the header's length (a lying header)."""
    return _HEADER.pack(len(body) // 8 if words is None else words, rtype, schema, 0) + body


def u64(*values: int) -> bytes:
    return b"".join(struct.pack("<Q", v) for v in values)


def text(value: str) -> bytes:
    data = value.encode() + b"\0"
    return data + bytes(-len(data) % 8)


class Raw:
    """One raw connection: send bytes, read whole reply frames or see the close."""

    def __init__(
        self,
        address: str,
        *,
        handshake: bytes | None = None,
        timeout: float = 5.0,
        context: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        host, port = address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock: socket.socket = (
            context.wrap_socket(sock, server_hostname=server_name) if context else sock
        )
        self.sock.sendall(codec.handshake() if handshake is None else handshake)
        self.reader = codec.FrameReader()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, object] | None:
        """The next reply frame decoded, or None when the front closed the connection."""
        while (f := self.reader.next_frame()) is None:
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
                return None
            if not data:
                return None
            self.reader.feed(data)
        ftype, body = f
        return ftype, codec.decode_response(ftype, body)

    def call(self, data: bytes) -> tuple[int, object] | None:
        """Send and read one reply; None when the front closed (or refused TLS: TLS 1.3
        reports a refused client certificate only on the first read or write)."""
        try:
            self.send(data)
        except OSError:  # ssl.SSLError included
            return None
        return self.reply()

    def result(self, data: bytes) -> tuple[int, object] | None:
        """Send a request and read its whole reply: every ROWS part up to DONE."""
        reply = self.call(data)
        while reply is not None and reply[0] == protocol.ROWS and not reply[1][2]:  # type: ignore[index]
            reply = self.reply()
        return reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_refusal(reply: tuple[int, object] | None) -> bool:
    """A FAILURE from the guard (SQLITE_AUTH or DQLITE_PARSE)."""
    return reply is not None and reply[0] == protocol.FAILURE and reply[1].code in (23, 1005)  # type: ignore[attr-defined]
