"""The fronts' TLS Raft pipes in C (`cowsqlpy.node.NativeTLSClient`, native/tls_relay.c):
the C context is set as `make_client_context`, a server the Python client refuses is
refused (another CA, another name, no TLS, no handshake in time), every byte crosses the
relay in order both ways, and a 3-node TLS cluster replicates over pipes in C; `stop()`
ends them; a binding without OpenSSL falls back to the loop's SSL with a warning."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy import node as node_module
from cowsqlpy import protocol as P
from cowsqlpy.client import SyncClient
from cowsqlpy.front import Front
from cowsqlpy.node import NativeTLSClient, Node, engine_features, tls_available
from cowsqlpy.testing import transfer_leadership, wait_for
from cowsqlpy.tls import TLSConfig, make_ca, make_cert, make_client_context, make_server_context

from .conftest import _ROOT, _free_port, fronted_cluster

pytestmark = pytest.mark.skipif(
    not tls_available(), reason="engine binding built without OpenSSL (libssl-dev)"
)


def _native(config: TLSConfig) -> NativeTLSClient:
    return NativeTLSClient(config, config.check_name())


# -- The context ----------------------------------------------------------------------


def test_the_c_context_is_set_as_the_python_client_context(cluster_cert: TLSConfig) -> None:
    py = make_client_context(cluster_cert)
    c = _native(cluster_cert).settings()
    assert c["options"] == int(py.options)
    assert c["minimum_version"] == py.minimum_version.value == ssl.TLSVersion.TLSv1_2.value
    assert c["verify_flags"] == int(py.verify_flags)
    assert c["ciphers"] == [cipher["name"] for cipher in py.get_ciphers()]
    assert py.verify_mode == ssl.CERT_REQUIRED
    assert c["verify_mode"] == 3  # SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT


def test_an_unusable_key_is_an_ssl_error(cluster_cert: TLSConfig, tmp_path: Path) -> None:
    other = make_cert(tmp_path)
    with pytest.raises(ssl.SSLError, match="key"):
        NativeTLSClient(TLSConfig(cluster_cert.cert, other.key), "cowsql")


# -- Servers to dial ------------------------------------------------------------------


class Server:
    """A TCP server on loopback that runs `serve(conn)` for each connection on a thread."""

    def __init__(self, context: ssl.SSLContext | None, echo: bool = True) -> None:
        self.context = context
        self.echo = echo
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.errors: list[BaseException] = []
        self.held: list[socket.socket] = []  # accepted (TLS sockets once wrapped)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            if self.echo:
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        tls = conn
        try:
            if self.context is not None:
                tls = self.context.wrap_socket(conn, server_side=True)
                self.held.append(tls)  # `conn` is detached now
            while data := tls.recv(1 << 16):
                tls.sendall(data)
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(exc)
        finally:
            tls.close()

    def open_connections(self) -> list[socket.socket]:
        return [c for c in self.held if c.fileno() >= 0]

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (Linux)
        self.listener.close()
        for conn in self.open_connections():
            conn.close()
        self.thread.join(5.0)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for s in made:
        s.close()


def _tcp(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5.0)


def _python_refuses(config: TLSConfig, address: str) -> bool:
    try:
        with _tcp(address) as sock:
            ctx = make_client_context(config)
            ctx.wrap_socket(sock, server_hostname=config.check_name()).close()
    except ssl.SSLCertVerificationError:
        return True
    return False


def _strangers(tmp_path: Path) -> dict[str, TLSConfig]:
    """Servers' certificates our cluster certificate must not trust."""
    other_ca = make_ca(tmp_path / "other-ca")
    return {
        # go-cowsql's scheme, another cluster's certificate
        "another cluster": make_cert(tmp_path / "other"),
        # signed by a CA we do not know
        "another CA": make_cert(tmp_path / "signed", ca=other_ca, cn="node"),
    }


