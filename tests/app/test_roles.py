"""Role balancing of App clusters run as separate processes."""

from __future__ import annotations

from cowsqlpy.protocol import SPARE, STANDBY, VOTER
from cowsqlpy.testing import Cluster, wait_for

PERIOD = 1.0  # roles adjustment frequency used here (seconds)
# The promotion must come within two periods of the kill; on top of that a probe of
# an unreachable node may take its own timeout (max(0.5, min(2, PERIOD)) s).
PROMOTION_BOUND = 2 * PERIOD + 1.0


def _roles(c: Cluster) -> dict[str, int | None]:
    return {n.address: n.role for n in c.cluster_nodes()}


def test_five_nodes_converge_then_a_standby_replaces_a_killed_voter(cluster_factory) -> None:
    c = cluster_factory(5, processes=True, voters=3, standbys=3, roles_adjustment_frequency=PERIOD)
    nodes = c.wait_roles(voters=3, standbys=2)
    roles = {n.address: n.role for n in nodes}
    leader = c.wait_leader()
    voter = next(i for i, a in enumerate(c.addresses) if roles[a] == VOTER and i != leader)
    standbys = {a for a, r in roles.items() if r == STANDBY}

    c.kill(voter)
    dead = c.addresses[voter]

    def replaced() -> bool:
        now = _roles(c)
        online_voters = [a for a, r in now.items() if r == VOTER and a != dead]
        return len(online_voters) == 3 and bool(standbys & set(online_voters))

    wait_for(replaced, PROMOTION_BOUND, "a stand-by promoted to voter within two adjustment periods")
    # The dead voter is demoted once enough others are online; the cluster still serves.
    wait_for(lambda: _roles(c)[dead] == SPARE, 2 * PERIOD + 2.0, "the dead voter demoted to spare")
    conn = c.connect("r", autocommit=True)
    conn.execute("CREATE TABLE t (x)")

    # The killed node comes back as a spare and is given the free stand-by role.
    c.restart(voter)
    c.wait_roles(voters=3, standbys=2, timeout=10)


def test_killing_the_leader_process_promotes_a_standby(cluster_factory) -> None:
    c = cluster_factory(4, processes=True, voters=3, standbys=1, roles_adjustment_frequency=PERIOD)
    roles = {n.address: n.role for n in c.wait_roles(voters=3, standbys=1)}
    standby = next(a for a, r in roles.items() if r == STANDBY)
    leader = c.wait_leader()
    c.kill(leader)
    new_leader = c.wait_leader(exclude=leader, timeout=15)
    assert new_leader != leader
    wait_for(lambda: _roles(c)[standby] == VOTER, PROMOTION_BOUND, "the stand-by promoted by the new leader")
