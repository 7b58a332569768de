"""The demo's HTTP API on a real 3-process cluster: keys across nodes, ranges,
compare-and-set, watches, temporary keys, cluster/health, every bad request."""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse

import pytest

from cowsqlpy.testing import wait_for
from demo.testing import DemoCluster, request
from kvstore import MAX_VALUE_BYTES


def url(c: DemoCluster, i: int, path: str) -> str:
    return c.nodes[i].url + path


def test_put_get_delete_across_nodes(demo3: DemoCluster) -> None:
    status, headers, body = request("PUT", url(demo3, 0, "/my-key"), b"my-value")
    assert status == 201, body
    put = json.loads(body)
    assert put["created"] is True and headers["ETag"] == f'"{put["revision"]}"'
    for i in (1, 2):
        status, headers, body = request("GET", url(demo3, i, "/my-key"))
        assert (status, body) == (200, b"my-value")
        assert headers["ETag"] == f'"{put["revision"]}"' and headers["X-Version"] == "1"
    status, _, body = request("PUT", url(demo3, 1, "/my-key"), b"v2")
    assert status == 200 and json.loads(body)["created"] is False
    assert request("GET", url(demo3, 2, "/my-key"))[2] == b"v2"
    status, _, body = request("DELETE", url(demo3, 2, "/my-key"))
    assert status == 200 and json.loads(body)["deleted"] == 1
    status, _, body = request("GET", url(demo3, 0, "/my-key"))
    assert status == 404 and json.loads(body)["error"] == "key_not_found"
    assert request("DELETE", url(demo3, 0, "/my-key"))[0] == 404


def test_keys_with_slashes_binary_and_empty_values(demo3: DemoCluster) -> None:
    assert request("PUT", url(demo3, 0, "/a/b/c"), b"abc")[0] == 201
    assert request("GET", url(demo3, 1, "/a/b/c"))[2] == b"abc"
    assert request("PUT", url(demo3, 0, "/a%2Fb"), b"encoded")[0] == 201
    assert request("GET", url(demo3, 1, "/a/b"))[2] == b"encoded"   # %2F is a '/'
    assert request("PUT", url(demo3, 0, "/bin"), bytes(range(256)))[0] == 201
    assert request("GET", url(demo3, 2, "/bin"))[2] == bytes(range(256))
    assert request("PUT", url(demo3, 0, "/empty"), b"")[0] == 201
    status, _, body = request("GET", url(demo3, 1, "/empty"))
    assert (status, body) == (200, b"")
    key = "/ключ%20with%20space"
    assert request("PUT", url(demo3, 0, urllib.parse.quote(key)), b"u")[0] == 201
    assert request("GET", url(demo3, 2, urllib.parse.quote(key)))[2] == b"u"


def test_range_listing(demo3: DemoCluster) -> None:
    for k in ("r/1", "r/2", "r/3", "rx", "s"):
        assert request("PUT", url(demo3, 0, "/" + k), k.encode())[0] in (200, 201)
    status, _, body = request("GET", url(demo3, 1, "/?prefix=r/"))
    data = json.loads(body)
    assert status == 200 and [kv["key"] for kv in data["kvs"]] == ["r/1", "r/2", "r/3"]
    assert data["kvs"][0]["value"] == "r/1" and data["count"] == 3 and not data["more"]
    data = json.loads(request("GET", url(demo3, 2, "/?start=r/2&end=s"))[2])
    assert [kv["key"] for kv in data["kvs"]] == ["r/2", "r/3", "rx"]
    data = json.loads(request("GET", url(demo3, 2, "/?prefix=r&limit=2&keys_only=1"))[2])
    assert [kv["key"] for kv in data["kvs"]] == ["r/1", "r/2"] and data["more"]
    assert "value" not in data["kvs"][0] and data["count"] == 4
    data = json.loads(request("GET", url(demo3, 0, "/?prefix=r/&count_only=1"))[2])
    assert data["count"] == 3 and data["kvs"] == []
    # the whole key space lists user keys only (no registry entries)
    data = json.loads(request("GET", url(demo3, 0, "/?prefix="))[2])
    assert all(not kv["key"].startswith(("\x00", "_")) for kv in data["kvs"])
    # binary values come base64-encoded
    request("PUT", url(demo3, 0, "/r-bin"), b"\xff\xfe")
    data = json.loads(request("GET", url(demo3, 0, "/?prefix=r-bin"))[2])
    assert data["kvs"][0]["value_b64"] == "//4="
    # read at a past revision
    rev = json.loads(request("PUT", url(demo3, 0, "/r/1"), b"new")[2])["revision"]
    old = json.loads(request("GET", url(demo3, 1, f"/?prefix=r/1&rev={rev - 1}"))[2])
    assert old["kvs"][0]["value"] == "r/1"
    assert request("GET", url(demo3, 1, f"/r/1?rev={rev - 1}"))[2] == b"r/1"
    # delete a range in one revision
    status, _, body = request("DELETE", url(demo3, 2, "/?prefix=r/"))
    assert status == 200 and json.loads(body)["deleted"] == 3
    assert json.loads(request("GET", url(demo3, 0, "/?prefix=r/"))[2])["count"] == 0


