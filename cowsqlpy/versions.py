"""The one table of engine versions and what each can safely do.

Client guardrails and node features read their switches from here, never
from scattered version checks. Every row is proven by tests that send the
guarded input to a node of that engine in a child process
(tests/node/test_engine_guards.py for the engine this build embeds).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DQLITE = "dqlite"
COWSQL = "cowsql"


@dataclass(frozen=True)
class EngineFeatures:
    name: str
    max_params: int  # params per statement in the tuple format our codec sends (schema 0: u8 count)
    returning: bool  # INSERT/UPDATE/DELETE ... RETURNING is safe and gives its rows, sent any way
    #: RETURNING sent as a query inside a transaction the connection opened, ended by an
    #: EXEC'd COMMIT, is safe and gives its rows (the driver sends every RETURNING so)
    returning_in_transaction: bool
    describe_formats: tuple[int, ...]  # DESCRIBE formats that do not abort the node
    heartbeat: bool  # HEARTBEAT gets a reply, if only FAILURE (1.11.1 wedges the connection)
    unknown_request_fails: bool  # unknown request type gets FAILURE rather than a hang
    finalize_twice_safe: bool  # FINALIZE of an id already finalized gets FAILURE, not a crash
    unknown_cluster_format_fails: bool  # CLUSTER format >= 2 gets FAILURE (the engine probe)
    huge_frame_safe: bool  # a header claiming a body of ~2 GiB (0x100D0A07 words) gets no crash
    empty_body_safe: bool  # a zero-word body for a request that needs one gets no crash
    #: PRAGMAs that abort the node: (name, values); an empty set: any value, "" the bare form
    fatal_pragmas: tuple[tuple[str, frozenset[str]], ...]


# dqlite_version_number() of Debian's 1.11.1 says 11000 (its tag never bumped
# the macros), so 1.10 and 1.11 cannot be told apart: both get these switches.
DQLITE_1_11 = EngineFeatures(
    name="dqlite 1.11",
    max_params=255,
    returning=False,
    # measured against dqlite-demo nodes (tests/sql/test_returning_dqlite.py,
    # bench/probe_returning.py: 19,369 statements, 60 leadership transfers, 3 leader kills)
    returning_in_transaction=True,
    describe_formats=(0,),
    heartbeat=False,
    unknown_request_fails=False,
    finalize_twice_safe=False,
    unknown_cluster_format_fails=False,
    huge_frame_safe=False,
    empty_body_safe=False,
    fatal_pragmas=(("journal_mode", frozenset({"delete", "memory", "truncate", "persist", "off"})),
                   ("page_size", frozenset())),
)

# cowsql 1.15 (Debian bookworm-backports 1.15.8, which reports 1.15.6 = 11506), measured
# by tests/node/test_engine_guards.py: RETURNING in autocommit still aborts the node on the
# next write (vfs.c vfsFileShmLock `wal->n_tx == 0`); inside BEGIN ... COMMIT it does not,
# but the engine steps a modifying query once and answers FAILURE 100 ("rows yielded when
# none expected"): the rows never arrive. FINALIZE of a finalized id still crashes, and so
# does a header claiming a 2 GiB body; journal_mode and page_size changes are refused
# ("only WAL mode is supported"), but `synchronous=FULL|EXTRA` (vfsWalWrite assertion) and a
# bare `PRAGMA wal_checkpoint` abort it; unknown request types and HEARTBEAT get FAILURE.
COWSQL_1_15 = EngineFeatures(
    name="cowsql 1.15",
    max_params=255,
    returning=False,
    returning_in_transaction=False,   # FAILURE 100: the rows never arrive
    describe_formats=(0,),
    heartbeat=True,
    unknown_request_fails=True,
    finalize_twice_safe=False,
    unknown_cluster_format_fails=True,
    huge_frame_safe=False,
    empty_body_safe=True,
    fatal_pragmas=(("synchronous", frozenset({"full", "extra", "2", "3"})), ("wal_checkpoint", frozenset({""}))),
)

# (engine, first version number, first version number past the row, features)
_TABLE: tuple[tuple[str, int, int, EngineFeatures], ...] = (
    (DQLITE, 11000, 11100, DQLITE_1_11),
    (COWSQL, 11500, 11600, COWSQL_1_15),
)

def _strictest(name: str, *rows: EngineFeatures) -> EngineFeatures:
    """What every row takes: each switch on only where it is on in all of them (every
    boolean says "safe"), the smallest limit, every fatal PRAGMA of any row."""
    fatal: dict[str, frozenset[str]] = {}
    for row in rows:
        for pragma, values in row.fatal_pragmas:
            seen = fatal.get(pragma)
            # an empty set means "any value": it absorbs the others
            fatal[pragma] = values if seen is None else (frozenset() if not seen or not values
                                                         else seen | values)
    merged: dict[str, object] = {}
    for f in dataclasses.fields(EngineFeatures):
        per_row = [getattr(row, f.name) for row in rows]
        if f.name == "name":
            merged[f.name] = name
        elif f.name == "max_params":
            merged[f.name] = min(per_row)
        elif f.name == "describe_formats":
            merged[f.name] = tuple(sorted(set.intersection(*(set(v) for v in per_row))))
        elif f.name == "fatal_pragmas":
            merged[f.name] = tuple(sorted(fatal.items()))
        else:
            assert all(isinstance(v, bool) for v in per_row), f.name
            merged[f.name] = all(per_row)
    return EngineFeatures(**merged)  # type: ignore[arg-type]


#: What the client assumes of a server it has not identified: only what every engine
#: we support takes. `cowsqlpy.connect(engine=...)` or the engine probe lifts it.
CLIENT_TARGET = _strictest("an engine not identified (dqlite 1.11 or cowsql 1.15)",
                           DQLITE_1_11, COWSQL_1_15)

#: The values `connect(engine=...)` takes.
ENGINE_CHOICES = {"dqlite-1.11": DQLITE_1_11, "cowsql-1.15": COWSQL_1_15, "cowsql": COWSQL_1_15}


def features_from_probe(cluster_format_fails: bool) -> EngineFeatures:
    """The switches for a server identified by the engine probe (CLUSTER format 2:
    `cluster_format_fails` is whether it answered FAILURE): what every row that answers
    so takes, `CLIENT_TARGET` when no row does."""
    rows = [f for _, _, _, f in _TABLE if f.unknown_cluster_format_fails == cluster_format_fails]
    if not rows:
        return CLIENT_TARGET
    return rows[0] if len(rows) == 1 else _strictest(" or ".join(f.name for f in rows), *rows)


def features_for(engine: str, version_number: int) -> EngineFeatures:
    """Switches for `engine` ("cowsql" or "dqlite") reporting `version_number`.

    :raises ValueError: an engine or version this code was not tested on.
    """
    for name, first, past, features in _TABLE:
        if name == engine and first <= version_number < past:
            return features
    known = ", ".join(f"{n} {_dotted(f)}" for n, f, _, _ in _TABLE)
    raise ValueError(f"{engine} {_dotted(version_number)} is not a tested engine (known: {known})")


def features_named(engine: str) -> EngineFeatures:
    """The row for a `connect(engine=...)` value.

    :raises ValueError: an unknown name (the message lists the choices).
    """
    try:
        return ENGINE_CHOICES[engine]
    except KeyError:
        raise ValueError(f"engine must be one of {sorted(ENGINE_CHOICES)}, got {engine!r}") from None


def describe_engine(engine: str, version_number: int) -> str:
    """'cowsql 1.15.6 (11506)': for logs and `engine_version` reports."""
    return f"{engine} {_dotted(version_number)} ({version_number})"


def _dotted(v: int) -> str:
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}"
