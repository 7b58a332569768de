"""``etcd://`` backend: a real etcd v3 server over gRPC.

URL: ``etcd://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][?session_ttl=S&timeout=S]``;
TLS (etcd's ``--cert-file``/``--client-cert-auth``): ``&ca=PEM`` (server verified against
it), ``&cert=PEM&key=PEM`` (our client certificate), ``&server_name=NAME`` (the name the
server certificate is checked against, when it is not the endpoint's address). With a
user, the backend authenticates once (etcd's Authenticate) and sends the token with every
call, authenticating again when etcd says the token expired.

Client choice: the gRPC stubs shipped by ``aetcd`` (maintained, generated from
etcd's protos, working with the installed grpcio/protobuf) driven directly on
``grpc.aio``. aetcd's own high-level calls lack range limit/revision/
count_only and nested txn ops, so requests are built here. Measured on this
machine against etcd 3.4 at concurrency 1, gRPC does ~1,300 puts/s where the
JSON gateway client (``etcd3gw``) does ~460, hence gRPC.

:class:`EtcdBackend` is an asyncio client bound to the loop it was opened on (the
caller's for ``kvstore.open_async``, cowsqlpy's background loop for the blocking
``kvstore.open``).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from ..backend import Backend
from ..errors import (
    AuthenticationError,
    BackendError,
    CompactedError,
    ConfigurationError,
    FutureRevisionError,
    InvalidArgument,
    InvalidTxn,
    KVError,
    LeaseNotFound,
    OperationTimeout,
    PermissionDenied,
    ValueTooLarge,
)
from ..types import (
    Compare,
    CompareTarget,
    DeleteRange,
    DeleteResult,
    Event,
    EventType,
    KeyValue,
    LeaseInfo,
    Op,
    Put,
    PutResult,
    Range,
    RangeResult,
    TxnResult,
)
from ..watch import WatchStream

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0
GRPC_MAX_MESSAGE = 16 * 1024 * 1024

# etcd reports its errors as gRPC status + a fixed description (etcd's own
# client maps them the same way, api/v3rpc/rpctypes). One table.
_ERRORS: dict[tuple[grpc.StatusCode, str], type[KVError]] = {
    (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"):
        CompactedError,
    (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"):
        FutureRevisionError,
    (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"): LeaseNotFound,
    (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"):
        InvalidTxn,
    (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"):
        InvalidTxn,
    (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large"): ValueTooLarge,
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: request is too large"): ValueTooLarge,
    (grpc.StatusCode.INVALID_ARGUMENT,
     "etcdserver: authentication failed, invalid user ID or password"): AuthenticationError,
    (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty"): AuthenticationError,
    (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: authentication is not enabled"):
        AuthenticationError,
    (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token"): AuthenticationError,
    (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied"): PermissionDenied,
}
_TOKEN_EXPIRED = (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
_BY_CODE: dict[grpc.StatusCode, type[KVError]] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: OperationTimeout,
    grpc.StatusCode.UNAVAILABLE: OperationTimeout,
}

_OPS = {"=": rpc.Compare.EQUAL, "!=": rpc.Compare.NOT_EQUAL, "<": rpc.Compare.LESS,
        ">": rpc.Compare.GREATER}
_TARGETS = {CompareTarget.VERSION: rpc.Compare.VERSION, CompareTarget.CREATE: rpc.Compare.CREATE,
            CompareTarget.MOD: rpc.Compare.MOD, CompareTarget.VALUE: rpc.Compare.VALUE,
            CompareTarget.LEASE: rpc.Compare.LEASE}


def _map_error(e: grpc.aio.AioRpcError) -> KVError:
    code, details = e.code(), e.details() or ""
    cls = _ERRORS.get((code, details)) or _BY_CODE.get(code)
    if cls is None:
        return BackendError(f"etcd: {code.name}: {details}", code.name)
    if cls is CompactedError:
        return CompactedError(f"etcd: {details}")
    return cls(f"etcd: {details}")


def _kv(k: Any) -> KeyValue:
    return KeyValue(k.key, k.value, k.create_revision, k.mod_revision, k.version, k.lease)


def _range_req(r: Range, revision: int = 0) -> Any:
    return rpc.RangeRequest(key=r.key, range_end=r.end, limit=r.limit, revision=revision,
                            keys_only=r.keys_only, count_only=r.count_only)


def _range_res(resp: Any, revision: int) -> RangeResult:
    return RangeResult(tuple(_kv(k) for k in resp.kvs), resp.count, resp.more, revision)


def _request_op(op: Op) -> Any:
    if isinstance(op, Put):
        return rpc.RequestOp(request_put=rpc.PutRequest(key=op.key, value=op.value,
                                                        lease=op.lease, prev_kv=op.prev_kv))
    if isinstance(op, DeleteRange):
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
            key=op.key, range_end=op.end, prev_kv=op.prev_kv))
    return rpc.RequestOp(request_range=_range_req(op))


def _compare(c: Compare) -> Any:
    m = rpc.Compare(result=_OPS[c.op], target=_TARGETS[c.target], key=c.key,
                    range_end=c.range_end)
    if c.target is CompareTarget.VALUE:
        m.value = c.value
    elif c.target is CompareTarget.VERSION:
        m.version = c.value
    elif c.target is CompareTarget.CREATE:
        m.create_revision = c.value
    elif c.target is CompareTarget.MOD:
        m.mod_revision = c.value
    else:
        m.lease = c.value
    return m


class EtcdBackend(Backend):
    """The async etcd client: one gRPC channel, all calls are coroutines on ``loop``."""

    scheme = "etcd"

    def __init__(self, endpoints: list[str], timeout: float, session_ttl: int | None = None,
                 *, tls: EtcdTLS | None = None, user: tuple[str, str] | None = None) -> None:
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.endpoints = endpoints
        self.session_ttl = session_ttl
        self._watch_tasks: dict[WatchStream, asyncio.Task[None]] = {}
        target = endpoints[0] if len(endpoints) == 1 else "ipv4:" + ",".join(endpoints)
        self.timeout = timeout
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE),
        ]
        if tls is None:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        else:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self.channel = grpc.aio.secure_channel(target, tls.credentials(), options=options)
        self.kv = rpc.KVStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.watch_stub = rpc.WatchStub(self.channel)
        self.auth = rpc.AuthStub(self.channel)
        self._user = user
        self._meta: tuple[tuple[str, str], ...] = ()
        self.authentications = 0   # tokens obtained (tests, metrics)

    async def authenticate(self) -> None:
        """Get a token for the URL's user (nothing to do without one)."""
        if self._user is None:
            return
        name, password = self._user
        try:
            r = await self.auth.Authenticate(rpc.AuthenticateRequest(name=name, password=password),
                                             timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _map_error(e) from None
        self._meta = (("token", r.token),)
        self.authentications += 1

    async def _call(self, fn: Any, req: Any) -> Any:
        for attempt in (1, 2):
            try:
                return await fn(req, timeout=self.timeout, metadata=self._meta)
            except grpc.aio.AioRpcError as e:
                if attempt == 1 and self._user is not None and \
                        (e.code(), e.details()) == _TOKEN_EXPIRED:
                    await self.authenticate()   # simple tokens expire (--auth-token-ttl)
                    continue
                raise _map_error(e) from None
        raise AssertionError("unreachable")

    async def put(self, key: bytes, value: bytes, lease: int = 0, prev_kv: bool = False
                  ) -> PutResult:
        r = await self._call(self.kv.Put, rpc.PutRequest(key=key, value=value, lease=lease,
                                                         prev_kv=prev_kv))
        return PutResult(r.header.revision, _kv(r.prev_kv) if r.HasField("prev_kv") else None)

    async def range(self, start: bytes, end: bytes, limit: int = 0, revision: int = 0,
                    keys_only: bool = False, count_only: bool = False) -> RangeResult:
        r = await self._call(self.kv.Range, _range_req(
            Range(start, end, limit, keys_only, count_only), revision))
        return _range_res(r, r.header.revision)

    async def get(self, key: bytes) -> KeyValue | None:
        r = await self.range(key, b"")
        return r.kvs[0] if r.kvs else None

    async def delete(self, start: bytes, end: bytes, prev_kv: bool = False) -> DeleteResult:
        r = await self._call(self.kv.DeleteRange, rpc.DeleteRangeRequest(
            key=start, range_end=end, prev_kv=prev_kv))
        return DeleteResult(r.deleted, r.header.revision, tuple(_kv(k) for k in r.prev_kvs))

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op],
                  failure: Sequence[Op]) -> TxnResult:
        r = await self._call(self.kv.Txn, rpc.TxnRequest(
            compare=[_compare(c) for c in compare],
            success=[_request_op(o) for o in success],
            failure=[_request_op(o) for o in failure]))
        rev = r.header.revision
        out: list[Any] = []
        for resp in r.responses:
            kind = resp.WhichOneof("response")
            if kind == "response_put":
                p = resp.response_put
                out.append(PutResult(rev, _kv(p.prev_kv) if p.HasField("prev_kv") else None))
            elif kind == "response_delete_range":
                d = resp.response_delete_range
                out.append(DeleteResult(d.deleted, rev, tuple(_kv(k) for k in d.prev_kvs)))
            else:
                out.append(_range_res(resp.response_range, rev))
        return TxnResult(r.succeeded, tuple(out), rev)

    async def compact(self, revision: int) -> None:
        await self._call(self.kv.Compact, rpc.CompactionRequest(revision=revision,
                                                                physical=False))

    async def grant(self, ttl: int) -> tuple[int, int]:
        r = await self._call(self.lease.LeaseGrant, rpc.LeaseGrantRequest(TTL=ttl, ID=0))
        if r.error:
            raise BackendError(f"etcd: lease grant failed: {r.error}")
        return r.ID, r.TTL

    async def revoke(self, lease: int) -> None:
        await self._call(self.lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease))

    async def keepalive(self, lease: int) -> int:
        call = self.lease.LeaseKeepAlive(timeout=self.timeout, metadata=self._meta)
        try:
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease))
            r = await call.read()
            await call.done_writing()
        except grpc.aio.AioRpcError as e:
            raise _map_error(e) from None
        finally:
            call.cancel()
        if r is grpc.aio.EOF or r.TTL <= 0:
            raise LeaseNotFound(f"etcd: lease {lease:#x} not found")
        return int(r.TTL)

    async def lease_info(self, lease: int) -> LeaseInfo:
        r = await self._call(self.lease.LeaseTimeToLive,
                             rpc.LeaseTimeToLiveRequest(ID=lease, keys=True))
        if r.TTL < 0:
            raise LeaseNotFound(f"etcd: lease {lease:#x} not found")
        return LeaseInfo(lease, int(r.TTL), int(r.grantedTTL), tuple(r.keys))

    async def watch(self, start: bytes, end: bytes, start_revision: int) -> WatchStream:
        stream = WatchStream(start, end, self._cancel_watch)
        created: asyncio.Future[None] = self.loop.create_future()
        task = self.loop.create_task(self._feed(stream, start, end, start_revision, created))
        self._watch_tasks[stream] = task
        task.add_done_callback(lambda t: self._watch_tasks.pop(stream, None))
        await asyncio.wait_for(created, self.timeout)
        return stream

    def _cancel_watch(self, stream: WatchStream) -> None:
        def cancel() -> None:
            t = self._watch_tasks.pop(stream, None)
            if t is not None:
                t.cancel()
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(cancel)

    async def _feed(self, stream: WatchStream, start: bytes, end: bytes, start_revision: int,
                    created: asyncio.Future[None]) -> None:
        """Feed ``stream`` until it is cancelled; resolves ``created`` once the
        server has registered the watch (so no later write is missed)."""
        call = self.watch_stub.Watch(metadata=self._meta)
        try:
            await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                key=start, range_end=end, start_revision=start_revision, prev_kv=True)))
            while not stream.cancelled:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    stream._fail(BackendError("etcd: watch stream ended"))
                    return
                if resp.created and not created.done():
                    created.set_result(None)
                if resp.compact_revision:
                    stream._fail(CompactedError(
                        f"etcd: watch revision {start_revision} has been compacted "
                        f"(compacted at {resp.compact_revision})", resp.compact_revision))
                    return
                if resp.canceled:
                    stream._fail(BackendError(f"etcd: watch canceled: {resp.cancel_reason}"))
                    return
                if resp.events:
                    stream._push([Event(EventType.DELETE if e.type == 1 else EventType.PUT,
                                        _kv(e.kv), _kv(e.prev_kv) if e.HasField("prev_kv")
                                        else None) for e in resp.events])
        except grpc.aio.AioRpcError as e:
            if not stream.cancelled:
                stream._fail(_map_error(e))
        except asyncio.CancelledError:
            pass
        finally:
            if not created.done():
                created.set_result(None)
            call.cancel()

    async def close(self) -> None:
        for t in list(self._watch_tasks.values()):
            t.cancel()
        await self.channel.close()


