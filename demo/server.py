"""One demo node: an embedded :class:`cowsqlpy.App`, a kvstore ``cowsql://`` handle
on the App's node store, and the HTTP server, all on cowsqlpy's background loop.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
import ssl
import urllib.parse
from http import HTTPStatus
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

import kvstore
from cowsqlpy.runtime import background_loop, enable_busy_poll, run_sync
from cowsqlpy.tls import TLSConfig, make_server_context
from kvstore import AsyncKV, AsyncTempKey, KVError

from . import DATABASE, DEFAULT_BUSY_POLL, DEFAULT_COMPACT_RETENTION

if TYPE_CHECKING:
    from cowsqlpy.app import App

from .api import REGISTRY, REGISTRY_TTL, Api, NodeIdentity

log = logging.getLogger("demo")


def split_address(address: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port). :raises ValueError: malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def check_port_free(address: str, what: str) -> None:
    """:raises OSError: the port cannot be bound, with a message that says which and why."""
    host, port = split_address(address, what)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            why = "is already in use (another demo node, or dqlite-demo, still running?)" \
                if exc.errno == errno.EADDRINUSE else f"cannot be bound: {exc.strerror}"
            raise OSError(exc.errno, f"{what} {address} {why}") from None


#: seconds a connection has to send its first request's headers (slow clients are cut)
HEADER_TIMEOUT = 10.0
#: HTTP connections a node keeps at once; more are closed at accept
MAX_HTTP_CONNECTIONS = 2000


class _JsonErrors(RequestHandler):
    """aiohttp's connection handler with the demo's rules: its own parser errors (bad
    request line, oversized headers, ...) answered as JSON like every other error, a
    deadline for the first request's headers, and a cap on open connections."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._manager
        if server is not None and len(server.connections) > MAX_HTTP_CONNECTIONS:
            log.warning("HTTP: %d connections open, closing a new one", MAX_HTTP_CONNECTIONS)
            self.force_close()
            return
        asyncio.get_running_loop().call_later(HEADER_TIMEOUT, self._first_request_due)

    def _first_request_due(self) -> None:
        if self._request_count == 0 and self.transport is not None:
            self.force_close()  # slowloris: no complete request line and headers yet

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if a response started
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "error"
        code = "internal" if status >= 500 else "bad_request" if status == 400 else phrase.lower().replace(" ", "_")
        body = json.dumps({"error": code, "message": message or phrase}).encode()
        resp = web.Response(status=status, body=body, content_type="application/json")
        resp.force_close()
        return resp


class _DemoServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrors(self, loop=self._loop, **self._kwargs)


class DemoNode:
    """A running demo node. ``start()`` returns once the HTTP API serves."""

    def __init__(self, api: str, db: str, data_dir: str, *, join: list[str] | None = None,
                 network_latency: float | None = None, roles_adjustment_frequency: float = 5.0,
                 request_timeout: float = 5.0, compact_retention: int = DEFAULT_COMPACT_RETENTION,
                 busy_poll: float = DEFAULT_BUSY_POLL, linearizable_reads: bool = True,
                 tls: TLSConfig | None = None, api_client_certs: bool = True) -> None:
        self.api_address, self.db_address = api, db
        self.tls = tls   # mutual TLS for the node (Raft, clients) and HTTPS for the API
        self.api_client_certs = api_client_certs   # HTTPS clients must show a trusted cert
        self.linearizable_reads = linearizable_reads
        self.busy_poll = busy_poll
        self.compact_retention = compact_retention
        self.data_dir = data_dir
        self.join = join or []
        self.network_latency = network_latency
        self.roles_adjustment_frequency = roles_adjustment_frequency
        self.request_timeout = request_timeout
        self._app: App | None = None
        self.kv: AsyncKV | None = None
        self._registration: AsyncTempKey | None = None
        self.api: Api | None = None
        self._server: asyncio.AbstractServer | None = None
        self._web: web.Server | None = None

    def start_app(self) -> None:
        from cowsqlpy.app import App

        split_address(self.api_address, "--api")
        split_address(self.db_address, "--db")
        check_port_free(self.api_address, "--api")
        fresh = not os.path.exists(os.path.join(self.data_dir, "cowsqlpy-app.sqlite"))
        if fresh:
            check_port_free(self.db_address, "--db")
        os.makedirs(self.data_dir, exist_ok=True)
        self._app = App(self.data_dir, self.db_address, cluster=self.join or None,
                       roles_adjustment_frequency=self.roles_adjustment_frequency,
                       network_latency=self.network_latency, tls=self.tls)

    @property
    def app(self) -> App:
        """The node's App (after `start_app`)."""
        if self._app is None:
            raise RuntimeError("start_app() first")
        return self._app

    def start_http(self) -> None:
        run_sync(self._start_http(), self.request_timeout + 60)

    async def _start_http(self) -> None:
        read = "linearizable" if self.linearizable_reads else "serializable"
        url = (f"cowsql:///{DATABASE}?timeout={self.request_timeout}"
               f"&auto_compact={self.compact_retention}&read={read}")
        if self.tls is not None:
            url += "&" + urllib.parse.urlencode(
                {"cert": os.fspath(self.tls.cert), "key": os.fspath(self.tls.key),
                 "ca": self.tls.ca_path})
        self.kv = kv = await kvstore.open_async(url, store=self.app.store)
        me = NodeIdentity(self.app.id, self.db_address, self.api_address)
        # The API address of every node is kept in the store under a lease (put again
        # if an outage outlives it), so any node's /_cluster can name and probe every
        # other node's API.
        value = json.dumps({"id": f"{me.id:#x}", "db": me.db, "api": me.api,
                            "pid": os.getpid()}).encode()
        self._registration = await kv.temp_key(REGISTRY + me.db.encode(), value,
                                               ttl=REGISTRY_TTL, renew=True)
        self.api = Api(kv, self.app, me, enable_busy_poll(background_loop(), self.busy_poll),
                       tls=self.tls)
        host, port = split_address(self.api_address, "--api")
        self._web = _DemoServer(self.api.handle, access_log=None, keepalive_timeout=75)
        self._server = await background_loop().create_server(
            self._web, host, port, reuse_address=True, backlog=1024,
            ssl=None if self.tls is None else self._https_context(self.tls))

    def _https_context(self, tls: TLSConfig) -> ssl.SSLContext:
        ctx = make_server_context(tls)
        if not self.api_client_certs:
            ctx.verify_mode = ssl.CERT_NONE   # server authentication only (browsers, wrk)
        return ctx

    def stop(self, handover_timeout: float = 60.0) -> None:
        """Stop serving HTTP (in-flight requests finish, watches end), release the
        registry entry, then hand the node's role and leadership over and stop."""
        try:
            run_sync(self._stop_http(), 30)
        except Exception:  # stopping anyway
            log.warning("stopping the HTTP server failed", exc_info=True)
        if self._app is not None:
            self._app.close(timeout=handover_timeout)

    async def _stop_http(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.api is not None:
            self.api.stop_watches()
        if self._web is not None:
            await self._web.shutdown(5.0)
        if self._server is not None:
            await self._server.wait_closed()
        enable_busy_poll(background_loop(), 0)
        if self.api is not None:
            await self.api.close()
        if self._registration is not None:
            try:
                await asyncio.wait_for(self._registration.release(), 2.0)
            except (KVError, TimeoutError):
                pass   # the lease expires by itself
        if self.kv is not None:
            await self.kv.close()
