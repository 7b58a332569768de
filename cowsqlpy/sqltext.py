"""Just enough SQL lexing to route statements and guard the engine.

The driver must know, before sending, whether a statement returns rows
(QUERY_SQL) or not (EXEC_SQL): the 1.11.1 engine silently skips a DDL sent as a
query and rejects a SELECT sent as an exec. It must also refuse RETURNING
(which crashes 1.11.1), map named parameters to positions, and spot
transaction control. Comments, string literals and quoted identifiers are
skipped so that none of them can fool these checks. Results are cached per
SQL text, since applications repeat statements.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ProgrammingError

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>'(?:[^']|'')*(?:'|\Z))
  | (?P<quoted>"(?:[^"]|"")*(?:"|\Z)|`(?:[^`]|``)*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
  | (?P<blob>[xX]'[^']*')
  | (?P<param>\?[0-9]*|[:@$][A-Za-z_][A-Za-z0-9_$]*)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<number>[0-9][0-9A-Za-z_.]*)
  | (?P<semi>;)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)

ROW_VERBS = frozenset({"SELECT", "VALUES", "EXPLAIN"})
WRITE_VERBS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
TX_VERBS = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"})


@dataclass(frozen=True)
class Statement:
    verb: str  # first keyword, upper case ("" for empty text)
    head: tuple[str, ...]  # the first three bare words, upper case (ROLLBACK TO ...)
    main_verb: str  # the verb after a WITH clause, else `verb`
    returns_rows: bool | None  # None: cannot tell from the text (PRAGMA)
    returning: bool  # the RETURNING keyword in any statement, outside literals and comments
    rollback_clause: bool  # OR ROLLBACK / RAISE(ROLLBACK): may end a surrounding transaction
    statements: int  # non-empty statements in the text
    qmarks: int  # '?' placeholders
    names: tuple[str, ...]  # distinct named placeholders, in order of first appearance
    numbered: bool  # '?NNN' placeholders present

    @property
    def is_write(self) -> bool:
        return self.main_verb in WRITE_VERBS

    @property
    def is_tx_control(self) -> bool:
        return self.verb in TX_VERBS


@functools.lru_cache(maxsize=1024)
def analyze(sql: str) -> Statement:
    """Classify one SQL text (see `Statement`)."""
    words: list[str] = []  # upper-cased bare words of the first statement, with '(' ')' markers
    depth = 0
    statements = 0
    in_statement = False
    qmarks = 0
    numbered = False
    names: dict[str, None] = {}
    returning = False
    rollback_clause = False
    main_verb = ""
    after_with = False
    prev = ""
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        if kind == "semi":
            in_statement = False
            depth = 0
            continue
        if not in_statement:
            in_statement = True
            statements += 1
        text = m.group()
        if statements > 1:
            # Only the first statement is classified; later ones are checked for RETURNING.
            if kind == "word" and text.upper() == "RETURNING":
                returning = True
            continue
        if kind == "word":
            up = text.upper()
            if not words:
                main_verb = up
                after_with = up == "WITH"
            elif after_with and depth == 0 and up in ROW_VERBS | WRITE_VERBS:
                main_verb, after_with = up, False
            if up == "RETURNING":
                returning = True
            if up == "ROLLBACK" and prev in ("OR", "("):
                rollback_clause = True
            words.append(up)
            prev = up
            continue
        prev = "(" if kind == "open" else ""
        if kind == "open":
            depth += 1
        elif kind == "close":
            depth -= 1
        elif kind == "param":
            if text == "?":
                qmarks += 1
            elif text[0] == "?":
                numbered = True
            else:
                names.setdefault(text[1:], None)
    verb = words[0] if words else ""
    if verb == "WITH" and main_verb == "WITH":
        main_verb = "SELECT"
    if main_verb in ROW_VERBS:
        returns_rows: bool | None = True
    elif verb == "PRAGMA":
        returns_rows = None
    else:
        returns_rows = False
    return Statement(
        verb=verb,
        head=tuple(words[:3]),
        main_verb=main_verb,
        returns_rows=returns_rows,
        returning=returning,
        rollback_clause=rollback_clause,
        statements=statements,
        qmarks=qmarks,
        names=tuple(names),
        numbered=numbered,
    )


def mentions_any(sql: str, words: Iterable[str]) -> bool:
    """A cheap screen before a lexing check: False when no word of `words` (lower case)
    occurs in `sql` in any case, as a keyword, a quoted name or any part of a token, so a
    check that only looks for those words has nothing to find. True: run the check."""
    low = sql.lower()
    return any(word in low for word in words)


def bind(stmt: Statement, params: object) -> tuple[object, ...]:
    """Positional parameter values for `stmt` from a sequence or a mapping.

    Named placeholders share an index per distinct name (SQLite numbers them by
    first appearance), so a mapping becomes values in that order.

    :raises ProgrammingError: wrong count, mixed styles, missing names.
    """
    if params is None:
        params = ()
    if isinstance(params, dict) or (hasattr(params, "keys") and hasattr(params, "__getitem__")):
        if stmt.qmarks or stmt.numbered:
            raise ProgrammingError("a mapping of parameters needs named placeholders (:name), not '?'")
        missing = [n for n in stmt.names if n not in params]  # type: ignore[operator]
        if missing:
            raise ProgrammingError(f"no value for named parameter(s): {', '.join(missing)}")
        return tuple(params[n] for n in stmt.names)
    if isinstance(params, (str, bytes, bytearray, memoryview)):
        raise ProgrammingError(f"parameters must be a sequence or a mapping, not {type(params).__name__}")
    try:
        values: tuple[object, ...] = tuple(params)  # type: ignore[arg-type]
    except TypeError:
        raise ProgrammingError(f"parameters must be a sequence or a mapping, not {type(params).__name__}") from None
    if stmt.names and not stmt.qmarks:
        if len(values) != len(stmt.names):
            raise ProgrammingError(f"statement uses {len(stmt.names)} named parameter(s), {len(values)} given")
        return values
    if stmt.names:
        raise ProgrammingError("statement mixes '?' and named placeholders")
    if not stmt.numbered and len(values) != stmt.qmarks:
        raise ProgrammingError(f"statement uses {stmt.qmarks} parameter(s), {len(values)} given")
    return values


def literal(value: int | str | bytes | None) -> str:
    """`value` as an SQL literal, for SQL text that cannot take parameters: the
    1.11.1 engine binds an EXEC_SQL's parameters to its first statement only.
    Integers (and bools), text (quotes doubled), blobs (X'hex') and NULL."""
    if value is None:
        return "NULL"
    if isinstance(value, int):  # bool included
        return str(int(value))
    if isinstance(value, str):
        if "\x00" in value:
            raise ProgrammingError("text literal with a NUL character (the engine reads SQL text up to the first NUL)")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "X'" + bytes(value).hex() + "'"
    raise ProgrammingError(f"no SQL literal for {type(value).__name__}")