@pytest.mark.parametrize("stranger", ["another cluster", "another CA"])
def test_a_server_with_an_untrusted_certificate_is_refused(
    cluster_cert: TLSConfig, tmp_path: Path, servers: list[Server], stranger: str
) -> None:
    server = Server(make_server_context(_strangers(tmp_path)[stranger]))
    servers.append(server)
    assert _python_refuses(cluster_cert, server.address)
    with _tcp(server.address) as sock, pytest.raises(ssl.SSLCertVerificationError):
        _native(cluster_cert).connect(sock.fileno(), 5.0)


def test_a_server_certificate_for_another_name_is_refused(
    tmp_path: Path, servers: list[Server]
) -> None:
    """Same CA, but the server's certificate does not carry the name clients check."""
    ca = make_ca(tmp_path / "ca")
    ours = make_cert(tmp_path, ca=ca, cn="node")
    theirs = make_cert(tmp_path, ca=ca, cn="imposter", names=("elsewhere",), ips=())
    server = Server(make_server_context(theirs))
    servers.append(server)
    assert _python_refuses(ours, server.address)
    with _tcp(server.address) as sock, pytest.raises(ssl.SSLCertVerificationError):
        _native(ours).connect(sock.fileno(), 5.0)


@pytest.mark.parametrize(("name", "trusted"), [("127.0.0.1", True), ("127.0.0.2", False)])
def test_an_ip_address_as_the_server_name_is_checked_as_python_checks_it(
    cluster_cert: TLSConfig, servers: list[Server], name: str, trusted: bool
) -> None:
    """The cluster certificate carries IP:127.0.0.1: the name checks against IP SANs."""
    config = TLSConfig(cluster_cert.cert, cluster_cert.key, server_name=name)
    server = Server(make_server_context(cluster_cert))
    servers.append(server)
    assert _python_refuses(config, server.address) is not trusted
    with _tcp(server.address) as sock:
        if trusted:
            _native(config).connect(sock.fileno(), 5.0).close()
        else:
            with pytest.raises(ssl.SSLCertVerificationError):
                _native(config).connect(sock.fileno(), 5.0)


def test_a_server_without_tls_is_an_ssl_error(
    cluster_cert: TLSConfig, servers: list[Server]
) -> None:
    server = Server(None)  # echoes our ClientHello back: not a TLS server
    servers.append(server)
    with _tcp(server.address) as sock, pytest.raises(ssl.SSLError):
        _native(cluster_cert).connect(sock.fileno(), 5.0)


def test_a_server_that_never_answers_times_the_handshake_out(
    cluster_cert: TLSConfig, servers: list[Server]
) -> None:
    server = Server(None, echo=False)  # accepts and holds the connection, silent
    servers.append(server)
    with _tcp(server.address) as sock, pytest.raises(TimeoutError):
        _native(cluster_cert).connect(sock.fileno(), 0.3)


def test_front_dial_refuses_an_untrusted_peer(
    cluster_cert: TLSConfig, tmp_path: Path, servers: list[Server]
) -> None:
    server = Server(make_server_context(_strangers(tmp_path)["another cluster"]))
    servers.append(server)
    front = Front("127.0.0.1:0", "127.0.0.1:1", engine_features(), tls=cluster_cert)
    front.start()
    try:
        assert front._tls_dialer is not None
        with pytest.raises(ssl.SSLCertVerificationError):
            front.dial(server.address)
        assert front.stats.native_tls_dials == 0 and not front._tls_pipes
    finally:
        front.stop()


# -- The relay ------------------------------------------------------------------------


