"""The one table of engine versions and what each can safely do.

Client guardrails and node features read their switches from here, never
from scattered version checks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineFeatures:
    name: str
    max_params: int  # params per statement in the tuple format the server parses
    returning: bool  # INSERT/UPDATE/DELETE ... RETURNING is safe
    describe_formats: tuple[int, ...]  # DESCRIBE formats that do not abort the node
    heartbeat: bool  # HEARTBEAT request is handled (1.11.1 wedges the connection)
    unknown_request_fails: bool  # unknown request type gets FAILURE rather than a hang


# dqlite_version_number() of the installed 1.11.1 says 11000 (its tag never bumped
# the macros), so 1.10 and 1.11 cannot be told apart: both get the 1.11 switches.
DQLITE_1_11 = EngineFeatures(
    name="dqlite 1.11",
    max_params=255,
    returning=False,
    describe_formats=(0,),
    heartbeat=False,
    unknown_request_fails=False,
)

MIN_VERSION_NUMBER = 11000

# The features the client assumes when talking to a server. The wire protocol
# has no version negotiation, so the client targets the oldest engine we support.
CLIENT_TARGET = DQLITE_1_11


def features_for(version_number: int) -> EngineFeatures:
    """Switches for an engine reporting `version_number` (major*10000+minor*100+patch)."""
    if version_number < MIN_VERSION_NUMBER:
        raise ValueError(f"engine version {version_number} is older than 1.10 (11000)")
    return DQLITE_1_11
