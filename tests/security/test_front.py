"""The front against a real engine node in a child process: traffic passes, every crash
case of issue 16 is refused (FAILURE or a closed connection) and the node keeps serving."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy import protocol as P
from cowsqlpy.errors import NotSupportedError
from cowsqlpy.front import Front, Limits
from cowsqlpy.node import engine_features
from cowsqlpy.testing import wait_for

from .conftest import GuardedNode
from .raw import Raw, frame, is_refusal, text, u64


def test_dbapi_traffic_passes(guarded: GuardedNode) -> None:
    conn = cowsqlpy.connect(guarded.address, database="app", autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT, b BLOB)")
        cur.executemany(
            "INSERT INTO t (v, b) VALUES (?, ?)",
            [(f"v{i}" * 20, bytes([i % 256]) * 50) for i in range(3000)],
        )
        cur.execute("SELECT k, v, b FROM t ORDER BY k")  # many ROWS parts
        rows = cur.fetchall()
        assert len(rows) == 3000
        assert rows[1234] == (1235, "v1234" * 20, bytes([1234 % 256]) * 50)
        for _ in range(3):  # a repeated text is run prepared, by statement id
            cur.execute("SELECT v FROM t WHERE k = ?", (7,))
            assert cur.fetchall() == [("v6" * 20,)]
    finally:
        conn.close()
    assert guarded.front.stats.refused_requests == 0


def test_refusal_is_answered_in_its_place_among_pipelined_replies(guarded: GuardedNode) -> None:
    with Raw(guarded.address) as raw:
        assert raw.call(frame(P.OPEN, text("pipe") + u64(0) + text("volatile")))[0] == P.DB  # type: ignore[index]
        raw.send(
            frame(P.EXEC_SQL, u64(0) + text("CREATE TABLE IF NOT EXISTS p (x)"))
            + frame(P.EXEC_SQL, u64(0) + text("ATTACH 'file:/etc/x?vfs=unix' AS y"))
            + frame(P.QUERY_SQL, u64(0) + text("SELECT 42"))
        )
        assert raw.reply()[0] == P.RESULT  # type: ignore[index]
        assert is_refusal(raw.reply())
        ftype, rows = raw.reply()  # type: ignore[misc]
        assert ftype == P.ROWS and rows[1] == [(42,)]  # type: ignore[index]


def test_random_bytes_after_the_handshake(guarded: GuardedNode) -> None:
    rng = random.Random(16)
    for _ in range(20):
        with Raw(guarded.address) as raw:
            raw.send(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 4096))))
            raw.sock.shutdown(socket.SHUT_WR)  # a frame cut short waits for the rest: end it
            while (reply := raw.reply()) is not None:
                assert reply[0] == P.FAILURE
    guarded.assert_serving()


def test_header_claiming_a_huge_body_closes(guarded: GuardedNode) -> None:
    with Raw(guarded.address) as raw:
        assert raw.call(frame(P.QUERY_SQL, b"", words=0xFFFFFFFF)) is None
    assert guarded.front.stats.refused_connections == 1
    guarded.assert_serving()


@pytest.mark.parametrize("rtype", range(0, 21))
def test_zero_length_body(guarded: GuardedNode, rtype: int) -> None:
    with Raw(guarded.address) as raw:
        reply = raw.call(frame(rtype, b""))
        assert is_refusal(reply) or (rtype == P.CONNECT and reply is None)
    guarded.assert_serving()


def test_finalize_of_a_stale_id(guarded: GuardedNode) -> None:
    with Raw(guarded.address) as raw:
        raw.call(frame(P.OPEN, text("fin") + u64(0) + text("volatile")))
        first = raw.call(frame(P.PREPARE, u64(0) + text("SELECT 1")))
        second = raw.call(frame(P.PREPARE, u64(0) + text("SELECT 2")))
        assert first[0] == second[0] == P.STMT  # type: ignore[index]
        stmt0 = first[1][1]  # type: ignore[index]
        finalize = frame(
            P.FINALIZE, stmt0.to_bytes(4, "little") * 0 + bytes(4) + stmt0.to_bytes(4, "little")
        )
        assert raw.call(finalize)[0] == P.EMPTY  # type: ignore[index]
        assert is_refusal(raw.call(finalize))
        assert is_refusal(raw.call(frame(P.EXEC, bytes(4) + stmt0.to_bytes(4, "little"))))
        assert is_refusal(raw.call(frame(P.QUERY, bytes(4) + (99).to_bytes(4, "little"))))
    guarded.assert_serving()


@pytest.mark.parametrize("fmt", [1, 2, 2**63])
def test_describe_formats_the_engine_aborts_on(guarded: GuardedNode, fmt: int) -> None:
    with Raw(guarded.address) as raw:
        assert is_refusal(raw.call(frame(P.DESCRIBE, u64(fmt))))
        assert raw.call(frame(P.DESCRIBE, u64(0)))[0] == P.METADATA  # type: ignore[index]
    guarded.assert_serving()


@pytest.mark.parametrize("rtype", [P.HEARTBEAT, 20, 77, 255])
def test_heartbeat_and_unknown_types_get_a_failure_not_a_wedge(
    guarded: GuardedNode, rtype: int
) -> None:
    with Raw(guarded.address, timeout=5.0) as raw:
        assert is_refusal(raw.call(frame(rtype, u64(0))))
        assert raw.call(frame(P.LEADER, u64(0)))[0] == P.SERVER  # type: ignore[index]


def test_connect_from_a_client_after_other_requests_closes(guarded: GuardedNode) -> None:
    with Raw(guarded.address) as raw:
        assert raw.call(frame(P.LEADER, u64(0)))[0] == P.SERVER  # type: ignore[index]
        assert raw.call(frame(P.CONNECT, u64(1) + text("127.0.0.1:1"))) is None
    guarded.assert_serving()


@pytest.mark.parametrize("version", [0, 2, 2**64 - 1])
def test_bad_protocol_version_closes(guarded: GuardedNode, version: int) -> None:
    with Raw(guarded.address, handshake=version.to_bytes(8, "little")) as raw:
        assert raw.call(frame(P.LEADER, u64(0))) is None


def test_returning_sent_raw(guarded: GuardedNode) -> None:
    """Refused where the engine crashes on it; where it is safe it runs and the node lives."""
    with Raw(guarded.address) as raw:
        raw.call(frame(P.OPEN, text("ret") + u64(0) + text("volatile")))
        raw.call(frame(P.EXEC_SQL, u64(0) + text("CREATE TABLE r (k INTEGER PRIMARY KEY, v)")))
        reply = raw.call(
            frame(P.QUERY_SQL, u64(0) + text("INSERT INTO r (v) VALUES (1) RETURNING k"))
        )
        if engine_features().returning:
            assert reply is not None and reply[0] in (P.ROWS, P.FAILURE)  # cowsql 1.15: FAILURE 100
        else:
            assert is_refusal(reply)
        assert (
            raw.call(frame(P.EXEC_SQL, u64(0) + text("INSERT INTO r (v) VALUES (2)")))[0]
            == P.RESULT
        )  # type: ignore[index]
    guarded.assert_serving()


@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA journal_mode=DELETE",
        "PRAGMA journal_mode = MEMORY",
        "PRAGMA page_size=512",
        "pragma main.\"journal_mode\" = 'delete'",
        "PRAGMA busy_timeout = 100000",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "PRAGMA writable_schema = 1",
    ],
)
def test_official_client_cannot_kill_the_node_with_a_pragma(guarded: GuardedNode, sql: str) -> None:
    """Our driver refuses it before sending (the guard's rules, client side); sent raw, the
    front refuses it; the node serves on."""
    conn = cowsqlpy.connect(guarded.address, database="pragma", autocommit=True)
    try:
        with pytest.raises(NotSupportedError, match="refused"):
            conn.cursor().execute(sql)
    finally:
        conn.close()
    _refused_raw(guarded, sql)
    guarded.assert_serving()


def _refused_raw(guarded: GuardedNode, sql: str) -> None:
    with Raw(guarded.address) as raw:
        assert raw.call(frame(P.OPEN, text("raw") + u64(0) + text("volatile")))
        assert is_refusal(raw.call(frame(P.EXEC_SQL, u64(0) + text(sql))))


@pytest.mark.parametrize(
    "template",
    [
        "VACUUM INTO 'file:{dir}/stolen.db?vfs=unix'",
        "VACUUM main INTO '{dir}/stolen.db'",
        "ATTACH 'file:{dir}/stolen.db?vfs=unix' AS s",
        "ATTACH DATABASE '{dir}/stolen.db' AS s",
        "SELECT load_extension('{dir}/x.so')",
    ],
)
def test_sql_cannot_reach_the_host_filesystem(
    guarded: GuardedNode, tmp_path: Path, template: str
) -> None:
    conn = cowsqlpy.connect(guarded.address, database="fs", autocommit=True)
    try:
        with pytest.raises(NotSupportedError, match="refused"):
            conn.cursor().execute(template.format(dir=tmp_path))
    finally:
        conn.close()
    _refused_raw(guarded, template.format(dir=tmp_path))
    assert not (tmp_path / "stolen.db").exists()


def test_open_of_a_uri_filename_is_refused(guarded: GuardedNode) -> None:
    with Raw(guarded.address) as raw:
        assert is_refusal(
            raw.call(frame(P.OPEN, text("file:/etc/passwd?vfs=unix") + u64(0) + text("volatile")))
        )
        assert is_refusal(raw.call(frame(P.OPEN, text("x") + u64(0) + text("unix"))))


def test_connection_limits_hold_and_the_node_keeps_serving(guarded_factory) -> None:  # type: ignore[no-untyped-def]
    node = guarded_factory(limits=Limits(max_connections=30, max_per_peer=20))
    held = [Raw(node.address) for _ in range(25)]
    try:
        wait_for(lambda: node.front.stats.refused_connections >= 5, 10.0, "5 refusals")
        assert node.front.stats.open == 20
    finally:
        for raw in held:
            raw.close()
    wait_for(lambda: node.front.stats.open == 0, 10.0, "the held connections to close")
    node.assert_serving()


def test_idle_and_silent_connections_are_closed(guarded_factory) -> None:  # type: ignore[no-untyped-def]
    node = guarded_factory(limits=Limits(idle_timeout=0.5, handshake_timeout=0.5))
    with Raw(node.address) as idle, Raw(node.address, handshake=b"") as silent:
        assert idle.reply() is None
        assert silent.reply() is None
    assert node.front.stats.closed_idle == 2
    node.assert_serving()


def test_front_start_errors_and_bad_limits() -> None:
    import socket as _socket

    with _socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        front = Front(f"127.0.0.1:{taken.getsockname()[1]}", "127.0.0.1:1", engine_features())
        with pytest.raises(OSError):
            front.start()
    for bad in (
        dict(max_connections=0),
        dict(max_frame=-1),
        dict(idle_timeout=0),
        dict(handshake_timeout=0),
    ):
        with pytest.raises(ValueError):
            Limits(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Front("no-port", "127.0.0.1:1", engine_features())


def test_front_stop_closes_relayed_connections(guarded_factory) -> None:  # type: ignore[no-untyped-def]
    node = guarded_factory()
    with Raw(node.address) as raw:
        assert raw.call(frame(P.LEADER, u64(0)))[0] == P.SERVER  # type: ignore[index]
        node.front.stop()
        assert raw.reply() is None


def test_busy_polling_front_serves(guarded_factory) -> None:  # type: ignore[no-untyped-def]
    node = guarded_factory(busy_poll=0.0001)
    node.assert_serving()
    assert node.front.poller is not None and node.front.poller.spins > 0


def test_the_engine_probe_gets_the_engines_answer(guarded: GuardedNode) -> None:
    """The client's engine probe (CLUSTER format 2) passes the front: the engine itself
    answers (cowsql 1.15: FAILURE), and the node keeps serving."""
    import asyncio

    from cowsqlpy.wire import WireConnection

    async def probe() -> bool:
        conn = await WireConnection.connect(guarded.address)
        try:
            return await conn.engine_probe(timeout=5.0)
        finally:
            conn.close()

    assert asyncio.run(probe()) is True
    assert guarded.front.stats.refused_requests == 0
    guarded.assert_serving()