def _receive(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        assert chunk, f"closed after {len(got)} of {size} bytes"
        got += chunk
    return bytes(got)


class Pipe:
    """A session to an echo server, relayed in C on a thread; `engine` is the outer end."""

    def __init__(self, config: TLSConfig, address: str) -> None:
        sock = _tcp(address)
        session = _native(config).connect(sock.fileno(), 5.0)
        self.engine, inner = socket.socketpair()
        tcp, plain = sock.detach(), inner.detach()
        del tcp  # the relay closes it
        self.stop_r, self.stop_w = os.pipe()
        self.result: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(session.relay(plain, self.stop_r)), daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        os.write(self.stop_w, b"x")
        self.thread.join(5.0)
        self.engine.close()
        os.close(self.stop_r)
        os.close(self.stop_w)


@pytest.fixture
def echo(cluster_cert: TLSConfig, servers: list[Server]) -> Server:
    server = Server(make_server_context(cluster_cert))
    servers.append(server)
    return server


@pytest.mark.parametrize("size", [1, 16_383, 16_385, 700_000, 3_000_000])
def test_every_byte_comes_back_in_order(cluster_cert: TLSConfig, echo: Server, size: int) -> None:
    """Sizes past a TLS record and past the relay's buffers and the sockets': the relay
    must hold what it cannot write yet, in both directions at once."""
    pipe = Pipe(cluster_cert, echo.address)
    try:
        data = secrets.token_bytes(size)
        sender = threading.Thread(target=pipe.engine.sendall, args=(data,))
        sender.start()
        assert _receive(pipe.engine, size) == data
        sender.join()
    finally:
        pipe.close()
    assert pipe.result == [0] and not pipe.thread.is_alive()
    assert not echo.errors


def test_the_engine_closing_ends_the_pipe(cluster_cert: TLSConfig, echo: Server) -> None:
    pipe = Pipe(cluster_cert, echo.address)
    pipe.engine.sendall(b"last words")
    assert _receive(pipe.engine, 10) == b"last words"
    pipe.engine.shutdown(socket.SHUT_RDWR)
    pipe.thread.join(5.0)
    assert not pipe.thread.is_alive() and pipe.result == [0]
    pipe.close()


def test_the_peer_closing_ends_the_pipe(cluster_cert: TLSConfig, echo: Server) -> None:
    pipe = Pipe(cluster_cert, echo.address)
    pipe.engine.sendall(b"x")
    assert _receive(pipe.engine, 1) == b"x"
    for conn in echo.open_connections():
        conn.shutdown(socket.SHUT_RDWR)
    assert pipe.engine.recv(1) == b""  # end of stream, not a hang
    pipe.thread.join(5.0)
    assert not pipe.thread.is_alive()
    pipe.close()


def test_stop_ends_an_idle_pipe(cluster_cert: TLSConfig, echo: Server) -> None:
    pipe = Pipe(cluster_cert, echo.address)
    os.write(pipe.stop_w, b"x")
    pipe.thread.join(5.0)
    assert not pipe.thread.is_alive() and pipe.result == [0]
    assert pipe.engine.recv(1) == b""
    pipe.close()


# -- A cluster ------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["native", "loop"])
def tls_cluster(
    tmp_path: Path, cluster_cert: TLSConfig, request: pytest.FixtureRequest
) -> Iterator[list[tuple[Node, Front]]]:
    with fronted_cluster(
        tmp_path,
        lambda i: f"127.0.0.1:{_free_port()}",
        tls=cluster_cert,
        native_tls=request.param,
    ) as made:
        yield made


def test_writes_replicate_over_tls_pipes(
    tls_cluster: list[tuple[Node, Front]], cluster_cert: TLSConfig
) -> None:
    """With the TLS in C (the default) and with `native_tls=False` (the loop's SSL): the
    rows written through the first leader are there through the next one."""
    addresses = [front.address for _, front in tls_cluster]
    native = tls_cluster[0][1]._tls_dialer is not None
    with SyncClient(addresses, tls=cluster_cert) as client:
        wait_for(lambda: client.leader() is not None, 10.0, "a leader")
        for node, front in tls_cluster[1:]:
            client.add(node.id, front.address, P.VOTER)
        conn = cowsqlpy.connect(addresses, database="tlsc", autocommit=True, tls=cluster_cert)
        try:
            cur = conn.cursor()
            cur.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, v BLOB)")
            # Rows past a TLS record and the relay's buffer: an append is many reads.
            cur.executemany("INSERT INTO t VALUES (?, ?)", [(n, bytes(300_000)) for n in range(5)])
            target = tls_cluster[2][0].id
            transfer_leadership(client, target)
            wait_for(
                lambda: (leader := client.leader()) is not None and leader.id == target,
                10.0,
                "the new leader",
            )
            cur.execute("INSERT INTO t VALUES (5, x'00')")  # through the new leader's Raft
            cur.execute("SELECT count(*), sum(length(v)) FROM t")
            assert cur.fetchone() == (6, 5 * 300_000 + 1)
        finally:
            conn.close()
    for node, front in tls_cluster:
        assert node.dial_calls >= 1
        if native:
            assert front.stats.native_tls_dials >= 1
        else:
            assert front.stats.native_tls_dials == 0 and not front._tls_pipes


