"""A checker for watch streams with etcd's rules (etcd's robustness tests,
``validate/watch.go``, and the watch API guarantees).

    record = WatchRecord(start="k/", end="k0", start_revision=5, events=[...])
    violations = check_watches([record, ...], history.operations())
    assert not violations, format_violations(violations)

An event is a dict (see `cowsqlpy.testing.workloads.event_json`):
``{"type": "put"|"delete", "key", "value", "rev", "create", "version",
"prev": None | {"value", "mod", "create", "version"}}``.

Rules checked:

* **filter**: every event's key is in the watched range;
* **ordered**: revisions never go back;
* **unique**: no (revision, key) twice;
* **atomic**: a stream that delivers a revision delivers all of it (every event
  of that revision in its range that any stream or the history shows);
* **reliable**: no gap: every event in the range between the stream's start
  and the last revision it is known to have reached is delivered;
* **resumable**: a watch from revision R starts at R (no event before R, none
  from R missing);
* **prev_kv**: a reported previous key-value is the key as it was just before
  (and is reported whenever the key existed, with ``require_prev_kv``);
* **create**: a put creates the key (create revision = its revision, version 1)
  exactly when the key did not exist before; otherwise the version grows by 1;
* **history**: streams agree with each other, every put event comes from a
  write of the history that did not fail (values are unique per put), with the
  revision an acknowledged write reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .history import FAIL, OK, Operation

__all__ = ["Violation", "WatchRecord", "check_watches", "format_violations"]


@dataclass
class WatchRecord:
    """What one watch delivered. The range is ``[start, end)``; ``end`` None
    watches the key `start` alone. ``start_revision`` 0 means "from the next
    change" (then ``opened_revision``, the store revision when the watch was
    opened, if known, bounds where it must start). ``last_revision``: the
    stream is known to have delivered everything up to this revision (None:
    up to its last event)."""

    start: str
    end: str | None = None
    start_revision: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    opened_revision: int | None = None
    last_revision: int | None = None

    def covers(self, key: str) -> bool:
        return key == self.start if self.end is None else self.start <= key < self.end

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WatchRecord:
        return cls(**d)


@dataclass
class Violation:
    rule: str
    watch: int | None
    revision: int | None
    detail: str

    def __str__(self) -> str:
        where = "" if self.watch is None else f"watch {self.watch} "
        return f"[{self.rule}] {where}rev {self.revision}: {self.detail}"


def format_violations(violations: Sequence[Violation], limit: int = 20) -> str:
    lines = [str(v) for v in violations[:limit]]
    if len(violations) > limit:
        lines.append(f"... and {len(violations) - limit} more")
    return "\n".join(lines)


def _content(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["type"], e["key"], e.get("value"), e.get("create"), e.get("version"))


def _history_writes(
    history: Iterable[Operation],
) -> tuple[dict[tuple[str, Any], Operation], dict[tuple[int, str], str]]:
    """(key, value) -> the op that put it; (rev, key) -> "put"/"delete" known from acknowledged writes."""
    by_value: dict[tuple[str, Any], Operation] = {}
    acked: dict[tuple[int, str], str] = {}
    for op in history:
        inp = op.input
        f = inp.get("f") if isinstance(inp, dict) else None
        out = op.output if op.status == OK and isinstance(op.output, dict) else None
        if f == "put":
            by_value[(inp["key"], inp["value"])] = op
            if out is not None:
                acked[(out["rev"], inp["key"])] = "put"
        elif f == "delete" and out is not None and out.get("deleted"):
            acked[(out["rev"], inp["key"])] = "delete"
        elif f == "txn":
            branches = [inp.get("then", []), inp.get("else", [])]
            if out is not None:
                branches = [branches[0] if out.get("ok") else branches[1]]
            for branch in branches:
                for o in branch:
                    if o[0] == "put":
                        by_value[(o[1], o[2])] = op
                        if out is not None:
                            acked[(out["rev"], o[1])] = "put"
    return by_value, acked


def check_watches(
    watches: Sequence[WatchRecord],
    history: Iterable[Operation] = (),
    *,
    require_prev_kv: bool = False,
    complete_from: int | None = None,
) -> list[Violation]:
    """Every rule broken by the `watches` (against each other and the `history`).

    `complete_from`: the reference (all streams plus the history) holds every
    change from this revision on, so a key with no earlier event did not exist
    before it (enables the prev_kv and create checks on a key's first event).
    """
    out: list[Violation] = []
    by_value, acked = _history_writes(history)
    # the reference log: (rev, key) -> event, merged from every stream
    reference: dict[tuple[int, str], dict[str, Any]] = {}
    for wi, w in enumerate(watches):
        for e in w.events:
            ref = reference.setdefault((e["rev"], e["key"]), e)
            if _content(ref) != _content(e):
                out.append(
                    Violation(
                        "history",
                        wi,
                        e["rev"],
                        f"streams disagree on {e['key']!r}: {_content(ref)} vs {_content(e)}",
                    )
                )
    known: dict[tuple[int, str], str] = {k: e["type"] for k, e in reference.items()}
    for k, kind in acked.items():
        known.setdefault(k, kind)
    # events must come from writes that did not fail, at the revision they reported
    for (rev, key), e in sorted(reference.items()):
        if e["type"] != "put" or not by_value:
            continue
        op = by_value.get((key, e.get("value")))
        if op is None:
            out.append(
                Violation(
                    "history",
                    None,
                    rev,
                    f"put {key!r}={e.get('value')!r} matches no write of the history",
                )
            )
        elif op.status == FAIL:
            out.append(
                Violation(
                    "history",
                    None,
                    rev,
                    f"put {key!r}={e.get('value')!r} comes from op #{op.id}, which failed",
                )
            )
        elif op.status == OK and isinstance(op.output, dict) and op.output.get("rev") != rev:
            out.append(
                Violation(
                    "history",
                    None,
                    rev,
                    f"op #{op.id} was acknowledged at revision {op.output.get('rev')}",
                )
            )
    for (rev, key), kind in acked.items():
        seen_event = reference.get((rev, key))
        if seen_event is not None and seen_event["type"] != kind:
            out.append(
                Violation(
                    "history", None, rev, f"{key!r}: acknowledged {kind}, streams show {seen_event['type']}"
                )
            )
    _check_states(reference, require_prev_kv, complete_from, out)
    for wi, w in enumerate(watches):
        _check_stream(wi, w, known, out)
    return out


def _check_states(
    reference: dict[tuple[int, str], dict[str, Any]],
    require_prev_kv: bool,
    complete_from: int | None,
    out: list[Violation],
) -> None:
    """prev_kv and create/version against the key's previous event in the reference."""
    last: dict[str, dict[str, Any]] = {}
    for (rev, key), e in sorted(reference.items()):
        before = last.get(key)
        last[key] = e
        state_known = before is not None or (complete_from is not None and complete_from <= rev)
        if not state_known:
            continue
        existed = before is not None and before["type"] == "put"
        prev = e.get("prev")
        if prev is not None:
            if not existed:
                out.append(
                    Violation(
                        "prev_kv", None, rev, f"{key!r}: prev_kv {prev} but the key did not exist"
                    )
                )
            elif before is not None and (prev.get("value"), prev.get("mod")) != (
                before.get("value"),
                before["rev"],
            ):
                out.append(
                    Violation(
                        "prev_kv",
                        None,
                        rev,
                        f"{key!r}: prev_kv {prev}, the key was {before.get('value')!r} at {before['rev']}",
                    )
                )
        elif existed and require_prev_kv:
            out.append(
                Violation("prev_kv", None, rev, f"{key!r}: no prev_kv though the key existed")
            )
        if e["type"] != "put" or e.get("create") is None:
            continue
        created = e["create"] == rev
        if created == existed:
            out.append(
                Violation(
                    "create",
                    None,
                    rev,
                    f"{key!r}: create revision {e['create']} but the key "
                    f"{'existed' if existed else 'did not exist'} before",
                )
            )
        elif created and e.get("version") not in (None, 1):
            out.append(
                Violation("create", None, rev, f"{key!r}: created with version {e.get('version')}")
            )
        elif (
            existed
            and before is not None
            and e.get("version") is not None
            and before.get("version") is not None
            and e["version"] != before["version"] + 1
        ):
            out.append(
                Violation(
                    "create",
                    None,
                    rev,
                    f"{key!r}: version {e['version']} after {before['version']}",
                )
            )
        elif (
            existed
            and before is not None
            and before.get("create") is not None
            and e["create"] != before["create"]
        ):
            out.append(
                Violation(
                    "create",
                    None,
                    rev,
                    f"{key!r}: create revision changed from {before['create']} to {e['create']}",
                )
            )


def _check_stream(
    wi: int, w: WatchRecord, known: dict[tuple[int, str], str], out: list[Violation]
) -> None:
    seen: set[tuple[int, str]] = set()
    last_rev = 0
    for e in w.events:
        rev, key = e["rev"], e["key"]
        if not w.covers(key):
            out.append(Violation("filter", wi, rev, f"{key!r} is outside the watched range"))
        if rev < last_rev:
            out.append(Violation("ordered", wi, rev, f"revision {rev} after {last_rev}"))
        if (rev, key) in seen:
            out.append(Violation("unique", wi, rev, f"{key!r} delivered twice"))
        seen.add((rev, key))
        last_rev = max(last_rev, rev)
    if w.start_revision and w.events and w.events[0]["rev"] < w.start_revision:
        out.append(
            Violation(
                "resumable",
                wi,
                w.events[0]["rev"],
                f"the watch from {w.start_revision} began earlier",
            )
        )
    first = w.start_revision or (None if w.opened_revision is None else w.opened_revision + 1)
    if first is None and seen:
        first = min(rev for rev, _ in seen)
    upper = w.last_revision if w.last_revision is not None else last_rev
    delivered_revs = {rev for rev, _ in seen}
    for (rev, key), _kind in sorted(known.items()):
        if not w.covers(key) or (rev, key) in seen or rev > upper:
            continue
        if rev in delivered_revs:
            out.append(Violation("atomic", wi, rev, f"revision {rev} delivered without {key!r}"))
        elif first is not None and rev >= first:
            rule = (
                "resumable"
                if w.start_revision and not any(r < rev for r in delivered_revs)
                else "reliable"
            )
            out.append(Violation(rule, wi, rev, f"{key!r} at revision {rev} never delivered"))