def test_compare_and_set(demo3: DemoCluster) -> None:
    assert request("PUT", url(demo3, 0, "/cas"), b"one")[0] == 201
    status, _, body = request("PUT", url(demo3, 1, "/cas?prev=wrong"), b"two")
    assert status == 409
    err = json.loads(body)
    assert err["error"] == "compare_failed" and err["current"]["value"] == "one"
    assert request("PUT", url(demo3, 1, "/cas?prev=one"), b"two")[0] == 200
    assert request("GET", url(demo3, 2, "/cas"))[2] == b"two"
    # If-Match on the mod revision (the ETag)
    etag = request("GET", url(demo3, 2, "/cas"))[1]["ETag"]
    stale = f'"{int(etag.strip(chr(34))) - 1}"'
    assert request("PUT", url(demo3, 0, "/cas"), b"x", {"If-Match": stale})[0] == 409
    status, headers, _ = request("PUT", url(demo3, 0, "/cas"), b"three", {"If-Match": etag})
    assert status == 200 and headers["ETag"] != etag
    assert request("DELETE", url(demo3, 1, "/cas"), headers={"If-Match": etag})[0] == 409
    # create-only and must-exist
    assert request("PUT", url(demo3, 0, "/cas"), b"x", {"If-None-Match": "*"})[0] == 409
    assert request("PUT", url(demo3, 0, "/cas-new"), b"x", {"If-None-Match": "*"})[0] == 201
    assert request("PUT", url(demo3, 0, "/cas-absent"), b"x", {"If-Match": "*"})[0] == 409
    assert request("PUT", url(demo3, 0, "/cas-absent?prev=x"), b"y")[0] == 409
    # compare-and-delete
    assert request("DELETE", url(demo3, 1, "/cas?prev=nope"))[0] == 409
    assert request("DELETE", url(demo3, 1, "/cas?prev=three"))[0] == 200
    assert request("GET", url(demo3, 2, "/cas"))[0] == 404


def test_concurrent_cas_increments_are_exact(demo3: DemoCluster) -> None:
    request("PUT", url(demo3, 0, "/counter"), b"0")
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(5):
                while True:
                    _, h, body = request("GET", url(demo3, i, "/counter"))
                    new = str(int(body) + 1).encode()
                    if request("PUT", url(demo3, i, "/counter"), new,
                               {"If-Match": h["ETag"]})[0] == 200:
                        break
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i % 3,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures
    assert request("GET", url(demo3, 0, "/counter"))[2] == b"30"


def test_watch_long_poll(demo3: DemoCluster) -> None:
    start = json.loads(request("PUT", url(demo3, 0, "/w/a"), b"0")[2])["revision"]
    result: dict[str, object] = {}

    def watch() -> None:
        result["r"] = request("GET", url(demo3, 1, f"/w/a?watch=1&rev={start + 1}&timeout=30"),
                              timeout=40)

    t = threading.Thread(target=watch)
    t.start()
    rev = json.loads(request("PUT", url(demo3, 2, "/w/a"), b"1")[2])["revision"]
    t.join(40)
    status, _, body = result["r"]  # type: ignore[misc]
    data = json.loads(body)
    assert status == 200
    assert [(e["type"], e["value"], e["revision"]) for e in data["events"]] == [("put", "1", rev)]
    assert data["next_rev"] == rev + 1
    # history from a revision, then a prefix watch sees puts and deletes in order
    request("DELETE", url(demo3, 0, "/w/a"))
    request("PUT", url(demo3, 0, "/w/b"), b"b")
    data = json.loads(request("GET", url(demo3, 2, f"/?prefix=w/&watch=1&rev={start}"))[2])
    assert [(e["type"], e["key"]) for e in data["events"]] == [
        ("put", "w/a"), ("put", "w/a"), ("delete", "w/a"), ("put", "w/b")]
    revs = [e["revision"] for e in data["events"]]
    assert revs == sorted(revs) and len(set(revs)) == 4
    # nothing new: an empty answer after the timeout, resumable at next_rev
    data = json.loads(request("GET", url(demo3, 0, f"/w/b?watch=1&rev={revs[-1] + 1}"
                                                   "&timeout=0.3"))[2])
    assert data == {"events": [], "next_rev": revs[-1] + 1}


