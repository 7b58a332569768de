"""An engine node embedded in this process.

This is the only module that imports the engine binding (`cowsqlpy._engine`,
built by cffi from `native/engine_build.py`); everything else in cowsqlpy
imports and works without libcowsql.

The engine is cowsql 1.15 (libcowsql0 from Debian bookworm-backports). It runs
its own thread (libuv loop) and serves both Raft peers and clients on its bind
address. Debian builds it with its asserts on: a request it cannot take aborts
the whole process (`cowsqlpy.versions` lists what this engine survives), so
untrusted clients should talk to a node run in its own process
(``python -m cowsqlpy node``).
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import re
import secrets
import socket
import ssl
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import EngineUnavailableError, NodeError, NodeStateError
from .protocol import SPARE, STANDBY, VOTER, NodeInfo
from .versions import COWSQL, EngineFeatures, describe_engine, features_for

if TYPE_CHECKING:
    from .front import Front, Limits
    from .rights import Rights
    from .tls import TLSConfig

log = logging.getLogger("cowsqlpy.node")

ENGINE_NAME = COWSQL
"""The engine this binding is built on."""

BOOTSTRAP_ID = 0x2DC171858C3155BE
"""The id with which a node on an empty data dir bootstraps a new cluster."""


_U64_MAX = (1 << 64) - 1
_TCP_ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")

DialFunc = Callable[[str], socket.socket]


#: see `Node.checkpoint_threshold`
DEFAULT_CHECKPOINT_THRESHOLD = 100


#: the block sizes the engine accepts (raft's uv I/O presets)
BLOCK_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144)


class RoleTargets(NamedTuple):
    voters: int  # target number of voters (the engine's default: 3)
    standbys: int  # target number of stand-bys (default: 0)


class SnapshotParams(NamedTuple):
    threshold: int  # raft log entries between snapshots
    trailing: int  # entries kept after a snapshot


# -- Loading the binding ---------------------------------------------------------

_binding: Any = None
_binding_lock = threading.Lock()


def _engine() -> Any:
    """The cffi module, loaded once; a missing library names what to install."""
    global _binding
    with _binding_lock:
        if _binding is None:
            try:
                binding: Any = importlib.import_module("cowsqlpy._engine")
            except ImportError as exc:
                raise EngineUnavailableError(
                    "the cowsql engine binding is not available "
                    f"({exc}); install libcowsql0 and libcowsql-dev from Debian "
                    "bookworm-backports, then reinstall cowsqlpy (pip install -e .) to build it"
                ) from exc
            version = int(binding.lib.cowsql_version_number())
            features_for(ENGINE_NAME, version)  # refuses an engine this code does not know
            log.info("engine: %s", describe_engine(ENGINE_NAME, version))
            _binding = binding
        return _binding


def engine_version() -> int:
    """`cowsql_version_number()` of the loaded library (major*10000 + minor*100 + patch)."""
    return int(_engine().lib.cowsql_version_number())


def engine_features() -> EngineFeatures:
    """The version-table entry for the loaded library."""
    return features_for(ENGINE_NAME, engine_version())


def relay_sockets(a: int, b: int, stop: int) -> int:
    """Move bytes both ways between the connected sockets `a` and `b` until one side
    closes or `stop` (e.g. a pipe's read end) becomes readable. Runs in C with the GIL
    released: call it on a thread of its own (the front's Raft pipes). Closes `a` and `b`.

    :returns: 0, or the errno that ended the relay.
    :raises EngineUnavailableError: the engine binding is not built.
    """
    return int(_engine().lib.cowsqlpy_relay(a, b, stop))


def tls_available() -> bool:
    """Whether the engine binding has the front's TLS in C (native/tls_relay.c: built
    with OpenSSL, libssl-dev). False also for a binding built before it existed.

    :raises EngineUnavailableError: the engine binding is not built.
    """
    lib = _engine().lib
    return hasattr(lib, "cowsqlpy_tls_available") and bool(lib.cowsqlpy_tls_available())


class NativeTLSClient:
    """A client TLS context in C (OpenSSL) for the front's Raft pipes, with the settings
    of `cowsqlpy.tls.make_client_context(config)`; it checks servers against
    `server_name` (`TLSConfig.check_name()`), as the Python client does.

    :raises EngineUnavailableError: no engine binding, or one without the TLS in C
        (`tls_available()` is False).
    :raises ssl.SSLError: unusable certificate, key or CA.
    """

    def __init__(self, config: TLSConfig, server_name: str) -> None:
        if not tls_available():
            raise EngineUnavailableError(
                "the engine binding has no TLS in C (built without OpenSSL, or before it "
                "existed): install libssl-dev and rebuild (scripts/setup.sh)"
            )
        binding = _engine()
        self._ffi, self._lib = binding.ffi, binding.lib
        err = self._ffi.new("char[256]")
        ctx = self._lib.cowsqlpy_tls_client_ctx(
            os.fsencode(config.cert), os.fsencode(config.key), os.fsencode(config.ca_path), err, 256
        )
        if ctx == self._ffi.NULL:
            reason = self._ffi.string(err).decode(errors="replace")
            raise ssl.SSLError(f"TLS client context: {reason}")
        self._ctx = self._ffi.gc(ctx, self._lib.cowsqlpy_tls_ctx_free)
        self.server_name = server_name
        self._name = server_name.encode()

    def settings(self) -> dict[str, object]:
        """What the context was set to, named as on `ssl.SSLContext` (for tests):
        ``options``, ``minimum_version``, ``verify_mode``, ``verify_flags``, ``ciphers``
        (the cipher names, in order)."""
        lib, ctx = self._lib, self._ctx
        size = int(lib.cowsqlpy_tls_ctx_ciphers(ctx, self._ffi.NULL, 0)) + 1
        out = self._ffi.new("char[]", size)
        lib.cowsqlpy_tls_ctx_ciphers(ctx, out, size)
        return {
            "options": int(lib.cowsqlpy_tls_ctx_options(ctx)),
            "minimum_version": int(lib.cowsqlpy_tls_ctx_min_version(ctx)),
            "verify_mode": int(lib.cowsqlpy_tls_ctx_verify_mode(ctx)),
            "verify_flags": int(lib.cowsqlpy_tls_ctx_verify_flags(ctx)),
            "ciphers": self._ffi.string(out).decode().split(":"),
        }

    def connect(self, fd: int, timeout: float) -> NativeTLSSession:
        """The client handshake on the connected TCP socket `fd` (left non-blocking; still
        the caller's) within `timeout` seconds, GIL released.

        :raises ssl.SSLCertVerificationError: the server's certificate was refused.
        :raises TimeoutError: no handshake within `timeout`.
        :raises ssl.SSLError: any other failure of the handshake or the connection.
        """
        ffi, lib = self._ffi, self._lib
        err = ffi.new("char[256]")
        reason = ffi.new("int *")
        ms = max(1, min(int(timeout * 1000), 2**31 - 1))
        session = lib.cowsqlpy_tls_connect(self._ctx, fd, self._name, ms, reason, err, 256)
        if session == ffi.NULL:
            message = ffi.string(err).decode(errors="replace")
            if reason[0] == lib.COWSQLPY_TLS_UNTRUSTED:
                raise ssl.SSLCertVerificationError(message)
            if reason[0] == lib.COWSQLPY_TLS_TIMED_OUT:
                raise TimeoutError(message)
            raise ssl.SSLError(message)
        return NativeTLSSession(self, session)


class NativeTLSSession:
    """One client TLS session `NativeTLSClient.connect` made; `relay` it once, or `close`."""

    def __init__(self, client: NativeTLSClient, session: Any) -> None:
        self._client = client  # keeps the context alive as long as the session
        self._session: Any = session

    def relay(self, plain: int, stop: int) -> int:
        """Move bytes between the socket `plain` and the TLS session (engine bytes <->
        TLS records) until a side closes or `stop` becomes readable; in C with the GIL
        released: call it on a thread of its own. Frees the session and closes both its
        TCP socket and `plain`.

        :returns: 0, or the errno that ended the relay (EPROTO: a TLS error).
        :raises ValueError: the session was relayed or closed already.
        """
        session, self._session = self._session, None
        if session is None:
            raise ValueError("this TLS session was relayed or closed already")
        return int(self._client._lib.cowsqlpy_tls_relay(session, plain, stop))

    def close(self) -> None:
        """Free a session never relayed (its TCP socket stays the caller's)."""
        session, self._session = self._session, None
        if session is not None:
            self._client._lib.cowsqlpy_tls_free(session)


def generate_id(address: str) -> int:
    """A fresh random node id, as the engine generates it (mixes in `address`)."""
    _check_address(address)
    return int(_engine().lib.cowsql_generate_node_id(address.encode()))


# -- Argument checks -------------------------------------------------------------


def _check_id(node_id: int) -> int:
    if isinstance(node_id, bool) or not isinstance(node_id, int):
        raise TypeError(f"node id must be an int, not {type(node_id).__name__}")
    if not 0 < node_id <= _U64_MAX:
        raise ValueError(f"node id must be in 1..2**64-1, got {node_id}")
    return node_id


def _check_address(address: str, *, allow_auto: bool = False) -> str:
    """'host:port' or '@name' (abstract unix socket; '@' alone = auto if allowed)."""
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, not {type(address).__name__}")
    if address.startswith("@"):
        if address == "@" and not allow_auto:
            raise ValueError("'@' (auto-named socket) is only valid as a bind address")
        if "\0" in address or len(address) > 107:
            raise ValueError(f"bad abstract socket address {address!r}")
        return address
    m = _TCP_ADDRESS.match(address)
    if m is None or not 0 <= int(m.group("port")) <= 65535:
        raise ValueError(f"address must be 'host:port' or '@name', got {address!r}")
    return address


def _is_loopback_address(address: str) -> bool:
    if address.startswith("@"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host.strip("[]"), 0))
        return int(s.getsockname()[1])


def _resolve_port_zero(address: str) -> str:
    """The engine does not report an OS-chosen port, so pick a free one here."""
    if address.startswith("@") or not address.endswith(":0"):
        return address
    host = address.rsplit(":", 1)[0]
    return f"{host}:{_free_port(host)}"


# -- The dial callback (called from the engine's threads) --------------------------


_dial_installed = False


def _install_dial_callback(ffi: Any) -> None:
    global _dial_installed
    if _dial_installed:
        return

    @ffi.def_extern()
    def cowsqlpy_dial(arg: Any, address: Any, fd_out: Any) -> int:
        # Runs on a libuv worker thread holding the GIL; it must never raise
        # into C: any failure is a failed connection for the engine.
        try:
            node: Node = ffi.from_handle(arg)
            sock = node._call_dial(ffi.string(address).decode())
            fd_out[0] = sock.detach()
            return 0
        except BaseException as exc:  # C cannot take an exception
            log.warning("dial callback failed: %r", exc)
            return 1

    _dial_installed = True


# -- Node ------------------------------------------------------------------------


class _Handle:
    """The engine node pointer, owned so that a finalizer can free it without `Node`."""

    def __init__(self, ffi: Any, lib: Any, ptr: Any) -> None:
        self.ffi, self.lib, self.ptr = ffi, lib, ptr
        self.running = False
        self.lock = threading.Lock()

    def errmsg(self) -> str:
        return self.ffi.string(self.lib.cowsql_node_errmsg(self.ptr)).decode(errors="replace")

    def stop(self) -> tuple[int, str]:
        with self.lock:
            if self.ptr is None or not self.running:
                return 0, ""
            rv = self.lib.cowsql_node_stop(self.ptr)
            self.running = False
            return rv, (self.errmsg() if rv else "")

    def release(self) -> None:
        self.stop()
        with self.lock:
            if self.ptr is not None:
                self.lib.cowsql_node_destroy(self.ptr)
                self.ptr = None


class Node:
    """A replicated SQLite node that runs inside this process.

    ``tls=`` or ``guard=True`` put the guarded front (`cowsqlpy.front`) on `address` and
    the engine on an abstract socket of this process (docs/security.md); with ``tls=``,
    ``rights=`` (`cowsqlpy.rights.Rights`) gives client certificates read-only,
    read-write or admin rights (the node's own certificate must be a peer).

    Options can be changed until `start()`; afterwards they raise
    `NodeStateError`. After `stop()`, `start()` runs the node again on the same
    data dir. `close()` stops and frees it and is idempotent.

    :raises ValueError/TypeError: bad id, address or option.
    :raises OSError: the data dir cannot be created.
    :raises EngineUnavailableError: libcowsql is not installed (or cowsqlpy was built without it).
    """

    def __init__(
        self,
        id: int,  # noqa: A002 - the engine's and go-cowsql's name for it
        address: str,
        data_dir: str | os.PathLike[str],
        *,
        bind_address: str | None = None,
        network_latency: float | None = None,
        failure_domain: int | None = None,
        snapshot_params: SnapshotParams | tuple[int, int] | None = None,
        checkpoint_threshold: int | None = DEFAULT_CHECKPOINT_THRESHOLD,
        dial: DialFunc | None = None,
        block_size: int | None = None,
        auto_recovery: bool | None = None,
        role_management: RoleTargets | None = None,
        tls: TLSConfig | None = None,
        guard: bool = False,
        front_limits: Limits | None = None,
        allow_remote: bool = False,
        rights: Rights | None = None,
    ) -> None:
        self._id = _check_id(id)
        self._address = _resolve_port_zero(_check_address(address))
        self._data_dir = os.fspath(data_dir)
        self._handle: _Handle | None = None
        self._closed = False
        self._bind_address: str | None = None
        self._network_latency: float | None = None
        self._failure_domain: int | None = None
        self._snapshot_params: SnapshotParams | None = None
        self._checkpoint_threshold: int | None = None
        self._dial: DialFunc | None = None
        self._block_size: int | None = None
        self._auto_recovery: bool | None = None
        self._role_management: RoleTargets | None = None
        self._tls = tls
        self._guard = guard or tls is not None
        self._front_limits = front_limits
        self._allow_remote = allow_remote
        self._rights = rights
        self._front: Front | None = None
        self.dial_calls = 0
        """How many Raft connections the engine asked `dial` for."""
        self.bind_address = bind_address
        self.network_latency = network_latency
        self.failure_domain = failure_domain
        self.snapshot_params = snapshot_params
        self.checkpoint_threshold = checkpoint_threshold
        self.checkpoint_threshold_applied = False
        """Whether the engine took `checkpoint_threshold` at the last start (see there)."""
        self.dial = dial
        self.block_size = block_size
        self.auto_recovery = auto_recovery
        self.role_management = role_management
        if rights is not None and tls is None:
            raise ValueError("rights= needs tls= (rights come from client certificates)")
        if self._guard and bind_address is not None:
            raise ValueError("bind_address cannot be set with tls= or guard=: the front takes the public "
                             "address and the engine an internal one")
        os.makedirs(self._data_dir, exist_ok=True)
        if not os.access(self._data_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "data dir is not writable", self._data_dir)
        self._ffi_self = None  # cffi handle to self, kept alive while the engine may call back

    # -- identity ---------------------------------------------------------------

    @property
    def id(self) -> int:
        return self._id

    @property
    def address(self) -> str:
        """The address other nodes and clients use to reach this node."""
        return self._address

    @property
    def data_dir(self) -> str:
        return self._data_dir

    @property
    def running(self) -> bool:
        return self._handle is not None and self._handle.running

    # -- options (settable until start) -------------------------------------------

    def _check_settable(self, what: str) -> None:
        if self._closed:
            raise NodeStateError(f"cannot set {what}: node is closed")
        if self.running:
            raise NodeStateError(f"cannot set {what} while the node is running")

    @property
    def bind_address(self) -> str:
        """Where the node listens; read back from the engine once running."""
        if self.running:
            assert self._handle is not None
            h = self._handle
            return h.ffi.string(h.lib.cowsql_node_get_bind_address(h.ptr)).decode()
        return self._bind_address or self._address

    @bind_address.setter
    def bind_address(self, value: str | None) -> None:
        self._check_settable("bind_address")
        self._bind_address = None if value is None else _resolve_port_zero(_check_address(value, allow_auto=True))

    @property
    def network_latency(self) -> float | None:
        """Expected one-way latency in seconds; the engine derives heartbeat (x1.5) and
        election timeout (x15) from it. None keeps the engine default (3 s election)."""
        return self._network_latency

    @network_latency.setter
    def network_latency(self, value: float | None) -> None:
        self._check_settable("network_latency")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError("network_latency must be seconds as a number")
            if not 0.001 <= value <= 3600:
                raise ValueError(f"network_latency must be in 0.001..3600 s, got {value}")
        self._network_latency = value

    @property
    def failure_domain(self) -> int | None:
        return self._failure_domain

    @failure_domain.setter
    def failure_domain(self, value: int | None) -> None:
        self._check_settable("failure_domain")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
                raise ValueError(f"failure_domain must be an int in 0..2**64-1, got {value!r}")
        self._failure_domain = value

    @property
    def snapshot_params(self) -> SnapshotParams | None:
        return self._snapshot_params

    @snapshot_params.setter
    def snapshot_params(self, value: SnapshotParams | tuple[int, int] | None) -> None:
        self._check_settable("snapshot_params")
        if value is None:
            self._snapshot_params = None
            return
        threshold, trailing = value
        for name, v in (("threshold", threshold), ("trailing", trailing)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 1 << 32:
                raise ValueError(f"snapshot {name} must be a positive 32-bit int, got {v!r}")
        if threshold > trailing:
            raise ValueError(f"snapshot threshold ({threshold}) must not exceed trailing ({trailing})")
        self._snapshot_params = SnapshotParams(threshold, trailing)

    @property
    def checkpoint_threshold(self) -> int | None:
        """WAL frames after which each node checkpoints (None: the engine's 1,000).

        cowsql 1.15 (as libdqlite 1.11) makes every applied commit cost time in
        proportion to the WAL's length (each apply opens a follower connection to
        decide whether to checkpoint, which rebuilds the WAL index from the whole
        WAL), so a short WAL keeps commits fast (docs/benchmarks.md). The engine has no setter; the value
        is written into its config only where the installed build's layout is
        recognised (`checkpoint_threshold_applied`), else the default stays.
        """
        return self._checkpoint_threshold

    @checkpoint_threshold.setter
    def checkpoint_threshold(self, value: int | None) -> None:
        self._check_settable("checkpoint_threshold")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= 1_000_000):
            raise ValueError(f"checkpoint threshold must be an int in 1..1000000 or None, got {value!r}")
        self._checkpoint_threshold = value

    @property
    def dial(self) -> DialFunc | None:
        return self._dial

    @dial.setter
    def dial(self, value: DialFunc | None) -> None:
        self._check_settable("dial")
        if value is not None and not callable(value):
            raise TypeError("dial must be a callable (address) -> connected socket")
        self._dial = value

    @property
    def block_size(self) -> int | None:
        """Bytes per disk write of the Raft log (None: the engine's default, 4096).
        The engine takes only its preset sizes: 512, 1024, 2048, 4096, 8192,
        16384, 32768, 65536, 131072, 262144."""
        return self._block_size

    @block_size.setter
    def block_size(self, value: int | None) -> None:
        self._check_settable("block_size")
        if value is not None and (isinstance(value, bool) or value not in BLOCK_SIZES):
            raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {value!r}")
        self._block_size = value

    @property
    def auto_recovery(self) -> bool | None:
        """Whether the engine may delete data files it finds corrupt at start
        (None: the engine's default, on). Off trades availability for never
        dropping data silently: a corrupt file then stops `start()`."""
        return self._auto_recovery

    @auto_recovery.setter
    def auto_recovery(self, value: bool | None) -> None:
        self._check_settable("auto_recovery")
        if value is not None and not isinstance(value, bool):
            raise TypeError("auto_recovery must be a bool or None")
        self._auto_recovery = value

    @property
    def role_management(self) -> RoleTargets | None:
        """Engine-side role management: the leader promotes and demotes nodes on
        its own to keep these targets (None: off; `cowsqlpy.App` balances roles
        itself and leaves it off)."""
        return self._role_management

    @role_management.setter
    def role_management(self, value: RoleTargets | None) -> None:
        self._check_settable("role_management")
        if value is not None:
            if not isinstance(value, RoleTargets):
                raise TypeError("role_management must be a RoleTargets(voters, standbys) or None")
            if not (1 <= value.voters <= 255 and 0 <= value.standbys <= 255):
                raise ValueError(f"role targets out of range: {value}")
        self._role_management = value

    def handover(self) -> bool:
        """Hand this node's leadership and vote to others before a stop (the engine's
        own hand-over); True if everything was handed over.

        :raises NodeStateError: the node is not running.
        """
        if not self.running:
            raise NodeStateError("cannot hand over: node is not running")
        assert self._handle is not None
        h = self._handle
        return bool(h.lib.cowsql_node_handover(h.ptr) == 0)

    def _call_dial(self, address: str) -> socket.socket:
        self.dial_calls += 1
        dial = self._dial
        if dial is None:  # TLS: the front dials peers' fronts over mutual TLS
            assert self._front is not None
            dial = self._front.dial
        sock = dial(address)
        if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
            if isinstance(sock, socket.socket):
                sock.close()
            raise TypeError(f"dial returned {type(sock).__name__}, not a connected stream socket")
        sock.setblocking(True)  # the engine takes over a plain blocking fd
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see cowsqlpy_connect_nodelay
        return sock

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread; the node serves clients when this returns.

        :raises NodeStateError: already running, or closed.
        :raises NodeError: the engine refused (address in use, bad data dir, ...).
        """
        if self._closed:
            raise NodeStateError("cannot start: node is closed")
        if self.running:
            raise NodeStateError("node is already running")
        binding = _engine()
        ffi, lib = binding.ffi, binding.lib
        self._start_front()
        out = ffi.new("cowsql_node **")
        rv = lib.cowsql_node_create(self._id, self._address.encode(), self._data_dir.encode(), out)
        handle = _Handle(ffi, lib, out[0])
        try:
            if rv != 0:
                raise NodeError(f"cannot create node: {handle.errmsg() or 'error ' + str(rv)}", rv)
            self._configure(handle)
            rv = lib.cowsql_node_start(handle.ptr)
            if rv != 0:
                raise NodeError(f"cannot start node {self._address}: {handle.errmsg()}", rv)
        except BaseException:
            if handle.ptr != ffi.NULL:
                handle.release()
            self._stop_front()
            raise
        handle.running = True
        self._handle = handle
        self._finalizer = weakref.finalize(self, handle.release)
        log.info("node %d started on %s (data dir %s)", self._id, self.bind_address, self._data_dir)

    def _configure(self, h: _Handle) -> None:
        lib, ffi = h.lib, h.ffi

        def check(rv: int, what: str) -> None:
            if rv != 0:
                raise NodeError(f"cannot set {what}: {h.errmsg() or 'error ' + str(rv)}", rv)

        # The engine asserts on start without a listener: always bind.
        bind = self._front_engine_address or self._bind_address or self._address
        check(lib.cowsql_node_set_bind_address(h.ptr, bind.encode()), f"bind address {bind} (in use?)")
        if self._network_latency is not None:
            ms = max(1, round(self._network_latency * 1000))
            check(lib.cowsql_node_set_network_latency_ms(h.ptr, ms), "network latency")
        if self._failure_domain is not None:
            check(lib.cowsql_node_set_failure_domain(h.ptr, self._failure_domain), "failure domain")
        if self._snapshot_params is not None:
            check(lib.cowsql_node_set_snapshot_params(h.ptr, *self._snapshot_params), "snapshot params")
        if self._block_size is not None:
            check(lib.cowsql_node_set_block_size(h.ptr, self._block_size), f"block size {self._block_size}")
        if self._auto_recovery is not None:
            check(lib.cowsql_node_set_auto_recovery(h.ptr, self._auto_recovery), "auto recovery")
        if self._role_management is not None:
            check(lib.cowsql_node_set_target_voters(h.ptr, self._role_management.voters), "target voters")
            check(lib.cowsql_node_set_target_standbys(h.ptr, self._role_management.standbys), "target stand-bys")
            check(lib.cowsql_node_enable_role_management(h.ptr), "role management")
        self.checkpoint_threshold_applied = False
        if self._checkpoint_threshold is not None:
            self.checkpoint_threshold_applied = lib.cowsqlpy_set_checkpoint_threshold(
                h.ptr, self._id, self._address.encode(), self._checkpoint_threshold) == 0
            if not self.checkpoint_threshold_applied:
                log.warning("node %d: this libcowsql build's layout is not recognised; the WAL "
                            "checkpoint threshold stays at the engine default", self._id)
        if self._dial is not None or self._tls is not None:
            _install_dial_callback(ffi)
            self._ffi_self = ffi.new_handle(self)
            check(lib.cowsql_node_set_connect_func(h.ptr, lib.cowsqlpy_dial, self._ffi_self), "dial function")
        else:
            check(lib.cowsql_node_set_connect_func(h.ptr, lib.cowsqlpy_connect_nodelay, ffi.NULL), "dial function")

    # -- the front (TLS and the guard) ----------------------------------------------

    @property
    def front(self) -> Front | None:
        """The guarded public listener while running with ``tls=`` or ``guard=True``."""
        return self._front

    @property
    def _front_engine_address(self) -> str | None:
        return self._front.engine_address if self._front is not None else None

    def _start_front(self) -> None:
        """With ``tls=`` or ``guard=True``: the front takes the public address and the
        engine an abstract socket of this process (cowsql serves those to its own
        process only), so every client and peer goes through the guard."""
        if not self._guard:
            if not _is_loopback_address(self._bind_address or self._address):
                log.warning("node %d listens on %s without TLS or the guard: any peer that reaches "
                            "it can read, write and change the cluster, and bad frames can abort "
                            "this process (docs/security.md)", self._id, self._bind_address or self._address)
            return
        from .front import Front

        internal = f"@cowsqlpy-{os.getpid()}-{self._id:x}-{secrets.token_hex(4)}"
        front = Front(self._address, internal, engine_features(), tls=self._tls, limits=self._front_limits,
                      allow_remote=self._allow_remote, rights=self._rights)
        front.start()  # raises OSError when the public address is taken
        self._front = front

    def _stop_front(self) -> None:
        front, self._front = self._front, None
        if front is not None:
            front.stop()

    def stop(self) -> None:
        """Stop the engine thread and free it; the data dir stays.

        :raises NodeStateError: the node is not running.
        """
        if not self.running:
            raise NodeStateError("node is not running" + (" (closed)" if self._closed else ""))
        assert self._handle is not None
        self._finalizer.detach()
        handle, self._handle = self._handle, None
        rv, msg = handle.stop()
        handle.release()
        self._stop_front()
        self._ffi_self = None
        log.info("node %d stopped", self._id)
        if rv != 0:
            raise NodeError(f"node stop failed: {msg}", rv)

    def close(self) -> None:
        """Stop the node if running and free it. Safe to call more than once."""
        if self._closed:
            return
        try:
            if self.running:
                self.stop()
        finally:
            self._closed = True

    def __enter__(self) -> Node:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self.running else "stopped"
        return f"<Node id={self._id} address={self._address!r} {state}>"


def reconfigure_membership(data_dir: str | os.PathLike[str], nodes: Sequence[NodeInfo | tuple[int, str, int]]) -> None:
    """Force the Raft configuration stored in `data_dir` to `nodes` (id, address, role).

    For recovery after the majority is lost: run it on the most up-to-date
    node's (stopped) data dir, copy that dir to the others listed, then start
    them. Roles: 0 voter, 1 stand-by, 2 spare.

    :raises ValueError: empty or invalid node list (it needs at least one voter).
    :raises NodeError: the engine refused.
    """
    infos = [NodeInfo(*n) for n in nodes]
    if not infos:
        raise ValueError("reconfigure_membership needs at least one node")
    ids = [_check_id(i.id) for i in infos]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate node ids")
    for info in infos:
        _check_address(info.address)
        if info.role not in (VOTER, STANDBY, SPARE):
            raise ValueError(f"role must be 0 (voter), 1 (stand-by) or 2 (spare), got {info.role!r}")
    if not any(i.role == VOTER for i in infos):
        raise ValueError("the new configuration needs at least one voter")
    path = os.fspath(data_dir)
    if not os.path.isdir(path):
        raise FileNotFoundError(2, "data dir does not exist", path)

    binding = _engine()
    ffi, lib = binding.ffi, binding.lib
    out = ffi.new("cowsql_node **")
    # As go-dqlite does: a throw-away node object on the dir, never started.
    rv = lib.cowsql_node_create(1, b"1", path.encode(), out)
    handle = _Handle(ffi, lib, out[0])
    try:
        if rv != 0:
            raise NodeError(f"cannot open data dir: {handle.errmsg()}", rv)
        c_infos = ffi.new("cowsql_node_info_ext[]", len(infos))
        keep = []
        for slot, info in zip(c_infos, infos, strict=True):
            addr = ffi.new("char[]", info.address.encode())
            keep.append(addr)
            slot.size = ffi.sizeof("cowsql_node_info_ext")
            slot.id = info.id
            slot.address = int(ffi.cast("uintptr_t", addr))
            slot.cowsql_role = info.role
        rv = lib.cowsql_node_recover_ext(handle.ptr, c_infos, len(infos))
        if rv != 0:
            raise NodeError(f"recover failed: {handle.errmsg()}", rv)
    finally:
        handle.release()


def default_dial(timeout: float = 5.0) -> DialFunc:
    """A Python dial function like the built-in one (TCP or abstract unix socket); a base
    for wrappers (TLS, fault injection)."""

    def dial(address: str) -> socket.socket:
        if address.startswith("@"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect("\0" + address[1:])
            return sock
        host, port = address.rsplit(":", 1)
        return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)

    return dial


__all__ = [
    "BOOTSTRAP_ID",
    "VOTER",
    "STANDBY",
    "SPARE",
    "Node",
    "NodeInfo",
    "SnapshotParams",
    "RoleTargets",
    "BLOCK_SIZES",
    "ENGINE_NAME",
    "engine_version",
    "engine_features",
    "generate_id",
    "relay_sockets",
    "tls_available",
    "NativeTLSClient",
    "NativeTLSSession",
    "reconfigure_membership",
    "default_dial",
]
