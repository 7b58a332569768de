"""The demo's HTTP API over a kvstore ``cowsql://`` handle (see ``docs/demo.md``).

Runs on cowsqlpy's background event loop, the loop the kvstore core, the App and
the engine client already use: a request costs no thread hop. aiohttp's
low-level server (no router, no middleware) dispatches to :meth:`Api.handle`.

Every error is an HTTP error status with a JSON body ``{"error": CODE,
"message": TEXT}``; a 2xx never carries an error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from aiohttp.web_request import BaseRequest

from cowsqlpy.app import App
from cowsqlpy.runtime import BusyPoll
from cowsqlpy.tls import ClientTLS, TLSConfig
from kvstore import AsyncKV, OutcomeUnknownError
from kvstore.errors import (
    ClosedError,
    CompactedError,
    FutureRevisionError,
    InvalidArgument,
    InvalidType,
    KVError,
    LeaseNotFound,
    OperationTimeout,
    ValueTooLarge,
)
from kvstore.types import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    RANGE_ALL,
    Compare,
    DeleteRange,
    Event,
    EventType,
    KeyValue,
    ModRevision,
    Put,
    Range,
    RangeResult,
    Value,
    Version,
    prefix_end,
)
from kvstore.watch import WatchStream

from .openapi import OPENAPI

log = logging.getLogger("demo")

#: Node registry keys (API address of every demo node) live below this prefix.
#: No HTTP key can start with NUL, and every listing starts at ``\x01``.
REGISTRY = b"\x00demo/nodes/"
REGISTRY_TTL = 10               # seconds; the entry of a killed node vanishes after this
MIN_USER_KEY = b"\x01"
MAX_TTL = 7 * 24 * 3600         # ?ttl= upper bound (seconds)
MAX_WATCH_TIMEOUT = 300.0       # ?timeout= upper bound for a long poll (seconds)
DEFAULT_WATCH_TIMEOUT = 30.0
MAX_WATCH_EVENTS = 1000         # events per long-poll answer (whole revisions)
MAX_WATCHES = 256               # concurrent watches (long polls and streams) per node
MAX_INT = (1 << 63) - 1         # integer parameters are SQLite INTEGERs
SSE_HEARTBEAT = 15.0
HEALTH_TIMEOUT = 2.0
RETRY_AFTER = "1"
ROLE_NAMES = {0: "voter", 1: "stand-by", 2: "spare"}
STATIC_DIR = Path(__file__).with_name("static")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

_PARAMS = {
    ("GET", True): {"rev", "watch", "timeout"},
    ("GET", False): {"prefix", "start", "end", "limit", "rev", "keys_only", "count_only",
                     "watch", "timeout"},
    ("PUT", True): {"prev", "ttl"},
    ("DELETE", True): {"prev"},
    ("DELETE", False): {"prefix", "start", "end"},
}


class HTTPFailure(Exception):
    """An error answer: ``status``, stable ``code``, message, extra headers/body."""

    def __init__(self, status: int, code: str, message: str, *,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None
                 ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.extra = extra or {}


def _bad(message: str, code: str = "bad_request") -> HTTPFailure:
    return HTTPFailure(400, code, message)


def _unavailable(message: str, code: str = "unavailable") -> HTTPFailure:
    return HTTPFailure(503, code, message, headers={"Retry-After": RETRY_AFTER})


def map_error(exc: BaseException) -> HTTPFailure:
    """The HTTP answer for a kvstore error (one table, by class)."""
    if isinstance(exc, HTTPFailure):
        return exc
    if isinstance(exc, ValueTooLarge):
        return HTTPFailure(413, "value_too_large", str(exc))
    if isinstance(exc, CompactedError):
        return HTTPFailure(410, "compacted", str(exc),
                           extra={"compact_revision": exc.compact_revision})
    if isinstance(exc, (InvalidArgument, InvalidType, FutureRevisionError)):
        return _bad(str(exc))
    if isinstance(exc, LeaseNotFound):
        return HTTPFailure(409, "lease_not_found", str(exc))
    if isinstance(exc, OutcomeUnknownError):
        return _unavailable(f"{exc} (re-read the key before retrying)", "outcome_unknown")
    if isinstance(exc, (OperationTimeout, TimeoutError, ClosedError)):
        return _unavailable(f"no quorum or no leader reachable: {exc}", "no_quorum")
    if isinstance(exc, KVError):
        return _unavailable(f"store error: {exc}", "store_error")
    log.exception("unexpected error", exc_info=exc)
    return HTTPFailure(500, "internal", f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------- encoding
def _text_or_b64(name: str, data: bytes, out: dict[str, Any]) -> None:
    try:
        out[name] = data.decode()
    except UnicodeDecodeError:
        out[name + "_b64"] = base64.b64encode(data).decode()


def kv_json(kv: KeyValue, keys_only: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"key": kv.key.decode(errors="replace")}
    if not keys_only:
        _text_or_b64("value", kv.value, out)
    out.update(create_revision=kv.create_revision, mod_revision=kv.mod_revision,
               version=kv.version, lease=kv.lease)
    return out


def event_json(e: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "put" if e.type is EventType.PUT else "delete",
                           "key": e.key.decode(errors="replace"), "revision": e.revision}
    if e.type is EventType.PUT:
        _text_or_b64("value", e.kv.value, out)
        out.update(create_revision=e.kv.create_revision, version=e.kv.version, lease=e.kv.lease)
    return out


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(data, separators=(",", ":")).encode(), status=status,
                        headers=headers, content_type="application/json")


def _error(f: HTTPFailure) -> web.Response:
    return _json({"error": f.code, "message": f.message, **f.extra}, f.status, f.headers)


def _etag(rev: int) -> str:
    return f'"{rev}"'


# --------------------------------------------------------------------- parsing
def parse_key(raw: bytes) -> bytes:
    """The key of a request path (after the leading ``/``), percent-decoded.

    :raises HTTPFailure: 400 for an empty, too long, non-UTF-8 key, one with
        control characters, or one starting with ``_`` (reserved for endpoints).
    """
    key = urllib.parse.unquote_to_bytes(raw)
    if not key:
        raise _bad("empty key", "bad_key")
    if len(key) > MAX_KEY_BYTES:
        raise _bad(f"key is {len(key)} bytes, the limit is {MAX_KEY_BYTES}", "bad_key")
    try:
        text = key.decode()
    except UnicodeDecodeError:
        raise _bad("key is not valid UTF-8", "bad_key") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise _bad("key contains control characters", "bad_key")
    if key[:1] == b"_":
        raise _bad("keys starting with '_' are reserved for the API's own endpoints", "bad_key")
    return key


def _query(request: BaseRequest, allowed: set[str]) -> dict[str, str]:
    q = request.query
    out: dict[str, str] = {}
    for name in q:
        if name not in allowed:
            raise _bad(f"unknown parameter {name!r} for {request.method} "
                       f"(allowed: {', '.join(sorted(allowed)) or 'none'})", "bad_parameter")
        if name in out or len(q.getall(name)) > 1:
            raise _bad(f"parameter {name!r} given twice", "bad_parameter")
        out[name] = q[name]
    return out


def _int(q: dict[str, str], name: str, lo: int, hi: int = MAX_INT) -> int | None:
    s = q.get(name)
    if s is None:
        return None
    try:
        v = int(s) if len(s) <= 20 else None  # int() of a huge digit string is slow
    except ValueError:
        v = None
    if v is None:
        raise _bad(f"{name} must be an integer in [{lo}, {hi}], got {s[:40]!r}", "bad_parameter")
    if not lo <= v <= hi:
        raise _bad(f"{name} must be in [{lo}, {hi}], got {v}", "bad_parameter")
    return v


def _float(q: dict[str, str], name: str, lo: float, hi: float) -> float | None:
    s = q.get(name)
    if s is None:
        return None
    try:
        v = float(s)
    except ValueError:
        raise _bad(f"{name} must be a number, got {s!r}", "bad_parameter") from None
    if not lo <= v <= hi:
        raise _bad(f"{name} must be in [{lo:g}, {hi:g}], got {s}", "bad_parameter")
    return v


def _bool(q: dict[str, str], name: str) -> bool:
    s = q.get(name)
    if s is None:
        return False
    if s.lower() in ("", "1", "true", "yes"):
        return True
    if s.lower() in ("0", "false", "no"):
        return False
    raise _bad(f"{name} must be 1/true or 0/false, got {s!r}", "bad_parameter")


def _param_key(s: str, name: str) -> bytes:
    b = s.encode()
    if len(b) > MAX_KEY_BYTES:
        raise _bad(f"{name} is longer than {MAX_KEY_BYTES} bytes", "bad_parameter")
    return b


def parse_range(q: dict[str, str]) -> tuple[bytes, bytes]:
    """``?prefix=`` or ``?start=[&end=]`` as an etcd-convention (start, end), never
    reaching below :data:`MIN_USER_KEY` (the registry): a prefix below it (``%00``)
    is clamped like ``start``, to an empty range."""
    if "prefix" in q:
        if "start" in q or "end" in q:
            raise _bad("give either prefix or start/end, not both", "bad_parameter")
        p = _param_key(q["prefix"], "prefix")
        if not p:
            return MIN_USER_KEY, RANGE_ALL
        end = prefix_end(p)
        if end != RANGE_ALL and end <= MIN_USER_KEY:
            return MIN_USER_KEY, MIN_USER_KEY  # holds no user key
        return max(p, MIN_USER_KEY), end
    if "start" not in q:
        raise _bad("a listing needs ?prefix= or ?start= (and optional &end=)", "bad_parameter")
    start = max(_param_key(q["start"], "start"), MIN_USER_KEY)
    end = _param_key(q["end"], "end") if q.get("end") else RANGE_ALL
    if end != RANGE_ALL and end <= start:
        raise _bad("end must sort after start", "bad_parameter")
    return start, end


def _if_match(request: BaseRequest, key: bytes) -> list[Compare]:
    """Compares from ``If-Match`` (mod revision, or ``*``: exists) and
    ``If-None-Match: *`` (must not exist)."""
    out: list[Compare] = []
    im = request.headers.get("If-Match")
    if im is not None:
        s = im.strip()
        if s == "*":
            out.append(Version(key) > 0)
        else:
            tag = s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s
            if not tag.isdigit():
                raise _bad(f"If-Match must be a mod revision (an ETag such as \"12\") or *, "
                           f"got {im!r}", "bad_header")
            out.append(ModRevision(key) == int(tag))
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        if inm.strip() != "*":
            raise _bad("If-None-Match supports only * (create only)", "bad_header")
        out.append(Version(key) == 0)
    return out


# --------------------------------------------------------------------- watches
async def user_events(stream: WatchStream, timeout: float | None,
                      max_events: int = MAX_WATCH_EVENTS) -> list[Event] | None:
    """`stream.batch` without the demo's internal keys (below MIN_USER_KEY): the
    events queued now, waiting up to ``timeout`` for the first user event; ``[]``
    on timeout, None once cancelled. :raises KVError: the watch failed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        events = await stream.batch(left, max_events)
        if not events:
            return events
        events = [e for e in events if e.key[:1] != b"\x00"]
        if events or (deadline is not None and time.monotonic() >= deadline):
            return events


