"""Rights per client certificate (`cowsqlpy.rights`): a CA signs node and client
certificates, and a real TLS front over a real engine (in a child process) gives each
certificate CN its level: read-only, read-write, admin, peer, or none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy import protocol as P
from cowsqlpy.client import SyncClient
from cowsqlpy.errors import AccessDeniedError, OperationalError
from cowsqlpy.front import Front
from cowsqlpy.node import engine_features
from cowsqlpy.rights import Access, Rights
from cowsqlpy.testing import wait_for
from cowsqlpy.tls import TLSConfig, make_client_context

from .conftest import GuardedNode
from .pki import make_pki
from .raw import Raw, frame, text, u64

RIGHTS = Rights.parse("node=peer,ops=admin,app=write,reader=read")  # anyone else: none
CNS = ("node", "ops", "app", "reader", "stranger")


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TLSConfig]:
    base = tmp_path / "pki"
    base.mkdir()
    return make_pki(base, CNS)


@pytest.fixture
def node(guarded_factory: Callable[..., GuardedNode], pki: dict[str, TLSConfig]) -> GuardedNode:
    node = guarded_factory(tls=pki["node"], rights=RIGHTS)
    node.assert_serving(tls=pki["node"])
    conn = cowsqlpy.connect(node.address, database="r", autocommit=True, tls=pki["node"])
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t VALUES (1, 'one')")
    conn.close()
    return node


def _raw(node: GuardedNode, cert: TLSConfig) -> Raw:
    return Raw(node.address, context=make_client_context(cert), server_name="cowsql")


def _denied(reply: tuple[int, object] | None) -> bool:
    return reply is not None and reply[0] == P.FAILURE and reply[1].code == 279  # type: ignore[attr-defined]


def _state(node: GuardedNode, cert: TLSConfig) -> tuple[object, ...]:
    conn = cowsqlpy.connect(node.address, database="r", autocommit=True, tls=cert)
    try:
        rows = conn.execute("SELECT k, v FROM t ORDER BY k").fetchall()
        schema = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        version = conn.execute("PRAGMA user_version").fetchall()
        return rows, schema, version
    finally:
        conn.close()


# Every way a client can hand the engine SQL, each with a statement that writes.
WRITES = [
    "INSERT INTO t VALUES (2, 'two')",
    "UPDATE t SET v = 'x'",
    "DELETE FROM t",
    "REPLACE INTO t VALUES (1, 'r')",
    "SELECT 1; INSERT INTO t VALUES (3, 'three')",
    "WITH x(k) AS (SELECT 4) INSERT INTO t SELECT k, 'cte' FROM x",
    "PRAGMA user_version = 7",
    "CREATE TABLE u (a)",
    "DROP TABLE t",
    "ALTER TABLE t ADD COLUMN w",
    "BEGIN IMMEDIATE",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM t; END",
]


def test_read_only_certificate_reads_and_cannot_write(
    node: GuardedNode, pki: dict[str, TLSConfig]
) -> None:
    before = _state(node, pki["node"])
    # Reads, linearizable by default (the read barrier's own write is let through).
    conn = cowsqlpy.connect(node.address, database="r", autocommit=True, tls=pki["reader"])
    assert conn.execute("SELECT v FROM t WHERE k = ?", (1,)).fetchall() == [("one",)]
    assert conn.execute("WITH x AS (SELECT k FROM t) SELECT count(*) FROM x").fetchall() == [(1,)]
    assert conn.execute("PRAGMA table_info(t)").fetchall()
    for sql in WRITES:
        with pytest.raises(AccessDeniedError) as caught:
            if ";" in sql:
                conn.executescript(sql)
            else:
                conn.execute(sql)
        assert isinstance(caught.value, PermissionError) and caught.value.code == 279, sql
    conn.close()
    # Outside autocommit the driver's own first write (its commit markers) is refused
    # first: the error says the connection may not write.
    conn = cowsqlpy.connect(node.address, database="r", tls=pki["reader"])
    with pytest.raises(AccessDeniedError, match="may not write"):
        conn.execute("INSERT INTO t VALUES (5, 'five')")
    conn.close()

    with _raw(node, pki["reader"]) as raw:
        assert raw.call(frame(P.OPEN, text("r") + u64(0) + text("volatile")))[0] == P.DB  # type: ignore[index]
        stmt = raw.call(frame(P.PREPARE, u64(0) + text("SELECT v FROM t")))
        assert stmt is not None and stmt[0] == P.STMT
        stmt_id = stmt[1][1]  # type: ignore[index]
        assert raw.result(frame(P.QUERY, u64(0) + u64(stmt_id)[:4] + bytes(4)))[0] == P.ROWS  # type: ignore[index]
        for sql in WRITES:
            for rtype in (P.EXEC_SQL, P.QUERY_SQL, P.PREPARE):
                assert _denied(raw.call(frame(rtype, u64(0) + text(sql)))), (rtype, sql)
        # EXEC/QUERY only run what this connection prepared, and a write never prepares.
        for rtype in (P.EXEC, P.QUERY):
            reply = raw.call(frame(rtype, u64(0) + u64(stmt_id + 1)[:4] + bytes(4)))
            assert reply is not None and reply[0] == P.FAILURE
        # Another database after OPEN: refused (the barrier's exception stays where it is).
        assert _denied(raw.call(frame(P.OPEN, text("other") + u64(0) + text("volatile"))))
        for request in (
            frame(P.DUMP, text("r")),
            frame(P.ADD, u64(9) + text("127.0.0.1:1")),
            frame(P.REMOVE, u64(9)),
            frame(P.TRANSFER, u64(0)),
            frame(P.ASSIGN, u64(9) + u64(P.SPARE)),
            frame(P.WEIGHT, u64(3)),
        ):
            assert _denied(raw.call(request)), request
        assert raw.result(frame(P.QUERY_SQL, u64(0) + text("SELECT count(*) FROM t")))[0] == P.ROWS  # type: ignore[index]
    with _raw(node, pki["reader"]) as raw:  # no Raft for readers
        assert raw.call(frame(P.CONNECT, u64(1) + text("127.0.0.1:1"))) is None
    with SyncClient([node.address], tls=pki["reader"]) as client:
        for call in (
            lambda: client.dump("r"),
            lambda: client.add(9, "127.0.0.1:1"),
            lambda: client.remove(9),
            lambda: client.transfer(0),
            lambda: client.weight(node.address, 2),
        ):
            with pytest.raises(AccessDeniedError):
                call()
        assert [n.address for n in client.cluster()] == [node.address]
    assert _state(node, pki["node"]) == before
    assert node.alive()


def test_read_write_certificate_writes_but_cannot_change_the_cluster(
    node: GuardedNode, pki: dict[str, TLSConfig]
) -> None:
    conn = cowsqlpy.connect(node.address, database="r", autocommit=True, tls=pki["app"])
    conn.execute("INSERT INTO t VALUES (2, 'two')")
    conn.execute("PRAGMA user_version = 3")
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(2,)]
    conn.close()
    with SyncClient([node.address], tls=pki["app"]) as client:
        for call in (
            lambda: client.dump("r"),
            lambda: client.add(9, "127.0.0.1:1"),
            lambda: client.remove(9),
            lambda: client.assign(9, P.STANDBY),
            lambda: client.transfer(0),
            lambda: client.weight(node.address, 2),
        ):
            with pytest.raises(AccessDeniedError, match="admin"):
                call()
        assert [n.address for n in client.cluster()] == [node.address]
    with _raw(node, pki["app"]) as raw:
        assert raw.call(frame(P.CONNECT, u64(1) + text("127.0.0.1:1"))) is None


def test_admin_certificate_changes_the_cluster_but_is_no_raft_peer(
    node: GuardedNode, pki: dict[str, TLSConfig]
) -> None:
    with SyncClient([node.address], tls=pki["ops"]) as admin:
        assert admin.dump("r")["r"].startswith(b"SQLite format 3\0")
        admin.add(9, "127.0.0.1:1")
        assert 9 in {n.id for n in admin.cluster()}
        admin.assign(9, P.STANDBY)
        with pytest.raises(OperationalError) as caught:  # the engine's answer, not the front's
            admin.transfer(9)  # a stand-by cannot lead
        assert not isinstance(caught.value, AccessDeniedError)
        admin.remove(9)
        assert 9 not in {n.id for n in admin.cluster()}
        admin.weight(node.address, 2)
        assert admin.describe(node.address).weight == 2
    with _raw(node, pki["ops"]) as raw:
        assert raw.call(frame(P.CONNECT, u64(1) + text("127.0.0.1:1"))) is None
    # The node's own certificate (peer) may speak Raft: CONNECT becomes a pipe.
    pipes = node.front.stats.pipes
    with _raw(node, pki["node"]) as raw:
        raw.send(frame(P.CONNECT, u64(2) + text("127.0.0.1:2")))
        wait_for(lambda: node.front.stats.pipes == pipes + 1, 10.0, "CONNECT to become a pipe")
    assert node.alive()


def test_an_unlisted_certificate_gets_a_clear_error(
    node: GuardedNode, pki: dict[str, TLSConfig]
) -> None:
    conn = cowsqlpy.connect(node.address, database="r", autocommit=True, tls=pki["stranger"])
    with pytest.raises(AccessDeniedError, match="without rights"):
        conn.execute("SELECT 1")
    conn.close()
    with _raw(node, pki["stranger"]) as raw:
        assert raw.call(frame(P.LEADER, u64(0)))[0] == P.SERVER  # type: ignore[index]
        assert _denied(raw.call(frame(P.CLUSTER, u64(1))))
        assert _denied(raw.call(frame(P.OPEN, text("r") + u64(0) + text("volatile"))))


def test_rights_need_tls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls"):
        Front("127.0.0.1:0", "127.0.0.1:1", engine_features(), rights=RIGHTS)
    from cowsqlpy.node import Node

    with pytest.raises(ValueError, match="tls"):
        Node(1, "127.0.0.1:0", tmp_path / "n", rights=RIGHTS)


def test_rights_parse() -> None:
    rights = Rights.parse(" node=peer, app = write ,*=read")
    assert rights == Rights({"node": Access.PEER, "app": "write"}, default=Access.READ)
    assert rights.access({"subject": ((("commonName", "app"),),)}) == Access.WRITE
    assert rights.access({"subject": ((("commonName", "x"),),)}) == Access.READ
    assert rights.access({"subject": ((("organizationName", "o"),),)}) == Access.READ
    assert rights.access(None) == Access.NONE
    assert Rights.parse("").default == Access.NONE
    assert Rights.parse(repr(rights)[len("Rights.parse('") : -2]) == rights
    for bad in ("node", "node=root", "=read", "a=read,a=write"):
        with pytest.raises(ValueError):
            Rights.parse(bad)


def test_policy_refusals_stay_policy_refusals(node: GuardedNode, pki: dict[str, TLSConfig]) -> None:
    """What the guard refuses for every certificate (ATTACH) is not an access error."""
    with _raw(node, pki["ops"]) as raw:
        raw.call(frame(P.OPEN, text("r") + u64(0) + text("volatile")))
        reply = raw.call(frame(P.EXEC_SQL, u64(0) + text("ATTACH 'x' AS y")))
        assert reply is not None and reply[0] == P.FAILURE and reply[1].code == 23  # type: ignore[attr-defined]


def test_the_cert_tool_makes_a_ca_and_certificates_it_signs(tmp_path: Path) -> None:
    from cryptography import x509

    from cowsqlpy.tls import main, make_cert, subject_cn

    assert main(["make-ca", "--out", str(tmp_path / "ca")]) == 0
    assert (
        main(["make-cert", "--out", str(tmp_path), "--ca", str(tmp_path / "ca"), "--cn", "app"])
        == 0
    )
    assert (
        main(["make-cert", "--out", str(tmp_path), "--ca", str(tmp_path / "ca"), "--cn", "app"])
        == 1
    )
    ca = x509.load_pem_x509_certificate((tmp_path / "ca" / "ca.crt").read_bytes())
    app = x509.load_pem_x509_certificate((tmp_path / "app.crt").read_bytes())
    app.verify_directly_issued_by(ca)
    assert (tmp_path / "app.key").stat().st_mode & 0o777 == 0o600
    assert app.subject.rfc4514_string() == "CN=app"
    assert subject_cn({"subject": ((("commonName", "app"),),)}) == "app"
    with pytest.raises(ValueError):
        make_cert(tmp_path / "x", cn="app")  # a CN needs the CA
