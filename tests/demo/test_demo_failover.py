"""Node loss: SIGKILL of the leader's process loses no acknowledged PUT and the
others serve again; SIGTERM hands over and exits 0; no quorum answers 503."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from cowsqlpy.testing import wait_for
from demo.testing import DemoCluster, request


class Writers:
    """Threads that PUT unique keys through the given nodes until stopped."""

    def __init__(self, c: DemoCluster, via: list[int], n: int = 4) -> None:
        self.c, self.via = c, via
        self.acked: list[str] = []
        self.failed_status: list[int] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, w: int) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            key = f"w{w}-{seq}"
            node = self.c.nodes[self.via[seq % len(self.via)]]
            try:
                status, _, _ = request("PUT", f"{node.url}/{key}", key.encode(), timeout=15)
            except OSError:
                continue            # no answer: not acknowledged
            if status in (200, 201):
                self.acked.append(key)
            else:
                self.failed_status.append(status)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def _check_all(c: DemoCluster, i: int, keys: list[str]) -> None:
    data = json.loads(request("GET", c.nodes[i].url + "/?prefix=w", timeout=30)[2])
    present = {kv["key"]: kv["value"] for kv in data["kvs"]}
    missing = [k for k in keys if present.get(k) != k]
    assert not missing, f"{len(missing)} acknowledged PUTs lost, e.g. {missing[:5]}"


def test_sigkill_leader_loses_no_acknowledged_put(
        demo_cluster_factory: Callable[..., DemoCluster]) -> None:
    c = demo_cluster_factory(3)
    leader = c.wait_leader()
    others = [i for i in range(3) if i != leader]
    writers = Writers(c, [leader, *others])
    wait_for(lambda: len(writers.acked) >= 50, 30, "writes before the kill")
    c.nodes[leader].kill()
    before = len(writers.acked)
    wait_for(lambda: len(writers.acked) >= before + 50, 30, "writes after the kill")
    writers.finish()
    new_leader = c.wait_leader(exclude=leader)
    assert new_leader in others
    for i in others:
        assert request("PUT", c.nodes[i].url + "/after", str(i).encode())[0] in (200, 201)
        assert request("GET", c.nodes[i].url + "/after")[0] == 200
        _check_all(c, i, writers.acked)
    assert not [s for s in writers.failed_status if s != 503], writers.failed_status
    # the status endpoint names the dead node as unhealthy
    nodes = json.loads(request("GET", c.nodes[others[0]].url + "/_cluster")[2])["nodes"]
    dead = [n for n in nodes if n["db"] == c.nodes[leader].db]
    assert dead and dead[0]["healthy"] is not True and not dead[0]["leader"]


def test_sigterm_hands_over_and_exits_cleanly(
        demo_cluster_factory: Callable[..., DemoCluster]) -> None:
    c = demo_cluster_factory(3)
    leader = c.wait_leader()
    others = [i for i in range(3) if i != leader]
    writers = Writers(c, others)
    wait_for(lambda: len(writers.acked) >= 30, 30, "writes before the stop")
    assert c.nodes[leader].terminate() == 0
    before = len(writers.acked)
    wait_for(lambda: len(writers.acked) >= before + 30, 30, "writes after the stop")
    writers.finish()
    assert writers.failed_status == []         # a graceful stop fails no request
    assert c.wait_leader(exclude=leader) in others
    _check_all(c, others[0], writers.acked)
    assert b"Traceback" not in c.nodes[leader].log.read_bytes()


def test_no_quorum_is_503_with_retry_after(
        demo_cluster_factory: Callable[..., DemoCluster]) -> None:
    c = demo_cluster_factory(3, request_timeout=1.5)
    request("PUT", c.nodes[0].url + "/k", b"v")
    c.nodes[1].kill()
    c.nodes[2].kill()
    for method, path, body in (("PUT", "/k", b"x"), ("GET", "/k", None),
                               ("GET", "/_health", None), ("GET", "/_cluster", None)):
        status, headers, raw = request(method, c.nodes[0].url + path, body, timeout=30)
        assert status == 503, (method, path, raw[:200])
        assert headers["Retry-After"].isdigit()
        assert json.loads(raw)["error"]
