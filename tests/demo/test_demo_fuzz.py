"""A hypothesis fuzzer for the demo's HTTP API: random methods, paths (any bytes,
percent-encoded or not), query parameters, headers and bodies, sent raw. Every answer is
an HTTP status below 500 with a JSON body when it is an error, and the node stays healthy.
Bounded by COWSQLPY_FUZZ_EXAMPLES_HTTP (default 600)."""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from demo.testing import DemoCluster, request

EXAMPLES = int(os.environ.get("COWSQLPY_FUZZ_EXAMPLES_HTTP", "600"))


@pytest.fixture(scope="module")
def demo_fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCluster]:
    c = DemoCluster(tmp_path_factory.mktemp("demo-fuzz"), 1)
    try:
        yield c.start()
    finally:
        c.close()


PARAMS = st.sampled_from(["prefix", "start", "end", "limit", "rev", "keys_only", "count_only", "prev", "ttl",
                          "timeout", "x", "", "%00"])
VALUES = st.one_of(st.sampled_from(["", "0", "1", "-1", "1e20", "18446744073709551616", "%00", "%ff", "a%2Fb",
                                    "9" * 30, "true", "nan", "inf"]), st.text(max_size=20))
SEGMENT = st.one_of(st.binary(max_size=30).map(lambda b: urllib.parse.quote_from_bytes(b, safe="")),
                    st.sampled_from(["", "_cluster", "_health", "_static/x", "_openapi.json", "%00demo/nodes/x", "..", "a/b"]))
HEADER_NAMES = st.sampled_from(["If-Match", "If-None-Match", "Content-Type", "Accept", "Last-Event-ID", "X-Any",
                                "Transfer-Encoding", "Expect"])
HEADER_VALUES = st.one_of(st.sampled_from(["*", '"1"', "x", "chunked", "100-continue", "text/event-stream"]),
                          st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30))


@st.composite
def http_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "PUT", "DELETE", "HEAD", "POST", "PATCH", "OPTIONS"]))
    path = "/" + "/".join(draw(st.lists(SEGMENT, max_size=3)))
    pairs = draw(st.lists(st.tuples(PARAMS, VALUES), max_size=4))
    query = "&".join(f"{k}={urllib.parse.quote(v, safe='%')}" for k, v in pairs)
    target = path + ("?" + query if query or draw(st.booleans()) else "")
    headers = draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=3))
    body = draw(st.binary(max_size=200))
    lines = [f"{method} {target} HTTP/1.1", "Host: fuzz", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers if k not in ("Transfer-Encoding",)]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _send(c: DemoCluster, data: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = c.nodes[0].api.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(data)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
    return int(lines[0].split()[1]), headers, body


@settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=http_requests())
def test_every_answer_is_a_clean_status(demo_fuzz: DemoCluster, data: bytes) -> None:
    status, headers, body = _send(demo_fuzz, data)
    assert status < 500, (data, status, body[:300])
    if status >= 400 and not data.startswith(b"HEAD"):
        assert headers.get("content-type", "").startswith("application/json"), (data, headers)
        assert "error" in json.loads(body), (data, body[:300])


def test_the_fuzzed_node_is_healthy(demo_fuzz: DemoCluster) -> None:
    status, _, body = request("GET", demo_fuzz.nodes[0].url + "/_health")
    assert status == 200, body
    status, _, body = request("GET", demo_fuzz.nodes[0].url + "/_cluster")
    assert status == 200 and all(n["api"] for n in json.loads(body)["nodes"])