def test_watch_server_sent_events(demo3: DemoCluster) -> None:
    base = json.loads(request("PUT", url(demo3, 0, "/sse/x"), b"0")[2])["revision"]
    host, port = demo3.nodes[1].api.split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(f"GET /?prefix=sse/&watch=stream&rev={base + 1} HTTP/1.1\r\nHost: x\r\n"
                  "Accept: text/event-stream\r\n\r\n".encode())
        for i in range(1, 4):
            request("PUT", url(demo3, 2, "/sse/x"), str(i).encode())
        buf = b""
        while buf.count(b"\nevent: put") < 3:
            chunk = s.recv(65536)
            assert chunk, buf
            buf += chunk
    head, _, _ = buf.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0] and b"text/event-stream" in head
    datas = [json.loads(line[6:]) for line in buf.split(b"\n") if line.startswith(b"data: ")]
    assert [d["value"] for d in datas] == ["1", "2", "3"]
    ids = [int(line[4:]) for line in buf.split(b"\n") if line.startswith(b"id: ")]
    assert ids == [base + 1, base + 2, base + 3]


def test_temporary_key_expires(demo3: DemoCluster) -> None:
    status, _, body = request("PUT", url(demo3, 0, "/tmp-key?ttl=1"), b"here")
    data = json.loads(body)
    assert status == 201 and data["ttl"] == 1 and data["lease"] > 0
    assert request("GET", url(demo3, 1, "/tmp-key"))[1]["X-Lease"] == str(data["lease"])
    wait_for(lambda: request("GET", url(demo3, 2, "/tmp-key"))[0] == 404, 15,
             "the temporary key to expire")
    # a permanent key is not touched by the same mechanism
    request("PUT", url(demo3, 0, "/perm"), b"p")
    assert request("GET", url(demo3, 0, "/perm"))[0] == 200


def test_cluster_health_openapi(demo3: DemoCluster) -> None:
    status, _, body = request("GET", url(demo3, 2, "/_cluster"))
    data = json.loads(body)
    assert status == 200 and len(data["nodes"]) == 3
    assert {n["db"] for n in data["nodes"]} == {n.db for n in demo3.nodes}
    assert {n["api"] for n in data["nodes"]} == {n.api for n in demo3.nodes}
    assert [n["role"] for n in data["nodes"]] == ["voter"] * 3
    assert all(n["healthy"] for n in data["nodes"])
    leaders = [n for n in data["nodes"] if n["leader"]]
    assert len(leaders) == 1 and leaders[0]["db"] == data["leader"]
    assert data["revision"] >= 1 and data["node"]["api"] == demo3.nodes[2].api
    request("PUT", url(demo3, 0, "/recent-one"), b"r")
    recent = json.loads(request("GET", url(demo3, 1, "/_cluster"))[2])["recent"]
    assert recent[0]["key"] == "recent-one"
    status, _, body = request("GET", url(demo3, 0, "/_health"))
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = request("GET", url(demo3, 0, "/_openapi.json"))
    spec = json.loads(body)
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {"/{key}", "/", "/_cluster", "/_health"} <= set(spec["paths"])
    status, headers, body = request("GET", url(demo3, 0, "/"))
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"/_static/status.js" in body


