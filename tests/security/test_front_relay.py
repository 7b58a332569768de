"""The front's relay logic without sockets: how engine replies reach the client (held
for the rest of a pipelined read's replies, never lost, never held past the limit).
Transports are recorders; the guard and the frame parsing are the real ones."""

from __future__ import annotations

import struct

import pytest

from cowsqlpy import codec
from cowsqlpy import front as F
from cowsqlpy import protocol as P
from cowsqlpy.node import engine_features

_HEADER = struct.Struct("<IBBH")


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _result(n: int) -> bytes:
    return _HEADER.pack(2, P.RESULT, 0, 0) + struct.pack("<QQ", n, 1)


@pytest.fixture
def relay() -> tuple[F._ClientSide, F._EngineSide, Recorder, Recorder]:
    front = F.Front("127.0.0.1:0", "@relay-test", engine_features())
    client = F._ClientSide(front)
    to_client, to_engine = Recorder(), Recorder()
    client.connection_made(to_client)  # type: ignore[arg-type]
    client.handshaken = True
    engine = F._EngineSide(client)
    engine.transport = to_engine  # type: ignore[assignment]
    client.engine = client.peer = engine
    return client, engine, to_client, to_engine


def _exec(sql: str) -> bytes:
    return codec.encode_request(P.EXEC_SQL, 0, sql, [])


def test_a_pipelined_reads_replies_go_out_together(relay) -> None:  # type: ignore[no-untyped-def]
    client, engine, to_client, to_engine = relay
    batch = _exec("BEGIN") + _exec("INSERT INTO t VALUES (1)") + _exec("COMMIT")
    client.data_received(batch)
    assert to_engine.writes == [batch]  # forwarded as it came
    engine.data_received(_result(1))
    engine.data_received(_result(2))
    assert to_client.writes == []  # the read still has a reply owed
    engine.data_received(_result(3))
    assert to_client.writes == [_result(1) + _result(2) + _result(3)]


def test_replies_of_separate_reads_are_not_held_for_each_other(relay) -> None:  # type: ignore[no-untyped-def]
    client, engine, to_client, _ = relay
    client.data_received(_exec("SELECT 1"))
    client.data_received(_exec("SELECT 2"))
    engine.data_received(_result(1))
    assert to_client.writes == [_result(1)]
    engine.data_received(_result(2))
    assert to_client.writes == [_result(1), _result(2)]


def test_a_refusal_keeps_its_place_and_is_sent_with_its_read(relay) -> None:  # type: ignore[no-untyped-def]
    client, engine, to_client, to_engine = relay
    client.data_received(_exec("SELECT 1") + _exec("ATTACH 'x' AS y") + _exec("SELECT 3"))
    assert to_engine.writes == [_exec("SELECT 1") + _exec("SELECT 3")]  # one write
    engine.data_received(_result(1))
    engine.data_received(_result(3))
    [sent] = to_client.writes
    assert sent.startswith(_result(1)) and sent.endswith(_result(3))
    failure = sent[len(_result(1)) : -len(_result(3))]
    assert failure[4] == P.FAILURE and b"ATTACH" in failure


def test_replies_the_engine_sent_before_closing_reach_the_client(relay) -> None:  # type: ignore[no-untyped-def]
    client, engine, to_client, _ = relay
    client.data_received(_exec("SELECT 1") + _exec("SELECT 2"))
    engine.data_received(_result(1))
    engine.connection_lost(None)
    assert to_client.writes == [_result(1)] and to_client.closed


def test_a_large_reply_is_not_held(relay) -> None:  # type: ignore[no-untyped-def]
    client, engine, to_client, _ = relay
    client.data_received(_exec("SELECT big") + _exec("SELECT 2"))
    body = struct.pack("<Q", 1) + bytes(F._HOLD_LIMIT)  # a ROWS-sized frame over the limit
    big = _HEADER.pack(len(body) // 8, P.RESULT, 0, 0) + body
    engine.data_received(big)
    assert b"".join(to_client.writes) == big