def test_stop_ends_the_fronts_tls_pipes(tmp_path: Path, cluster_cert: TLSConfig) -> None:
    with fronted_cluster(
        tmp_path, lambda i: f"127.0.0.1:{_free_port()}", tls=cluster_cert
    ) as tls_cluster:
        _stop_ends_pipes(tls_cluster, cluster_cert)


def _stop_ends_pipes(tls_cluster: list[tuple[Node, Front]], cluster_cert: TLSConfig) -> None:
    addresses = [front.address for _, front in tls_cluster]
    with SyncClient(addresses, tls=cluster_cert) as client:
        wait_for(lambda: client.leader() is not None, 10.0, "a leader")
        for node, front in tls_cluster[1:]:
            client.add(node.id, front.address, P.VOTER)
    front = tls_cluster[0][1]
    assert front._tls_dialer is not None
    wait_for(lambda: len(front._tls_pipes) >= 2, 10.0, "the leader's pipes to both peers")
    pipes = list(front._tls_pipes)
    front.stop()
    assert not any(p.thread.is_alive() for p in pipes)
    assert not front._tls_pipes
    with pytest.raises(OSError):
        front.dial(tls_cluster[1][1].address)  # a stopped front opens no more pipes
    front.start()  # and one started again does
    with front.dial(tls_cluster[1][1].address):
        pass


# -- Without OpenSSL ------------------------------------------------------------------


def test_a_binding_without_openssl_falls_back_with_a_warning(
    cluster_cert: TLSConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    peer = Front("127.0.0.1:0", "127.0.0.1:1", engine_features(), tls=cluster_cert)
    peer.start()
    monkeypatch.setattr(node_module, "tls_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="cowsqlpy.front"):
        front = Front("127.0.0.1:0", "127.0.0.1:1", engine_features(), tls=cluster_cert)
    front.start()
    try:
        assert front._tls_dialer is None
        assert any("stay on its event loop" in r.getMessage() for r in caplog.records)
        with front.dial(peer.address):  # the loop's SSL: a TLS connection all the same
            pass
        assert front.stats.native_tls_dials == 0
        wait_for(lambda: peer.stats.accepted == 1, 10.0, "the peer to accept the TLS dial")
    finally:
        front.stop()
        peer.stop()


def test_the_environment_turns_the_tls_in_c_off(
    cluster_cert: TLSConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Front("127.0.0.1:0", "127.0.0.1:1", engine_features(), tls=cluster_cert)._tls_dialer
    monkeypatch.setenv("COWSQLPY_NATIVE_TLS", "0")
    front = Front("127.0.0.1:0", "127.0.0.1:1", engine_features(), tls=cluster_cert)
    assert front._tls_dialer is None


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_the_relay_source_builds_without_openssl(tmp_path: Path) -> None:
    """What a machine without libssl-dev compiles: the stubs, with no OpenSSL header."""
    done = subprocess.run(
        ["cc", "-Wall", "-Werror", "-I", str(_ROOT / "native"), "-c",
         str(_ROOT / "native" / "tls_relay.c"), "-o", str(tmp_path / "tls_relay.o")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
