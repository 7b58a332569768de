"""Apps with tls=: the node's front and Raft speak mutual TLS, and so do the App's own
client calls; a client without the cluster certificate gets a clean error."""

from __future__ import annotations

from pathlib import Path

import pytest

import cowsqlpy
from cowsqlpy.protocol import VOTER
from cowsqlpy.retry import RetryPolicy
from cowsqlpy.testing import wait_for
from cowsqlpy.tls import make_cert


def test_a_tls_cluster_of_apps(app_factory, tmp_path: Path) -> None:
    tls = make_cert(tmp_path / "cert")
    a = app_factory("a", tls=tls)
    a.ready(20)
    b = app_factory("b", cluster=[a.address], tls=tls)
    b.ready(20)
    c = app_factory("c", cluster=[a.address], tls=tls)
    c.ready(20)
    with a.client() as admin:
        wait_for(lambda: sorted(n.role for n in admin.cluster()) == [VOTER] * 3, 30, "3 voters over TLS")
    assert a.node.front is not None and a.node.front.address == a.address

    conn = b.open("tls", autocommit=True)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("INSERT INTO t VALUES ('over tls')")
    conn.close()
    remote = cowsqlpy.connect([c.address], database="tls", tls=tls)
    assert remote.execute("SELECT v FROM t").fetchall() == [("over tls",)]
    remote.close()

    plain = cowsqlpy.connect([a.address], database="tls",
                             policy=RetryPolicy(deadline=2.0, attempt_timeout=1.0, connect_timeout=1.0))
    with pytest.raises(cowsqlpy.OperationalError):
        plain.execute("SELECT v FROM t")
    plain.close()
