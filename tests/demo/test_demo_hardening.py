"""The demo's HTTP API against hostile clients (issue 16): the hidden node registry stays
hidden, out-of-range integers are 400s, aiohttp's own parser errors are JSON, watches are
capped, and a few hundred slow clients neither starve others nor stay for ever."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from cowsqlpy.testing import wait_for
from demo.api import MAX_WATCHES
from demo.server import HEADER_TIMEOUT
from demo.testing import DemoCluster, request


@pytest.fixture(scope="module")
def demo1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCluster]:
    c = DemoCluster(tmp_path_factory.mktemp("demo1"), 1)
    try:
        yield c.start()
    finally:
        c.close()


def _url(c: DemoCluster, path: str) -> str:
    return c.nodes[0].url + path


def _address(c: DemoCluster) -> tuple[str, int]:
    host, port = c.nodes[0].api.rsplit(":", 1)
    return host, int(port)


def _raw_http(c: DemoCluster, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; the one response, read up to its Content-Length."""
    with socket.create_connection(_address(c), timeout=10) as s:
        s.sendall(data)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            assert chunk, f"closed without a response after {got!r}"
            got += chunk
        head, _, body = got.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
        while len(body) < int(headers.get("content-length", "0")):
            chunk = s.recv(65536)
            assert chunk, "response cut short"
            body += chunk
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("prefix", ["%00", "%00demo", "%00demo/nodes/"])
def test_prefix_below_user_keys_reaches_no_registry_entry(demo1: DemoCluster, prefix: str) -> None:
    status, _, body = request("GET", _url(demo1, f"/?prefix={prefix}"))
    assert status == 200 and json.loads(body)["kvs"] == []
    status, _, body = request("DELETE", _url(demo1, f"/?prefix={prefix}"))
    assert status == 200 and json.loads(body)["deleted"] == 0
    status, _, body = request("GET", _url(demo1, "/_cluster"))
    assert status == 200 and all(n["api"] is not None for n in json.loads(body)["nodes"])


def test_prefix_listing_still_works(demo1: DemoCluster) -> None:
    assert request("PUT", _url(demo1, "/pfx/a"), b"1")[0] in (200, 201)
    status, _, body = request("GET", _url(demo1, "/?prefix=pfx/"))
    assert status == 200 and [kv["key"] for kv in json.loads(body)["kvs"]] == ["pfx/a"]


@pytest.mark.parametrize("query", ["/?prefix=a&rev=100000000000000000000", "/?prefix=a&limit=18446744073709551616",
                                   "/?prefix=a&rev=1e20", "/k?rev=9223372036854775808", "/?prefix=a&limit=" + "9" * 5000,
                                   "/?prefix=a&watch=1&rev=99999999999999999999999"])
def test_out_of_range_integers_are_400_not_503(demo1: DemoCluster, query: str) -> None:
    status, headers, body = request("GET", _url(demo1, query))
    assert status == 400, body
    assert "Retry-After" not in headers and json.loads(body)["error"] == "bad_parameter"


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS hello to the HTTP port
    b"GET / HTTP/9.9\r\n\r\n",
])
def test_aiohttp_parser_errors_are_json(demo1: DemoCluster, raw: bytes) -> None:
    status, headers, body = _raw_http(demo1, raw)
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    assert set(json.loads(body)) >= {"error", "message"}


def test_oversized_body_is_413_json(demo1: DemoCluster) -> None:
    status, headers, body = _raw_http(demo1, b"PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
    assert status == 413 and json.loads(body)["error"] == "value_too_large"


def test_concurrent_watches_are_capped(demo1: DemoCluster) -> None:
    watchers = []
    try:
        for _ in range(MAX_WATCHES):
            s = socket.create_connection(_address(demo1), timeout=30)
            s.sendall(b"GET /?prefix=watched/&watch=1&timeout=120 HTTP/1.1\r\nHost: x\r\n\r\n")
            watchers.append(s)

        def refused() -> bool:
            status, headers, body = request("GET", _url(demo1, "/?prefix=other/&watch=1&timeout=0.05"))
            assert status in (200, 429), body
            return status == 429 and headers.get("Retry-After") == "1" and json.loads(body)["error"] == "too_many_watches"

        wait_for(refused, 30.0, "a watch beyond the cap to be refused")
        assert request("GET", _url(demo1, "/k-not-there"))[0] == 404  # plain requests still served
    finally:
        for s in watchers:
            s.close()
    wait_for(lambda: request("GET", _url(demo1, "/?prefix=other/&watch=1&timeout=0.05"))[0] == 200, 30.0,
             "watches to be served again")


def test_slow_clients_do_not_starve_others_and_are_cut(demo1: DemoCluster) -> None:
    slow = []
    try:
        for _ in range(300):
            s = socket.create_connection(_address(demo1), timeout=30)
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
            slow.append(s)
        for i in range(20):  # everyone else is answered meanwhile
            assert request("PUT", _url(demo1, f"/busy/{i}"), b"v", timeout=10)[0] in (200, 201)
            assert request("GET", _url(demo1, f"/busy/{i}"), timeout=10)[2] == b"v"

        def cut(s: socket.socket) -> bool:
            try:
                return s.recv(1) == b""
            except ConnectionResetError:
                return True

        for s in slow:
            s.settimeout(HEADER_TIMEOUT + 20)
            assert cut(s)
    finally:
        for s in slow:
            s.close()
