"""App: the node lifecycle (bootstrap or join, the roles loop, hand-over, close)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .. import protocol
from .._loop import background_loop, run_sync, wait_event
from ..client import Client, Session, SyncClient, find_leader
from ..errors import ClusterMismatchError, Error, NodeIdentityError, NoLeaderError
from ..node import (
    BOOTSTRAP_ID,
    DialFunc,
    Node,
    SnapshotParams,
    _check_address,
    _resolve_port_zero,
    generate_id,
)
from ..protocol import SPARE, VOTER, NodeInfo
from ..retry import DEFAULT_POLICY, RetryPolicy, retrying
from ..rights import Rights
from ..store import SqliteNodeStore
from ..tls import TLSConfig, client_tls
from .files import STATE_FILE, Identity, check_foreign_dir
from .roles import NodeState, RolesPlanner, role_name

if TYPE_CHECKING:
    from ..dbapi import Connection

T = TypeVar("T")

INTERNAL_DATABASE = "__cowsqlpy__"
HANDOVER_TIMEOUT = 60.0


async def _in_background(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` on the background loop from whatever loop is running now."""
    loop = background_loop()
    if asyncio.get_running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


async def _cluster_id(session: Session, *, create: bool) -> str | None:
    """The cluster's UUID from the internal database (created if `create` and missing)."""
    await session.open(INTERNAL_DATABASE)
    if create:
        await session.exec_sql(
            "CREATE TABLE IF NOT EXISTS cluster (k INTEGER PRIMARY KEY CHECK (k = 1), uuid TEXT NOT NULL)"
        )
        await session.exec_sql("INSERT OR IGNORE INTO cluster (k, uuid) VALUES (1, ?)", [str(uuid.uuid4())])
    try:
        rows = await session.query_all("SELECT uuid FROM cluster WHERE k = 1")
    except Error as exc:
        if exc.code == 1:  # no such table: nobody created it yet
            return None
        raise
    return str(rows[0][0]) if rows else None


# -- App ------------------------------------------------------------------------------


