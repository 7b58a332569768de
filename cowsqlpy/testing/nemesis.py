"""A randomized, seeded nemesis over a `cowsqlpy.testing.Cluster`.

    with Cluster(3, fault_proxies=True) as cluster:       # network + in-process faults
        nemesis = Nemesis(cluster, seed=42)
        with nemesis.running(interval=1.0, steps=20):     # a background thread
            ...run a workload, record a history...
        nemesis.heal_all()                                # everything back, a leader, roles settled
        print(nemesis.format_log())

    with Cluster(3, processes=True) as cluster:           # SIGKILL, SIGSTOP/SIGCONT
        Nemesis(cluster, seed=7).run(steps=10, interval=1.0)

    with Cluster(3, processes=True, fault_proxies=True) as cluster:   # both
        Nemesis(cluster, seed=7).run(steps=10, interval=1.0)

Faults (`Nemesis(..., faults=...)` picks a subset; the default is every fault
the cluster supports):

* process: ``kill`` (SIGKILL; in-process: stop with no hand-over), ``stop``
  (graceful, hand-over), ``restart`` (kill and start again on the same data
  dir at once), ``pause`` (SIGSTOP until healed; processes only). At most a
  minority of the nodes is down or paused at any time, and a process fault and
  a network fault are never combined so that no up node reaches a majority over
  working links, so the cluster can make progress between steps.
* network, per directed Raft link through each node's `FaultProxy`
  (``Cluster(..., fault_proxies=True)``: the dial hook in-process, a relay the
  node process dials through with ``processes=True``): ``partition-leader-minority``
  (the leader alone), ``partition-leader-majority`` (a follower alone),
  ``bridge`` (two nodes cut from each other, the third talks to both),
  ``one-way`` (the leader's messages to one follower are dropped, that
  follower's still arrive), ``delay`` (latency on every link out of one
  node), ``reset`` (TCP resets on a node's live links). One network fault at
  a time; a heal step clears it.
* membership: ``transfer`` (leadership to another voter), ``demote`` (a
  follower voter becomes a stand-by; the App's roles loop promotes one back),
  ``remove`` (a follower leaves the configuration; healed by adding it back
  as a spare, which the roles loop promotes). ``remove`` is off by default.

Every step is logged (logger ``cowsqlpy.testing.nemesis`` and `log`), with
the seed, so a failing run can be replayed: the same seed draws the same
faults (the timing of the workload around them differs).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import Error
from ..protocol import SPARE, STANDBY, VOTER
from .cluster import Cluster, HarnessError

__all__ = [
    "ALL_FAULTS",
    "DEFAULT_FAULTS",
    "MEMBERSHIP_FAULTS",
    "NETWORK_FAULTS",
    "PROCESS_FAULTS",
    "Nemesis",
    "Step",
]

log = logging.getLogger("cowsqlpy.testing.nemesis")

PROCESS_FAULTS = ("kill", "stop", "restart", "pause")
NETWORK_FAULTS = (
    "partition-leader-minority",
    "partition-leader-majority",
    "bridge",
    "one-way",
    "delay",
    "reset",
)
MEMBERSHIP_FAULTS = ("transfer", "demote", "remove")
ALL_FAULTS = PROCESS_FAULTS + NETWORK_FAULTS + MEMBERSHIP_FAULTS
DEFAULT_FAULTS = tuple(f for f in ALL_FAULTS if f != "remove")


@dataclass
class Step:
    number: int
    at: float  # time.monotonic()
    action: str
    target: str
    detail: str = ""

    def __str__(self) -> str:
        return f"#{self.number} {self.at:.3f} {self.action} {self.target} {self.detail}".rstrip()


class Nemesis:
    """Seeded random faults over `cluster`; `step()` injects one or heals one."""

    def __init__(
        self,
        cluster: Cluster,
        seed: int,
        faults: Sequence[str] | None = None,
        *,
        heal_probability: float = 0.4,
    ) -> None:
        unknown = set(faults or ()) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {ALL_FAULTS}")
        self.cluster = cluster
        self.seed = seed
        self.rng = random.Random(seed)
        self.heal_probability = heal_probability
        proxies = all(p is not None for p in cluster.proxies)
        wanted = list(faults or DEFAULT_FAULTS)
        self.faults = [
            f
            for f in wanted
            if (f != "pause" or cluster.processes) and (f not in NETWORK_FAULTS or proxies)
        ]
        if not self.faults:
            raise HarnessError(f"none of {wanted} works on {cluster!r}")
        self.log: list[Step] = []
        self.down: set[int] = set()  # killed or stopped
        self.paused: set[int] = set()
        self.removed: set[int] = set()
        self.network_fault: str | None = None
        self.cut: set[frozenset[int]] = set()  # node pairs the active network fault separates
        self.unready: set[int] = set()  # started while partitioned, not waited for
        self._lock = threading.Lock()

    # -- helpers --

    def _record(self, action: str, target: str, detail: str = "") -> Step:
        step = Step(len(self.log), time.monotonic(), action, target, detail)
        self.log.append(step)
        log.info("nemesis seed=%d %s", self.seed, step)
        return step

    def format_log(self) -> str:
        return f"nemesis seed={self.seed}\n" + "\n".join(str(s) for s in self.log)

    def _leader(self) -> int | None:
        with contextlib.suppress(Exception):
            return self.cluster.leader_index(timeout=1.0)
        return None

    def _up(self) -> list[int]:
        return [i for i in range(self.cluster.n) if i not in self.down and i not in self.paused]

    def _may_take_down(self, i: int | None = None) -> bool:
        """Whether one more node (`i`, if known) may go down now: within the minority
        budget, and leaving a node that still reaches a majority over working links."""
        if self.cluster.n == 1:
            return True
        if len(self.down | self.paused | self.removed) >= (self.cluster.n - 1) // 2:
            return False
        return i is None or self._majority_connected(self.down | self.paused | self.removed | {i}, self.cut)

    def _majority_connected(self, gone: set[int], cut: set[frozenset[int]]) -> bool:
        """Some node that is up has working links (both ways) to enough up nodes to
        form a majority with them: otherwise the faults together leave no quorum."""
        n = self.cluster.n
        up = [i for i in range(n) if i not in gone]
        return any(1 + sum(1 for j in up if j != x and frozenset((x, j)) not in cut) > n // 2 for x in up)

    def _pick(self, prefer_leader: bool = True) -> int | None:
        up = self._up()
        if not up:
            return None
        leader = self._leader()
        if prefer_leader and leader in up and self.rng.random() < 0.6:
            return leader
        return self.rng.choice(up)

    def _name(self, i: int) -> str:
        return f"node{i}"

    # -- steps --

    def step(self) -> Step:
        """Inject one random fault, or heal one of the active ones."""
        with self._lock:
            active = bool(self.down or self.paused or self.network_fault or self.removed)
            if active and self.rng.random() < self.heal_probability:
                return self._heal_one()
            for _ in range(10):
                fault = self.rng.choice(self.faults)
                step = self.inject(fault)
                if step is not None:
                    return step
            return (
                self._heal_one() if active else self._record("noop", "-", "no fault applicable now")
            )

    def inject(self, fault: str) -> Step | None:
        """Inject `fault` now (one of `faults`); None when it cannot apply now (too
        many nodes down, a network fault already active, no leader to target)."""
        if fault not in self.faults:
            raise ValueError(f"{fault!r} is not one of this nemesis's faults {self.faults}")
        c = self.cluster
        if fault in ("kill", "stop", "restart", "pause"):
            if not self._may_take_down():
                return None
            i = self._pick()
            if i is None or not self._may_take_down(i):
                return None
            if fault == "kill":
                c.kill(i)
                self.down.add(i)
            elif fault == "stop":
                c.stop(i)
                self.down.add(i)
            elif fault == "restart":
                c.kill(i)
                self._start(i)
            else:
                c.pause(i)
                self.paused.add(i)
            return self._record(fault, self._name(i))
        if fault in NETWORK_FAULTS:
            if self.network_fault is not None:
                return None
            return self._network(fault)
        return self._membership(fault)

    def _network(self, fault: str) -> Step | None:
        c = self.cluster
        nodes = list(range(c.n))
        leader = self._leader()
        if leader is None:
            leader = self.rng.choice(nodes)
        others = [i for i in nodes if i != leader]
        if not others:
            return None
        if fault in ("partition-leader-minority", "partition-leader-majority", "bridge", "one-way"):
            if fault == "partition-leader-minority":
                groups = [[leader], others]
                detail = f"[{leader}] | {others}"
            elif fault == "partition-leader-majority":
                alone = self.rng.choice(others)
                groups = [[alone], [i for i in nodes if i != alone]]
                detail = f"{groups[0]} | {groups[1]}"
            elif fault == "bridge":
                if c.n < 3:
                    return None
                bridge = self.rng.choice(nodes)
                rest = [i for i in nodes if i != bridge]
                groups = [rest[: len(rest) // 2], rest[len(rest) // 2 :]]
                detail = f"{groups[0]} | {groups[1]} bridged by {bridge}"
            else:
                dst = self.rng.choice(others)
                groups = []
                detail = f"{leader} -/-> {dst}"
            cut = {frozenset((i, j)) for k, ga in enumerate(groups) for gb in groups[k + 1 :] for i in ga for j in gb}
            if not groups:
                cut = {frozenset((leader, dst))}  # one way only, but no Raft exchange works over it
            if not self._majority_connected(self.down | self.paused | self.removed, cut):
                return None  # with the nodes already down, this would leave no quorum anywhere
            if groups:
                c.partition(*groups)
            else:
                c.block(leader, dst)
            self.cut = cut
        elif fault == "delay":
            src = self.rng.choice(nodes)
            seconds = self.rng.choice([0.02, 0.05, 0.1, 0.2])
            for dst in nodes:
                if dst != src:
                    c.delay_link(src, dst, seconds)
            detail = f"{seconds}s on every link out of {src}"
        else:  # reset: instantaneous, nothing to heal
            src = self.rng.choice(nodes)
            return self._record(fault, self._name(src), f"{c.reset_links(src)} links reset")
        self.network_fault = fault
        return self._record(fault, "network", detail)

    def _membership(self, fault: str) -> Step | None:
        c = self.cluster
        leader = self._leader()
        if leader is None:
            return None
        try:
            nodes = c.cluster_nodes()
        except Exception:  # no leader right now: try another fault
            return None
        followers = [
            n
            for n in nodes
            if n.role == VOTER
            and c.index_of(n.address) not in (leader, None)
            and c.index_of(n.address) in self._up()
        ]
        if not followers:
            return None
        target = self.rng.choice(followers)
        i = c.index_of(target.address)
        assert i is not None
        if fault == "remove" and not self._may_take_down(i):
            return None
        try:
            with c.client() as admin:
                if fault == "transfer":
                    admin.transfer(target.id)
                elif fault == "demote":
                    admin.assign(target.id, STANDBY)
                else:
                    admin.remove(target.id)
                    self.removed.add(i)
        except (
            Error
        ) as exc:  # under faults an admin request may fail: that is a result, not a harness error
            return self._record(fault, self._name(i), f"id {target.id:#x} refused: {exc}")
        return self._record(fault, self._name(i), f"id {target.id:#x}")

    def _heal_one(self) -> Step:
        choices: list[tuple[str, int]] = [("network", -1)] if self.network_fault else []
        choices += [("down", i) for i in sorted(self.down)]
        choices += [("paused", i) for i in sorted(self.paused)]
        choices += [("removed", i) for i in sorted(self.removed)]
        kind, i = self.rng.choice(choices)
        c = self.cluster
        if kind == "network":
            fault, self.network_fault = self.network_fault, None
            self.cut = set()
            c.heal()
            return self._record("heal", "network", f"after {fault}")
        if kind == "down":
            self._start(i)
            self.down.discard(i)
            return self._record("start", self._name(i), "" if self.network_fault is None else "(not waited: partitioned)")
        if kind == "paused":
            c.resume(i)
            self.paused.discard(i)
            return self._record("resume", self._name(i))
        self._readd(i)
        return self._record("re-add", self._name(i))

    def _start(self, i: int) -> None:
        """Start node i; while a network fault may cut it off, do not wait for it to be
        ready (it may not reach the leader until healed): `heal_all` waits."""
        if self.network_fault is None:
            self.cluster.start(i)
        else:
            self.cluster.start(i, wait=False)
            self.unready.add(i)

    def _readd(self, i: int) -> None:
        m = self.cluster.members[i]
        with self.cluster.client() as admin:
            admin.add(m.node_id, m.address, SPARE)  # type: ignore[arg-type]
        self.removed.discard(i)

    def heal_all(self, timeout: float = 60.0, *, wait_roles: bool = True) -> None:
        """End every fault: network healed, paused nodes resumed, stopped ones
        started, removed ones added back; then wait for a leader and (with the
        App's roles loop) the full set of roles."""
        with self._lock:
            c = self.cluster
            if self.network_fault:
                self.network_fault = None
            self.cut = set()
            c.heal()
            for i in sorted(self.paused):
                c.resume(i)
            self.paused.clear()
            for i in sorted(self.down):
                c.start(i, wait=False)
                self.unready.add(i)
            self.down.clear()
            for i in sorted(self.unready):
                c.wait_ready(i, timeout)
            self.unready.clear()
            for i in sorted(self.removed):
                self._readd(i)
            self._record("heal-all", "cluster")
            c.wait_leader(timeout=timeout)
            if wait_roles and c.use_app:
                c.wait_roles(timeout=timeout)

    # -- running --

    def run(self, steps: int, interval: float, stop: threading.Event | None = None) -> None:
        """`steps` steps, `interval` seconds apart (stops early when `stop` is set)."""
        for _ in range(steps):
            if stop is not None and stop.wait(interval):
                return
            if stop is None:
                time.sleep(interval)
            self.step()

    @contextlib.contextmanager
    def running(self, interval: float, steps: int) -> Iterator[Nemesis]:
        """Run steps in a background thread while the block runs; on exit stop it
        (the faults stay until `heal_all()`). A step that raised is re-raised."""
        stop = threading.Event()
        errors: list[BaseException] = []

        def body() -> None:
            try:
                self.run(steps, interval, stop)
            except BaseException as exc:  # handed to the test thread
                errors.append(exc)
                self._record("error", "-", repr(exc))

        thread = threading.Thread(target=body, name=f"nemesis-{self.seed}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(120)
        if errors:
            raise HarnessError(
                f"nemesis step failed: {errors[0]!r}\n{self.format_log()}"
            ) from errors[0]
