"""Blocking one-request-at-a-time wire calls for node tests (no client involved)."""

from __future__ import annotations

import socket

from cowsqlpy import codec, protocol


def call(address: str, rtype: int, *args: object, timeout: float = 5.0) -> tuple[int, object]:
    """Open a connection to `address`, send one request, return (response type, decoded)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(codec.handshake() + codec.encode_request(rtype, *args))
        reader = codec.FrameReader()
        while (frame := reader.next_frame()) is None:
            data = sock.recv(65536)
            if not data:
                raise EOFError(f"{address} closed the connection")
            reader.feed(data)
        ftype, body = frame
        return ftype, codec.decode_response(ftype, body)


def leader(address: str) -> tuple[int, str]:
    """(id, address) of the leader as `address` sees it; (0, '') when it knows none."""
    ftype, value = call(address, protocol.LEADER)
    assert ftype == protocol.SERVER, value
    return value  # type: ignore[return-value]


def must(address: str, rtype: int, *args: object) -> object:
    ftype, value = call(address, rtype, *args)
    if ftype == protocol.FAILURE:
        raise AssertionError(f"{address}: request {rtype} failed: {value}")
    return value


class Session:
    """One open connection for a sequence of requests (e.g. OPEN then EXEC_SQL)."""

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.sendall(codec.handshake())
        self.reader = codec.FrameReader()

    def request(self, rtype: int, *args: object) -> tuple[int, object]:
        self.sock.sendall(codec.encode_request(rtype, *args))
        while (frame := self.reader.next_frame()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed")
            self.reader.feed(data)
        ftype, body = frame
        return ftype, codec.decode_response(ftype, body)

    def must(self, rtype: int, *args: object) -> object:
        ftype, value = self.request(rtype, *args)
        if ftype == protocol.FAILURE:
            raise AssertionError(f"request {rtype} failed: {value}")
        return value

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