class App:
    """An engine node that bootstraps or joins a cluster and keeps its roles balanced.

    :param data_dir: the node's directory (created if missing). It keeps the
        engine's data and the App's identity and node store.
    :param address: 'host:port' other nodes and clients use to reach this node
        ('127.0.0.1:0' picks a free port). Needed on first start; on restart it
        may be omitted and must otherwise equal the stored one.
    :param cluster: addresses of existing nodes to join (first start only;
        without it the first start bootstraps a new cluster). On restart it is
        only used to check that the data dir belongs to that cluster.
    :param voters: voters to keep (odd); :param standbys: stand-bys to keep.
    :param roles_adjustment_frequency: seconds between role checks (the leader
        acts; every node refreshes its node store).
    :param network_latency: seconds; the engine derives heartbeat (x1.5) and
        election timeout (x15) from it. None keeps the engine default (3 s elections).
    :param policy: retry policy of the connections `open()` returns and of the
        App's own requests.
    :param dial: how the engine dials its Raft peers (see `Node`); e.g. a
        `cowsqlpy.testing.FaultProxy`.
    :param tls, guard, rights: as `Node` (docs/security.md); with ``rights=`` the App's
        own certificate must be a peer (it dials Raft and changes roles with it).

    :raises NodeIdentityError: restart with another address, a data dir made by
        something else, or (`ClusterMismatchError`) by a node of another cluster.
    :raises NodeError: the engine refused to start.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        address: str | None = None,
        *,
        cluster: Iterable[str] | None = None,
        voters: int = 3,
        standbys: int = 3,
        roles_adjustment_frequency: float = 30.0,
        failure_domain: int | None = None,
        network_latency: float | None = None,
        snapshot_params: SnapshotParams | tuple[int, int] | None = None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        policy: RetryPolicy = DEFAULT_POLICY,
        dial: DialFunc | None = None,
        tls: TLSConfig | None = None,
        guard: bool = False,
        rights: Rights | None = None,
    ) -> None:
        if isinstance(voters, bool) or not isinstance(voters, int) or voters < 1 or voters % 2 == 0:
            raise ValueError(f"voters must be a positive odd number, got {voters!r}")
        if isinstance(standbys, bool) or not isinstance(standbys, int) or standbys < 0:
            raise ValueError(f"standbys must be >= 0, got {standbys!r}")
        if not roles_adjustment_frequency > 0:
            raise ValueError("roles_adjustment_frequency must be positive seconds")
        seeds = [a.strip() for a in (cluster.split(",") if isinstance(cluster, str) else cluster or []) if a.strip()]
        for a in seeds:
            _check_address(a)
        self.data_dir = os.fspath(data_dir)
        self.voters = voters
        self.standbys = standbys
        self.roles_adjustment_frequency = float(roles_adjustment_frequency)
        self.policy = policy
        self.tls = tls  # mutual TLS for the node (its front and Raft) and every client call
        self._client_tls = client_tls(tls)
        self.log = logger or logging.getLogger("cowsqlpy.app")
        os.makedirs(self.data_dir, exist_ok=True)

        state_path = os.path.join(self.data_dir, STATE_FILE)
        if not os.path.exists(state_path):
            check_foreign_dir(self.data_dir)
        self._identity = Identity(state_path)
        try:
            self._store = SqliteNodeStore(state_path)
            try:
                known = self._identity.load()
                if known is None:
                    if address is None:
                        raise ValueError("address is required on a node's first start")
                    address = _resolve_port_zero(_check_address(address))
                    node_id = generate_id(address) if seeds else BOOTSTRAP_ID
                    self._store.set([NodeInfo(node_id, address, VOTER)] if not seeds else seeds)
                    self._identity.save(node_id, address, join_pending=bool(seeds))
                    known = self._identity.load()
                    assert known is not None
                node_id, stored_address, self._cluster_uuid, self._join_pending = known
                if address is not None and address != stored_address:
                    raise NodeIdentityError(
                        f"data dir {self.data_dir} belongs to node {node_id:#x} at {stored_address}, "
                        f"not {address}: a node cannot change its address"
                    )
                self._id, self._address = node_id, stored_address
                if seeds and not self._join_pending and self._cluster_uuid is not None:
                    run_sync(self._check_seeds(seeds))
                self._node = Node(
                    self._id,
                    self._address,
                    self.data_dir,
                    network_latency=network_latency,
                    failure_domain=failure_domain,
                    snapshot_params=snapshot_params,
                    dial=dial,
                    tls=tls,
                    guard=guard,
                    rights=rights,
                )
                self._node.start()
            except BaseException:
                self._store.close()
                raise
        except BaseException:
            self._identity.close()
            raise

        self._closed = False
        self._fatal: BaseException | None = None
        self._wake: asyncio.Event | None = None
        self._ready_event: asyncio.Event | None = None
        self._task: asyncio.Task[None] = run_sync(self._start_loop())
        self.log.info("node %#x started at %s (%s)", self._id, self._address,
                      "joining" if self._join_pending else "member")

    # -- identity -----------------------------------------------------------------

    @property
    def id(self) -> int:
        return self._id

    @property
    def address(self) -> str:
        return self._address

    @property
    def cluster_id(self) -> str | None:
        """The cluster's UUID once this node has seen it (None before the first contact)."""
        return self._cluster_uuid

    @property
    def store(self) -> SqliteNodeStore:
        """The node store (refreshed from the leader every roles tick)."""
        return self._store

    @property
    def node(self) -> Node:
        return self._node

    def __repr__(self) -> str:
        return f"<App id={self._id:#x} address={self._address!r}{' closed' if self._closed else ''}>"

    # -- public API: waiting forms wrap the async core ----------------------------------

    def ready(self, timeout: float | None = None) -> None:
        """Wait until the node joined and took the role it should have at start-up.

        :raises TimeoutError: not ready within `timeout` seconds.
        :raises ClusterMismatchError: the reachable cluster is not this node's.
        """
        run_sync(self._ready(timeout))

    async def ready_async(self, timeout: float | None = None) -> None:
        await _in_background(self._ready(timeout))

    def open(self, database: str, **options: Any) -> Connection:
        """A PEP 249 connection to `database` that follows the leader (see cowsqlpy.connect).

        The cluster runs this process's engine (an App's peers share its Raft), so the
        connection takes that engine's row of the version table (``engine=``).
        """
        from ..dbapi import connect
        from ..node import ENGINE_NAME

        options.setdefault("policy", self.policy)
        options.setdefault("engine", ENGINE_NAME)
        if self.tls is not None:
            options.setdefault("tls", self.tls)
        return connect(store=self._store, database=database, **options)

    def leader(self) -> NodeInfo | None:
        """The current leader, or None if none is known."""
        return run_sync(self._leader())

    async def leader_async(self) -> NodeInfo | None:
        return await _in_background(self._leader())

    def client(self) -> SyncClient:
        """A blocking admin client over this node's store (close it after use)."""
        return SyncClient(self._store, policy=self.policy, tls=self._client_tls)

    def async_client(self) -> Client:
        """An asyncio admin client over this node's store, for the caller's event loop."""
        return Client(self._store, policy=self.policy, tls=self._client_tls)

    def handover(self, timeout: float = HANDOVER_TIMEOUT) -> None:
        """Give this node's role and leadership to others (call before stopping it).

        :raises Error: no leader, or no node could take over within `timeout`.
        """
        run_sync(self._handover(timeout))

    async def handover_async(self, timeout: float = HANDOVER_TIMEOUT) -> None:
        await _in_background(self._handover(timeout))

    def close(self, *, handover: bool = True, timeout: float = HANDOVER_TIMEOUT) -> None:
        """Hand over (unless `handover=False`), stop the roles loop and the node.

        A failed hand-over is logged, not raised: the node stops anyway. Idempotent.
        """
        run_sync(self._close(handover, timeout))

    async def close_async(self, *, handover: bool = True, timeout: float = HANDOVER_TIMEOUT) -> None:
        await _in_background(self._close(handover, timeout))

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the core (runs on the background loop) ------------------------------------------

    async def _start_loop(self) -> asyncio.Task[None]:
        self._wake = asyncio.Event()
        self._ready_event = asyncio.Event()
        return asyncio.ensure_future(self._run())

    async def _ready(self, timeout: float | None) -> None:
        assert self._ready_event is not None
        if self._closed and not self._ready_event.is_set():
            raise NodeIdentityError(f"{self!r} is closed")
        try:
            async with asyncio.timeout(timeout):
                await self._ready_event.wait()
        except TimeoutError:
            raise TimeoutError(f"node {self._address} not ready after {timeout}s") from None
        if self._fatal is not None:
            raise self._fatal

    async def _check_seeds(self, seeds: list[str]) -> None:
        """On restart with `cluster`: refuse if those nodes form another cluster.
        An unreachable cluster is not proof of anything: then the run loop checks later."""
        policy = RetryPolicy(connect_timeout=2.0, attempt_timeout=2.0)
        try:
            async with asyncio.timeout(3.0):
                conn = await find_leader(_SeedStore(seeds), policy, tls=self._client_tls)
                session = Session(conn, policy)
                try:
                    theirs = await _cluster_id(session, create=False)
                finally:
                    session.close()
        except (Error, TimeoutError) as exc:
            self.log.info("cannot check the cluster at %s yet: %s", seeds, exc)
            return
        if theirs is not None and theirs != self._cluster_uuid:
            raise ClusterMismatchError(
                f"data dir {self.data_dir} belongs to cluster {self._cluster_uuid}, "
                f"but {', '.join(seeds)} is cluster {theirs}"
            )

    async def _leader_session(self, policy: RetryPolicy | None = None) -> Session:
        policy = policy or self.policy
        return Session(await find_leader(self._store, policy, tls=self._client_tls), policy)

    async def _leader(self) -> NodeInfo | None:
        async with Client(self._store, policy=self.policy, tls=self._client_tls) as client:
            return await client.leader()

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        await wait_event(self._wake, seconds)

    async def _run(self) -> None:
        assert self._ready_event is not None
        delay = 0.0
        retry = 0.05
        while not self._closed:
            await self._sleep(delay)
            if self._closed:
                break
            try:
                await self._tick()
                retry = 0.05
                delay = self.roles_adjustment_frequency
            except NodeIdentityError as exc:
                self.log.error("%s; stopping the node", exc)
                self._fatal = exc
                self._ready_event.set()
                await asyncio.get_running_loop().run_in_executor(None, self._stop_node)
                return
            except (Error, OSError, TimeoutError) as exc:
                level = logging.DEBUG if not self._ready_event.is_set() and isinstance(exc, NoLeaderError) else logging.WARNING
                self.log.log(level, "roles tick: %s", exc)
                delay = min(retry, self.roles_adjustment_frequency)
                retry = min(0.5, retry * 2)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive a bug in one tick
                self.log.exception("roles tick failed")
                delay = min(1.0, self.roles_adjustment_frequency)

    async def _tick(self) -> None:
        assert self._ready_event is not None
        session = await self._leader_session()
        try:
            if self._join_pending:
                await self._join(session)
            if not self._ready_event.is_set() or self._cluster_uuid is None:
                await self._verify_cluster(session.address)
            servers: list[NodeInfo] = await session.call(protocol.CLUSTER, 1)
            if not servers:
                raise NoLeaderError("the leader returned an empty server list")
            self._store.set(servers)
            if not self._ready_event.is_set():
                await self._maybe_promote_ourselves(session, servers)
                await self._check_in_contact(session)
                self._ready_event.set()
                self.log.info("node %#x ready", self._id)
                return
            await self._maybe_adjust_roles(session)
        finally:
            session.close()

    async def _check_in_contact(self, session: Session) -> None:
        """A voter is ready only once its own engine has heard from the leader: a
        restarted node is unreachable for the leader until its Raft client reconnects
        (about a second), and a rolling restart must not take the next node down before."""
        servers: list[NodeInfo] = await session.call(protocol.CLUSTER, 1)
        me = next((s for s in servers if s.id == self._id), None)
        if me is None or me.role != VOTER:
            return
        local = await Session.connect(self._address, self.policy, self._client_tls)
        try:
            _, leader_address = await local.call(protocol.LEADER)
        finally:
            local.close()
        if not leader_address:
            raise NoLeaderError("this node has not heard from the leader yet")

    async def _join(self, session: Session) -> None:
        servers: list[NodeInfo] = await session.call(protocol.CLUSTER, 1)
        if not any(s.id == self._id for s in servers):
            await session.call(protocol.ADD, self._id, self._address)
            self.log.info("joined the cluster through %s as spare", session.address)
        self._identity.joined()
        self._join_pending = False

    async def _verify_cluster(self, leader: str) -> None:
        session = Session(await find_leader(self._store, self.policy, hint=leader, tls=self._client_tls), self.policy)
        try:
            theirs = await _cluster_id(session, create=True)
        finally:
            session.close()
        if theirs is None:
            raise NoLeaderError("cluster id not readable yet")
        if self._cluster_uuid is None:
            self._identity.set_cluster(theirs)
            self._cluster_uuid = theirs
        elif theirs != self._cluster_uuid:
            raise ClusterMismatchError(
                f"data dir {self.data_dir} belongs to cluster {self._cluster_uuid}, "
                f"but the nodes it reached ({leader}) form cluster {theirs}"
            )

    async def _probe(self, servers: list[NodeInfo]) -> list[NodeState]:
        """Connect to every node and DESCRIBE it; a node that does not answer is offline."""
        timeout = max(0.5, min(2.0, self.roles_adjustment_frequency))
        policy = RetryPolicy(connect_timeout=timeout, attempt_timeout=timeout)
        sem = asyncio.Semaphore(max(2, os.cpu_count() or 2))

        async def describe(info: NodeInfo) -> NodeState:
            async with sem:
                for attempt in (1, 2):  # one retry: a slow probe must not demote a live node
                    try:
                        session = await Session.connect(info.address, policy, self._client_tls)
                        try:
                            domain, weight = await session.call(protocol.DESCRIBE, 0)
                        finally:
                            session.close()
                        return NodeState(info, domain, weight, True)
                    except (Error, OSError):
                        if attempt == 2:
                            break
                        await asyncio.sleep(0.05)
                return NodeState(info)

        return list(await asyncio.gather(*(describe(s) for s in servers)))

    async def _maybe_promote_ourselves(self, session: Session, servers: list[NodeInfo]) -> None:
        planner = RolesPlanner(self.voters, self.standbys, await self._probe(servers))
        role = planner.assume(self._id)
        if role is None:
            return
        await session.call(protocol.ASSIGN, self._id, role)
        self.log.info("took the %s role", role_name(role))
        if role == VOTER and len(planner.nodes(VOTER, True)) == 1:
            # Reaching the 3-node threshold: promote one more so the cluster has quorum redundancy
            # (errors ignored: the leader's roles loop will catch up).
            for s in planner.state:
                if s.info.id != self._id and s.info.role != VOTER and s.online:
                    try:
                        await session.call(protocol.ASSIGN, s.info.id, VOTER)
                        break
                    except Error as exc:
                        self.log.warning("promote %s to voter: %s", s.info.address, exc)

    async def _maybe_adjust_roles(self, session: Session) -> None:
        for _ in range(2 * len(self._store.get()) + 2):  # each change re-plans; bounded
            leader_id, _address = await session.call(protocol.LEADER)
            if leader_id != self._id:
                return
            servers: list[NodeInfo] = await session.call(protocol.CLUSTER, 1)
            planner = RolesPlanner(self.voters, self.standbys, await self._probe(servers))
            role, candidates = planner.adjust(self._id)
            if role is None:
                return
            for i, node in enumerate(candidates):
                try:
                    await self._assign(session, node.id, role)
                except Error as exc:
                    self.log.warning("change %s from %s to %s: %s", node.address, role_name(node.role), role_name(role), exc)
                    if i == len(candidates) - 1:
                        return
                    continue
                self.log.info("changed %s from %s to %s", node.address, role_name(node.role), role_name(role))
                break
            self._store.set(await session.call(protocol.CLUSTER, 1))

    async def _assign(self, session: Session, node_id: int, role: int) -> None:
        """ASSIGN, retried while another membership change is in progress (BUSY)."""
        async def attempt() -> None:
            await session.call(protocol.ASSIGN, node_id, role)

        await retrying(attempt, RetryPolicy(max_tries=40, deadline=5.0, busy_timeout=5.0), what="assign")

    async def _handover(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            policy = self.policy
            session = await self._leader_session(policy)
            try:
                servers: list[NodeInfo] = await session.call(protocol.CLUSTER, 1)
                planner = RolesPlanner(self.voters, self.standbys, await self._probe(servers))
                role, candidates = planner.handover(self._id)
                if role is not None:
                    for i, node in enumerate(candidates):
                        try:
                            await self._assign(session, node.id, role)
                        except Error as exc:
                            self.log.warning("hand-over: promote %s to %s: %s", node.address, role_name(role), exc)
                            if i == len(candidates) - 1:
                                raise
                            continue
                        self.log.info("hand-over: %s took the %s role", node.address, role_name(role))
                        break
                leader_id, _ = await session.call(protocol.LEADER)
                if leader_id == self._id:
                    servers = await session.call(protocol.CLUSTER, 1)
                    planner = RolesPlanner(self.voters, self.standbys, await self._probe(servers))
                    voters = [s.info for s in planner.nodes(VOTER, True) if s.info.id != self._id]
                    for i, voter in enumerate(voters):
                        try:
                            await session.call(protocol.TRANSFER, voter.id)
                        except Error as exc:
                            self.log.warning("hand-over: transfer leadership to %s: %s", voter.address, exc)
                            if i == len(voters) - 1:
                                raise
                            continue
                        self.log.info("hand-over: leadership transferred to %s", voter.address)
                        break
                    session.close()
                    session = await self._leader_session(policy)
                if role is not None:
                    await self._assign(session, self._id, SPARE)
                    self.log.info("hand-over: demoted ourselves to spare")
            finally:
                session.close()

    def _stop_node(self) -> None:
        if self._node.running:
            self._node.stop()

    async def _close(self, handover: bool, timeout: float) -> None:
        if self._closed:
            return
        if handover and self._fatal is None:
            try:
                await self._handover(timeout)
            except (Error, OSError, TimeoutError) as exc:
                self.log.warning("hand-over failed, stopping anyway: %s", exc)
        self._closed = True
        assert self._wake is not None and self._ready_event is not None
        self._wake.set()
        task = self._task
        if isinstance(task, asyncio.Task) and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._node.close)
        # The node store stays open: connections from open() keep using its last node list.
        self._identity.close()
        self.log.info("node %#x closed", self._id)


class _SeedStore:
    """A throw-away node store over seed addresses (never written to disk)."""

    def __init__(self, addresses: list[str]) -> None:
        self._nodes = [NodeInfo(0, a, VOTER) for a in addresses]

    def get(self) -> list[NodeInfo]:
        return list(self._nodes)

    def set(self, nodes: Iterable[NodeInfo]) -> None:
        self._nodes = list(nodes)


__all__ = ["App", "INTERNAL_DATABASE", "HANDOVER_TIMEOUT"]