BAD = [
    # (method, path, body, headers, status, error code)
    ("GET", "/missing-key", None, {}, 404, "key_not_found"),
    ("DELETE", "/missing-key", None, {}, 404, "key_not_found"),
    ("GET", "/_reserved", None, {}, 404, "no_such_endpoint"),
    ("PUT", "/_reserved", b"x", {}, 400, "bad_key"),
    ("PUT", "/" + "k" * 4097, b"x", {}, 400, "bad_key"),
    ("PUT", "/bad%00key", b"x", {}, 400, "bad_key"),
    ("PUT", "/bad%ffkey", b"x", {}, 400, "bad_key"),
    ("GET", "/k?bogus=1", None, {}, 400, "bad_parameter"),
    ("GET", "/k?rev=abc", None, {}, 400, "bad_parameter"),
    ("GET", "/k?rev=0", None, {}, 400, "bad_parameter"),
    ("GET", "/k?rev=99999999", None, {}, 400, "bad_request"),       # future revision
    ("GET", "/k?timeout=1", None, {}, 400, "bad_parameter"),
    ("GET", "/k?watch=maybe", None, {}, 400, "bad_parameter"),
    ("GET", "/k?watch=1&timeout=-1", None, {}, 400, "bad_parameter"),
    ("GET", "/k?rev=1&rev=2", None, {}, 400, "bad_parameter"),
    ("PUT", "/k?ttl=0", b"x", {}, 400, "bad_parameter"),
    ("PUT", "/k?ttl=soon", b"x", {}, 400, "bad_parameter"),
    ("PUT", "/k?ttl=99999999", b"x", {}, 400, "bad_parameter"),
    ("PUT", "/k", b"x", {"If-Match": "W/\"3\""}, 400, "bad_header"),
    ("PUT", "/k", b"x", {"If-None-Match": "\"3\""}, 400, "bad_header"),
    ("GET", "/?prefix=a&start=b", None, {}, 400, "bad_parameter"),
    ("GET", "/?end=b", None, {}, 400, "bad_parameter"),
    ("GET", "/?start=b&end=a", None, {}, 400, "bad_parameter"),
    ("GET", "/?prefix=a&limit=-1", None, {}, 400, "bad_parameter"),
    ("GET", "/?prefix=a&keys_only=perhaps", None, {}, 400, "bad_parameter"),
    ("DELETE", "/?bogus=1", None, {}, 400, "bad_parameter"),
    ("POST", "/k", b"x", {}, 405, "method_not_allowed"),
    ("PUT", "/", b"x", {}, 405, "method_not_allowed"),
    ("PUT", "/_cluster", b"x", {}, 405, "method_not_allowed"),
    ("GET", "/_cluster?x=1", None, {}, 400, "bad_parameter"),
    ("PUT", "/big", b"x" * (MAX_VALUE_BYTES + 1), {}, 413, "value_too_large"),
    ("PUT", "/cas-missing?prev=x", b"y", {}, 409, "compare_failed"),
]


@pytest.mark.parametrize("method,path,body,headers,status,code", BAD,
                         ids=[f"{m} {p[:30]} {s}" for m, p, _, _, s, _ in BAD])
def test_bad_requests(demo3: DemoCluster, method: str, path: str, body: bytes | None,
                      headers: dict[str, str], status: int, code: str) -> None:
    got, h, raw = request(method, url(demo3, 1, path), body, headers)
    assert got == status, raw[:300]
    assert h["Content-Type"].startswith("application/json")
    err = json.loads(raw)
    assert err["error"] == code and err["message"]
    if status == 405:
        assert "Allow" in h


def test_value_at_the_limit_is_accepted(demo3: DemoCluster) -> None:
    value = b"v" * MAX_VALUE_BYTES
    assert request("PUT", url(demo3, 0, "/biggest"), value, timeout=60)[0] == 201
    assert request("GET", url(demo3, 2, "/biggest"), timeout=60)[2] == value


def test_chunked_value_over_the_limit_is_413(demo3: DemoCluster) -> None:
    host, port = demo3.nodes[0].api.split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(b"PUT /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"c" * 65536
        try:
            for _ in range(MAX_VALUE_BYTES // len(chunk) + 2):
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass   # the server may answer and close before the end of the body
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


@pytest.mark.parametrize("option, value, message", [
    ("--compact-retention", "-1", "--compact-retention must be >= 0"),
    ("--busy-poll", "-1", "--busy-poll must be 0..10000 microseconds"),
    ("--busy-poll", "20000", "--busy-poll must be 0..10000 microseconds"),
])
def test_bad_numeric_options_exit_2(option: str, value: str, message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from demo.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--api", "127.0.0.1:1", "--db", "127.0.0.1:2", option, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_read_option_is_checked(tmp_path) -> None:
    """--read takes linearizable or serializable only (an error before anything starts)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "demo", "--api", "127.0.0.1:1", "--db", "127.0.0.1:2",
                           "--dir", str(tmp_path), "--read", "eventual"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--read" in proc.stderr
