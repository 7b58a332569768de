"""Role decisions: which node should vote, stand by or idle (pure; a port of go-dqlite's app/roles.go)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..protocol import SPARE, STANDBY, VOTER, NodeInfo

MIN_VOTERS = 3  # below this cluster size only one node votes (as go-dqlite)

_ROLE_NAMES = {VOTER: "voter", STANDBY: "stand-by", SPARE: "spare"}


def role_name(role: int | None) -> str:
    return _ROLE_NAMES.get(role, f"role {role}") if role is not None else "unknown"


@dataclass(frozen=True)
class NodeState:
    """One node as the leader sees it: its membership entry and, if it answered
    the probe, its failure domain and weight (None = offline)."""

    info: NodeInfo
    failure_domain: int | None = None
    weight: int | None = None
    online: bool = False


class RolesPlanner:
    """Decides role changes from a probed cluster state.

    Keeps `voters` voters and `standbys` stand-bys among online nodes; the
    leader is never demoted. Candidates are ordered by failure domains not yet
    covered by the role's current holders, then stand-bys before spares, then
    by weight, then by id (so the choice is deterministic).
    """

    def __init__(self, voters: int, standbys: int, state: Sequence[NodeState]) -> None:
        self.voters = voters
        self.standbys = standbys
        self.state = list(state)

    def _get(self, node_id: int) -> NodeState | None:
        return next((s for s in self.state if s.info.id == node_id), None)

    def nodes(self, role: int, online: bool) -> list[NodeState]:
        return [s for s in self.state if s.info.role == role and s.online == online]

    def _sorted(self, candidates: list[NodeState], holders: list[NodeState]) -> list[NodeInfo]:
        domains = {h.failure_domain for h in holders if h.online}
        rank: dict[int | None, int] = {STANDBY: 0, SPARE: 1}  # a stand-by is caught up already: it goes first
        ordered = sorted(
            candidates,
            key=lambda s: (s.failure_domain in domains, rank.get(s.info.role, 2), s.weight or 0, s.info.id),
        )
        return [s.info for s in ordered]

    def assume(self, node_id: int) -> int | None:
        """The role a (re)starting node should take itself, or None."""
        if len(self.state) < MIN_VOTERS:
            return None
        me = self._get(node_id)
        if me is None or me.info.role in (VOTER, STANDBY):
            return None
        online_voters = len(self.nodes(VOTER, True))
        if online_voters >= self.voters and len(self.nodes(STANDBY, True)) >= self.standbys:
            return None
        return VOTER if online_voters < self.voters else STANDBY

    def handover(self, node_id: int) -> tuple[int | None, list[NodeInfo]]:
        """The role `node_id` should give away before it stops, and who should take it."""
        me = self._get(node_id)
        if me is None or me.info.role not in (VOTER, STANDBY):
            return None, []
        peers = [s for s in self.nodes(me.info.role, True) if s.info.id != node_id]
        candidates = self.nodes(SPARE, True)
        if me.info.role == VOTER:
            candidates = self.nodes(STANDBY, True) + candidates
        candidates = [c for c in candidates if c.info.id != node_id]
        if not candidates:
            return None, []
        return me.info.role, self._sorted(candidates, peers)

    def adjust(self, leader_id: int) -> tuple[int | None, list[NodeInfo]]:
        """One change the leader should make: (role, candidates in order), or (None, [])."""
        if len(self.state) == 1:
            return None, []
        if len(self.state) < MIN_VOTERS:
            # A cluster this small keeps one voter: the leader.
            extra = [s.info for s in self.state if s.info.role == VOTER and s.info.id != leader_id]
            return (SPARE, extra[:1]) if extra else (None, [])
        online_voters = self.nodes(VOTER, True)
        online_standbys = self.nodes(STANDBY, True)
        offline_voters = self.nodes(VOTER, False)
        offline_standbys = self.nodes(STANDBY, False)
        if len(online_voters) < self.voters:
            candidates = self.nodes(STANDBY, True) + self.nodes(SPARE, True)
            return (VOTER, self._sorted(candidates, online_voters)) if candidates else (None, [])
        if len(online_voters) > self.voters:
            return SPARE, self._demotable(online_voters, leader_id)
        if offline_voters:
            return SPARE, [s.info for s in offline_voters]
        if len(online_standbys) < self.standbys:
            candidates = self.nodes(SPARE, True)
            return (STANDBY, self._sorted(candidates, online_standbys)) if candidates else (None, [])
        if len(online_standbys) > self.standbys:
            return SPARE, self._demotable(online_standbys, leader_id)
        if offline_standbys:
            return SPARE, [s.info for s in offline_standbys]
        return None, []

    def _demotable(self, holders: list[NodeState], leader_id: int) -> list[NodeInfo]:
        # Demote the heaviest first; prefer keeping failure domains spread.
        rest = [s for s in holders if s.info.id != leader_id]
        domain_count: dict[int | None, int] = {}
        for s in holders:
            domain_count[s.failure_domain] = domain_count.get(s.failure_domain, 0) + 1
        ordered = sorted(rest, key=lambda s: (-domain_count[s.failure_domain], -(s.weight or 0), -s.info.id))
        return [s.info for s in ordered]


