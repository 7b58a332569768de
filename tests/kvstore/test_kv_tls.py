"""kvstore over TLS: ``cowsql://...?cert=&key=`` against nodes that speak only mutual TLS
(go-cowsql's scheme: one cluster certificate); a client without it gets a clean error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import kvstore
from cowsqlpy.app import App
from cowsqlpy.tls import TLSConfig, make_cert


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
