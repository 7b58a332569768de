"""The demo with ``--cert/--key``: nodes speak mutual TLS to each other and to engine
clients, the API is HTTPS and asks for a certificate the cluster trusts; plain HTTP, a
client without the certificate and a plain engine client are refused cleanly."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy.retry import RetryPolicy
from cowsqlpy.tls import make_cert
from demo.testing import DemoCluster, request


def test_a_tls_demo_cluster(demo_cluster_factory: Callable[..., DemoCluster], tmp_path: Path) -> None:
    tls = make_cert(tmp_path / "cert")
    c = demo_cluster_factory(3, tls=tls)
    a, b = c.nodes[0], c.nodes[1]
    assert a.url.startswith("https://")

    status, _, body = a.request("PUT", "/secret", b"over https")
    assert status == 201, body
    status, _, body = b.request("GET", "/secret")
    assert (status, body) == (200, b"over https")

    status, _, body = b.request("GET", "/_cluster")
    cluster = json.loads(body)
    assert status == 200 and sorted(n["api"] for n in cluster["nodes"]) == sorted(n.api for n in c.nodes)
    assert all(n["healthy"] is True for n in cluster["nodes"])   # probes between nodes: HTTPS

    with pytest.raises(OSError):      # plain HTTP on the HTTPS port
        request("GET", f"http://{a.api}/secret", timeout=5)
    no_cert = ssl.create_default_context(cafile=tls.ca_path)   # trusts the server, shows nothing
    with pytest.raises(OSError):
        urllib.request.urlopen(f"https://{a.api}/secret", timeout=5, context=no_cert)

    policy = RetryPolicy(deadline=2.0, attempt_timeout=1.0, connect_timeout=1.0)
    plain = cowsqlpy.connect([a.db], database="demo", policy=policy)
    with pytest.raises(cowsqlpy.OperationalError):    # the engine's front wants TLS too
        plain.execute("SELECT 1")
    plain.close()
    over_tls = cowsqlpy.connect([a.db], database="demo", tls=tls)
    assert over_tls.execute("SELECT 1").fetchall() == [(1,)]
    over_tls.close()


def test_tls_flags_go_together(tmp_path: Path) -> None:
    from demo.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--api", "127.0.0.1:1", "--db", "127.0.0.1:2", "--cert", str(tmp_path / "c.pem")])
    assert exit_.value.code == 2


def test_server_only_https_takes_clients_without_a_certificate(
        demo_cluster_factory: Callable[..., DemoCluster], tmp_path: Path) -> None:
    tls = make_cert(tmp_path / "cert")
    c = demo_cluster_factory(1, tls=tls, extra=["--api-tls", "server"])
    no_cert = ssl.create_default_context(cafile=tls.ca_path)
    req = urllib.request.Request(f"https://{c.nodes[0].api}/open", data=b"1", method="PUT")
    with urllib.request.urlopen(req, timeout=10, context=no_cert) as r:
        assert r.status == 201
    with pytest.raises(OSError):      # still HTTPS only
        request("GET", f"http://{c.nodes[0].api}/open", timeout=5)