# --------------------------------------------------------------------- the API
@dataclass
class NodeIdentity:
    id: int
    db: str
    api: str


class Api:
    """Request handling for one demo node."""

    def __init__(self, kv: AsyncKV, app: App, me: NodeIdentity,
                 poller: BusyPoll | None = None, tls: TLSConfig | None = None) -> None:
        self.kv = kv
        # the other nodes' APIs speak HTTPS with the cluster certificate when we do
        self._probe_tls = None if tls is None else ClientTLS.of(tls)
        self.poller = poller
        self.app = app
        self.me = me
        self.started = time.time()
        self._admin = app.async_client()
        self._streams: set[WatchStream] = set()
        self._http: ClientSession | None = None
        self._static = {p.name: (p.read_bytes(), STATIC_TYPES.get(p.suffix,
                                                                   "application/octet-stream"))
                        for p in STATIC_DIR.iterdir() if p.is_file()}
        self._openapi = json.dumps(OPENAPI, indent=1).encode()
        self.closing = False

    # ------------------------------------------------------------- dispatch
    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        if self.poller is not None:
            self.poller.touch()
        try:
            return await self._dispatch(request)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # every failure becomes an HTTP status
            return _error(map_error(exc))

    async def _dispatch(self, request: BaseRequest) -> web.StreamResponse:
        raw = request.raw_path
        q = raw.find("?")
        path = raw if q < 0 else raw[:q]
        method = request.method
        if path[:2] == "/_" or path == "/":
            return await self._endpoint(request, path, method)
        if method == "HEAD":
            method = "GET"
        key = parse_key(path[1:].encode())
        if method == "GET":
            return await self._get(request, key)
        if method == "PUT":
            return await self._put(request, key)
        if method == "DELETE":
            return await self._delete(request, key)
        raise HTTPFailure(405, "method_not_allowed", f"{method} is not supported on a key",
                          headers={"Allow": "GET, HEAD, PUT, DELETE"})

    async def _endpoint(self, request: BaseRequest, path: str, method: str
                        ) -> web.StreamResponse:
        if path == "/":
            if method in ("GET", "HEAD") and not request.query:
                return self._file("index.html")
            if method in ("GET", "HEAD"):
                return await self._list(request)
            if method == "DELETE":
                return await self._delete_range(request)
            raise HTTPFailure(405, "method_not_allowed", f"{method} is not supported on /",
                              headers={"Allow": "GET, HEAD, DELETE"})
        handlers: dict[str, Callable[[BaseRequest], Awaitable[web.StreamResponse]]] = {
            "/_cluster": self._cluster, "/_health": self._health,
        }
        if method not in ("GET", "HEAD"):
            if path in handlers or path == "/_openapi.json" or path.startswith("/_static/"):
                raise HTTPFailure(405, "method_not_allowed", f"{path} is read-only",
                                  headers={"Allow": "GET, HEAD"})
            parse_key(path[1:].encode())   # raises the reserved-key 400
        if path in handlers:
            _query(request, set())
            return await handlers[path](request)
        if path == "/_openapi.json":
            return web.Response(body=self._openapi, content_type="application/json")
        if path.startswith("/_static/") and path[9:] in self._static:
            return self._file(path[9:])
        raise HTTPFailure(404, "no_such_endpoint",
                          f"no endpoint {path} (keys starting with '_' are reserved)")

    def _file(self, name: str) -> web.Response:
        body, ctype = self._static[name]
        return web.Response(body=body, headers={"Content-Type": ctype,
                                                "Cache-Control": "no-cache"})

    # ------------------------------------------------------------- keys
    async def _get(self, request: BaseRequest, key: bytes) -> web.StreamResponse:
        q = _query(request, _PARAMS["GET", True]) if request.query_string else {}
        if q:
            if "watch" in q:
                return await self._watch(request, q, key, b"")
            if "timeout" in q:
                raise _bad("timeout applies to watch=1 only", "bad_parameter")
        rev = _int(q, "rev", 1) or 0 if q else 0
        r = await self.kv.range(Range(key), revision=rev or None)
        if not r.kvs:
            raise HTTPFailure(404, "key_not_found", f"key {key.decode()!r} not found",
                              headers={"X-Revision": str(r.revision)})
        kv = r.kvs[0]
        return web.Response(body=kv.value, headers=self._kv_headers(kv, r.revision))

    @staticmethod
    def _kv_headers(kv: KeyValue, revision: int) -> dict[str, str]:
        return {"Content-Type": "application/octet-stream", "ETag": _etag(kv.mod_revision),
                "X-Revision": str(revision), "X-Create-Revision": str(kv.create_revision),
                "X-Mod-Revision": str(kv.mod_revision), "X-Version": str(kv.version),
                "X-Lease": str(kv.lease)}

    async def _read_body(self, request: BaseRequest) -> bytes:
        length = request.content_length
        if length is not None and length > MAX_VALUE_BYTES:
            raise HTTPFailure(413, "value_too_large", f"value is {length} bytes, the limit is "
                              f"{MAX_VALUE_BYTES} (1.5 MiB)", headers={"Connection": "close"})
        if length is not None:
            return await request.content.readexactly(length) if length else b""
        chunks, size = [], 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > MAX_VALUE_BYTES:
                raise HTTPFailure(413, "value_too_large", f"value exceeds the limit of "
                                  f"{MAX_VALUE_BYTES} bytes (1.5 MiB)",
                                  headers={"Connection": "close"})
            chunks.append(chunk)
        return b"".join(chunks)

    async def _put(self, request: BaseRequest, key: bytes) -> web.StreamResponse:
        q = _query(request, _PARAMS["PUT", True]) if request.query_string else {}
        ttl = _int(q, "ttl", 1, MAX_TTL) if q else None
        conds = _if_match(request, key)
        if "prev" in q:
            conds.append(Value(key) == q["prev"].encode())
        value = await self._read_body(request)
        lease = 0
        if ttl is not None:
            granted = await self.kv.grant(ttl)
            lease, ttl = granted.id, granted.ttl
        put = Put(key, value, lease, True)
        if conds:
            r = await self.kv.txn(conds, (put,), (Range(key),))
            if not r.succeeded:
                if lease:
                    asyncio.ensure_future(self._revoke_quietly(lease))
                raise self._conflict(key, r.responses[0])
            res = r.responses[0]
        else:
            res = await self.kv.put(key, value, lease=lease, prev_kv=True)
        assert not isinstance(res, RangeResult)
        created = res.prev_kv is None     # type: ignore[union-attr]
        body: dict[str, Any] = {"key": key.decode(), "revision": res.revision,
                                "created": created}
        if lease:
            body.update(lease=lease, ttl=ttl)
        return _json(body, 201 if created else 200, {"ETag": _etag(res.revision)})

    async def _revoke_quietly(self, lease: int) -> None:
        try:
            await self.kv.revoke(lease)
        except KVError:
            pass   # it expires by itself

    @staticmethod
    def _conflict(key: bytes, current: Any) -> HTTPFailure:
        kvs = current.kvs if isinstance(current, RangeResult) else ()
        cur = kv_json(kvs[0]) if kvs else None
        return HTTPFailure(409, "compare_failed",
                           f"compare-and-set on {key.decode()!r} failed: the key "
                           + ("is absent" if cur is None else
                              f"has mod revision {cur['mod_revision']}"),
                           extra={"current": cur})

    async def _delete(self, request: BaseRequest, key: bytes) -> web.StreamResponse:
        q = _query(request, _PARAMS["DELETE", True]) if request.query_string else {}
        conds = _if_match(request, key)
        if "prev" in q:
            conds.append(Value(key) == q["prev"].encode())
        op = DeleteRange(key, b"", False)
        r = await self.kv.txn(conds, (op,), (Range(key),))
        if not r.succeeded:
            raise self._conflict(key, r.responses[0])
        res = r.responses[0]
        if not res.deleted:    # type: ignore[union-attr]
            raise HTTPFailure(404, "key_not_found", f"key {key.decode()!r} not found")
        return _json({"key": key.decode(), "revision": res.revision, "deleted": 1})

    # ------------------------------------------------------------- ranges
    async def _list(self, request: BaseRequest) -> web.StreamResponse:
        q = _query(request, _PARAMS["GET", False])
        start, end = parse_range(q)
        if "watch" in q:
            return await self._watch(request, q, start, end)
        if "timeout" in q:
            raise _bad("timeout applies to watch=1 only", "bad_parameter")
        limit = _int(q, "limit", 0) or 0
        rev = _int(q, "rev", 1) or 0
        keys_only, count_only = _bool(q, "keys_only"), _bool(q, "count_only")
        r = await self.kv.range(Range(start, end, limit, keys_only, count_only),
                                revision=rev or None)
        return _json({"revision": r.revision, "count": r.count, "more": r.more,
                      "kvs": [kv_json(kv, keys_only) for kv in r.kvs]},
                     headers={"X-Revision": str(r.revision)})

    async def _delete_range(self, request: BaseRequest) -> web.StreamResponse:
        q = _query(request, _PARAMS["DELETE", False])
        start, end = parse_range(q)
        r = await self.kv.delete_range(start, end)
        return _json({"revision": r.revision, "deleted": r.deleted})

    # ------------------------------------------------------------- watches
    async def _watch(self, request: BaseRequest, q: dict[str, str], start: bytes, end: bytes
                     ) -> web.StreamResponse:
        mode = q["watch"].lower()
        if mode not in ("1", "true", "stream", "sse"):
            raise _bad(f"watch must be 1 (long poll) or stream (server-sent events), "
                       f"got {q['watch']!r}", "bad_parameter")
        rev = _int(q, "rev", 1) or 0
        sse = mode in ("stream", "sse") or "text/event-stream" in request.headers.get("Accept", "")
        last_id = request.headers.get("Last-Event-ID")
        if sse and last_id and not rev:
            if not last_id.isdigit():
                raise _bad("Last-Event-ID must be a revision", "bad_header")
            rev = int(last_id) + 1
        timeout = _float(q, "timeout", 0.0, MAX_WATCH_TIMEOUT)
        if sse and timeout is not None:
            raise _bad("timeout applies to the long poll (watch=1) only", "bad_parameter")
        if len(self._streams) >= MAX_WATCHES:
            raise HTTPFailure(429, "too_many_watches",
                              f"this node serves at most {MAX_WATCHES} watches at once",
                              headers={"Retry-After": RETRY_AFTER})
        stream = await (self.kv.watch_key(start, rev or None) if end == b"" else
                        self.kv.watch_range(start, end, start_revision=rev or None))
        self._streams.add(stream)
        try:
            if not sse:
                events = await self._long_poll(request, stream, DEFAULT_WATCH_TIMEOUT
                                               if timeout is None else timeout)
                if events is None:
                    raise _unavailable("the node is shutting down", "shutting_down")
                nxt = events[-1].revision + 1 if events else (rev or await self._next_rev())
                return _json({"events": [event_json(e) for e in events], "next_rev": nxt})
            return await self._sse(request, stream)
        finally:
            self._streams.discard(stream)
            stream.cancel()

    @staticmethod
    async def _long_poll(request: BaseRequest, stream: WatchStream, timeout: float
                         ) -> list[Event] | None:
        """`stream.batch(timeout)`, ended early (None) when the client goes away, so a
        dropped long poll does not hold one of the MAX_WATCHES slots until its timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            events = await user_events(stream, max(0.0, min(left, 1.0)))
            if events or events is None or left <= 1.0:
                return events
            transport = request.transport
            if transport is None or transport.is_closing():
                return None

    async def _next_rev(self) -> int:
        return await self.kv.revision() + 1

    async def _sse(self, request: BaseRequest, stream: WatchStream) -> web.StreamResponse:
        # The first read reports a compacted start revision as 410 before any byte is sent.
        first = await user_events(stream, 0)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write(b"retry: 1000\n\n")
        events = first
        while events is not None:
            if events:
                out = []
                for e in events:
                    out.append(f"id: {e.revision}\nevent: "
                               f"{'put' if e.type is EventType.PUT else 'delete'}\ndata: "
                               f"{json.dumps(event_json(e), separators=(',', ':'))}\n\n")
                await resp.write("".join(out).encode())
            else:
                await resp.write(b": keep-alive\n\n")
            try:
                events = await user_events(stream, SSE_HEARTBEAT)
            except KVError as exc:
                f = map_error(exc)
                await resp.write(f"event: error\ndata: "
                                 f"{json.dumps({'error': f.code, 'message': f.message})}\n\n"
                                 .encode())
                break
        return resp

    # ------------------------------------------------------------- cluster
    async def _health(self, request: BaseRequest) -> web.StreamResponse:
        body: dict[str, Any] = {"node": self._me_json()}
        if self.closing:
            body.update(status="shutting_down")
            return _json(body, 503, {"Retry-After": RETRY_AFTER})
        try:
            revision = await asyncio.wait_for(self.kv.revision(), HEALTH_TIMEOUT)
        except (KVError, TimeoutError) as exc:
            body.update(status="unavailable", error="no_quorum",
                        message=f"the leader did not answer within {HEALTH_TIMEOUT:g} s: {exc}")
            return _json(body, 503, {"Retry-After": RETRY_AFTER})
        body.update(status="ok", revision=revision)
        return _json(body)

    def _me_json(self) -> dict[str, Any]:
        return {"id": f"{self.me.id:#x}", "db": self.me.db, "api": self.me.api,
                "uptime": round(time.time() - self.started, 1)}

    async def _cluster(self, request: BaseRequest) -> web.StreamResponse:
        body: dict[str, Any] = {"node": self._me_json()}
        try:
            nodes = await asyncio.wait_for(self._admin.cluster(), HEALTH_TIMEOUT)
            leader = await asyncio.wait_for(self._admin.leader(), HEALTH_TIMEOUT)
            rng = await asyncio.wait_for(self.kv.range(Range(REGISTRY, prefix_end(REGISTRY))),
                                         HEALTH_TIMEOUT)
        except (KVError, TimeoutError, Exception) as exc:  # any admin failure
            known = [{"id": f"{n.id:#x}", "db": n.address,
                      "role": ROLE_NAMES.get(n.role or 0, "?"), "leader": False, "api": None,
                      "healthy": None} for n in self.app.store.get()]
            body.update(nodes=known, leader=None, revision=None, recent=[],
                        error="no_quorum",
                        message=f"no leader answered within {HEALTH_TIMEOUT:g} s: {exc}")
            return _json(body, 503, {"Retry-After": RETRY_AFTER})
        apis: dict[str, str] = {}
        for kv in rng.kvs:
            try:
                apis[kv.key[len(REGISTRY):].decode()] = json.loads(kv.value)["api"]
            except (ValueError, KeyError):
                continue
        health = await asyncio.gather(*(self._probe(apis.get(n.address)) for n in nodes))
        body.update(
            nodes=[{"id": f"{n.id:#x}", "db": n.address,
                    "role": ROLE_NAMES.get(n.role or 0, "?"),
                    "leader": leader is not None and n.address == leader.address,
                    "api": apis.get(n.address), "healthy": h}
                   for n, h in zip(nodes, health, strict=True)],
            leader=None if leader is None else leader.address,
            revision=rng.revision, recent=await self._recent(rng.revision, 10))
        return _json(body)

    async def _probe(self, api: str | None) -> bool | None:
        if api is None:
            return None
        if api == self.me.api:
            return not self.closing
        if self._http is None:
            self._http = ClientSession(timeout=ClientTimeout(total=1.0))
        try:
            if self._probe_tls is None:
                probe = self._http.get(f"http://{api}/_health")
            else:
                probe = self._http.get(f"https://{api}/_health", ssl=self._probe_tls.context,
                                       server_hostname=self._probe_tls.server_name)
            async with probe as resp:
                return resp.status == 200
        except (OSError, TimeoutError, Exception):  # any failure: unhealthy
            return False

    async def _recent(self, revision: int, n: int) -> list[dict[str, Any]]:
        """The last ``n`` user events at or before ``revision`` (newest first)."""
        if revision < 1:
            return []
        lo = max(1, revision - 4 * n)
        events: list[Event] = []
        deadline = time.monotonic() + 0.3
        try:
            stream = await self.kv.watch_range(MIN_USER_KEY, None, start_revision=lo)
        except KVError:
            return []
        try:
            # The backfill reaches the core's poll position; newer events follow
            # from the poller within one poll interval.
            while not events or events[-1].revision < revision:
                left = deadline - time.monotonic()
                more = await user_events(stream, max(0.0, left), 10 * n) if left > 0 else None
                if not more:
                    break
                events.extend(more)
        except KVError:
            return []
        finally:
            stream.cancel()
        return [event_json(e) for e in reversed(events[-n:])]

    # ------------------------------------------------------------- lifecycle
    def stop_watches(self) -> None:
        self.closing = True
        for s in list(self._streams):
            s.cancel()

    async def close(self) -> None:
        self.stop_watches()
        if self._http is not None:
            await self._http.close()
        await self._admin.close()