@dataclass(frozen=True)
class EtcdTLS:
    """TLS to etcd: the CA that signed the server's certificate, our client
    certificate (for ``--client-cert-auth``), the name to check the server against."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as exc:
                raise ConfigurationError(f"etcd: cannot read {path}: {exc.strerror}") from None

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


OPTIONS = {"session_ttl", "timeout", "ca", "cert", "key", "server_name"}


async def open_backend(url: str) -> EtcdBackend:
    u = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(u.query))
    unknown = set(q) - OPTIONS
    if unknown:
        raise InvalidArgument(f"etcd: unknown options {sorted(unknown)}")
    userinfo, at, hosts = u.netloc.rpartition("@")
    endpoints = [e.strip() for e in hosts.split(",") if e.strip()]
    if not endpoints:
        raise InvalidArgument(f"etcd: no endpoint in {url!r}")
    for e in endpoints:
        host, sep, port = e.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise InvalidArgument(f"etcd: endpoint {e!r} must be HOST:PORT")
    user = None
    if at:
        name, colon, password = userinfo.partition(":")
        if not name or not colon:
            raise InvalidArgument("etcd: credentials must be USER:PASSWORD@")
        user = (urllib.parse.unquote(name), urllib.parse.unquote(password))
    if ("cert" in q) != ("key" in q):
        raise InvalidArgument("etcd: a client certificate needs both cert= and key=")
    tls = None
    if {"ca", "cert", "server_name"} & set(q):
        tls = EtcdTLS(q.get("ca"), q.get("cert"), q.get("key"), q.get("server_name"))
    backend = EtcdBackend(endpoints, float(q.get("timeout", DEFAULT_TIMEOUT)),
                          int(q["session_ttl"]) if "session_ttl" in q else None,
                          tls=tls, user=user)
    try:
        await backend.authenticate()
    except BaseException:
        await backend.close()
        raise
    return backend
