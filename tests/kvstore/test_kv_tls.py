"""kvstore over TLS: ``cowsql://...?cert=&key=`` against nodes that speak only mutual TLS
(go-cowsql's scheme: one cluster certificate), and ``etcd://user:pw@...?ca=&cert=&key=``
against an etcd with client-certificate auth and users; wrong or missing credentials get
clean errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import kvstore
from cowsqlpy.app import App
from cowsqlpy.tls import TLSConfig, make_cert
from kvstore.backends.etcd import EtcdBackend
from kvstore.testing import EtcdCluster, etcd_available


@pytest.fixture
def tls_node(tmp_path: Path) -> Iterator[tuple[App, TLSConfig]]:
    tls = make_cert(tmp_path / "cert")
    app = App(tmp_path / "node", "127.0.0.1:0", tls=tls, network_latency=0.005)
    try:
        app.ready(20)
        yield app, tls
    finally:
        app.close(handover=False)


def test_cowsql_url_with_the_cluster_certificate(tls_node: tuple[App, TLSConfig]) -> None:
    app, tls = tls_node
    url = f"cowsql://{app.address}/kvtls?cert={tls.cert}&key={tls.key}&private=1"
    with kvstore.open(url) as kv, kv.watch_prefix("t/") as events:
        r = kv.put("t/a", b"over tls")
        assert kv.get("t/a") == b"over tls"
        ev = events.get(timeout=30)
        assert ev is not None and ev.kv.key == b"t/a" and ev.revision == r.revision


def test_cowsql_url_without_the_certificate_fails_cleanly(tls_node: tuple[App, TLSConfig]) -> None:
    app, tls = tls_node
    with pytest.raises(kvstore.KVError):   # the node's front refuses a plain client
        kvstore.open(f"cowsql://{app.address}/kvtls?timeout=2&private=1")
    with pytest.raises(kvstore.InvalidArgument, match="both cert= and key="):
        kvstore.open(f"cowsql://{app.address}/kvtls?cert={tls.cert}")
    with pytest.raises(kvstore.InvalidArgument, match="go with cert="):
        kvstore.open(f"cowsql://{app.address}/kvtls?ca={tls.cert}")


@pytest.fixture(scope="module")
def secure_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd is not installed")
    base = tmp_path_factory.mktemp("etcd-tls")
    tls = make_cert(base / "cert")
    # simple auth tokens live 1 s: the backend must authenticate again by itself
    with EtcdCluster(base, 1, tls=tls, auth=("root", "s3cret"),
                     flags=["--auth-token-ttl=1"]) as c:
        c.etcdctl("user", "add", "nobody", "--new-user-password=pw", "--interactive=false")
        yield c


def test_etcd_over_tls_with_a_user(secure_etcd: EtcdCluster) -> None:
    with kvstore.open(secure_etcd.url) as kv, kv.watch_prefix("s/") as events:
        r = kv.put("s/a", b"1")
        ev = events.get(timeout=30)
        assert ev is not None and ev.kv.key == b"s/a" and ev.revision == r.revision
        lease = kv.grant(30)
        assert kv.keepalive(lease) >= 30        # a gRPC stream: the token rides along
        with kv.lock("l", timeout=30):
            assert kv.get("s/a") == b"1"
        backend = kv.backend
        assert isinstance(backend, EtcdBackend)
        before = backend.authentications
        time.sleep(2.5)                         # the token expired meanwhile
        assert kv.get("s/a") == b"1"
        assert backend.authentications > before


def test_etcd_refuses_wrong_credentials_cleanly(secure_etcd: EtcdCluster) -> None:
    url = secure_etcd.url
    with pytest.raises(kvstore.AuthenticationError):
        kvstore.open(url.replace("root:s3cret@", "root:wrong@"))
    # no user: etcd takes the client certificate's CN ("cowsql") as the user, who has no role
    with kvstore.open(url.replace("root:s3cret@", "")) as anonymous, \
            pytest.raises(kvstore.PermissionDenied):
        anonymous.get("s/a")
    with kvstore.open(url.replace("root:s3cret@", "nobody:pw@")) as nobody, \
            pytest.raises(kvstore.PermissionDenied):
        nobody.put("s/b", b"no role, no right")
    plain = url.split("?")[0].replace("root:s3cret@", "") + "?timeout=2"
    with kvstore.open(plain) as kv, pytest.raises(kvstore.KVError):
        kv.get("s/a")                           # no TLS: the server never answers it
    with pytest.raises(kvstore.InvalidArgument, match="both cert= and key="):
        kvstore.open(url.split("?")[0] + "?cert=x")
    with pytest.raises(kvstore.ConfigurationError, match="cannot read /nonexistent"):
        kvstore.open(url.split("?")[0] + "?ca=/nonexistent")
