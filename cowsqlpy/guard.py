"""The guard's rules: what a client's frame may carry before the engine sees it (sans-IO).

`cowsqlpy.front` feeds every request frame of a connection to a `ConnectionGuard`, which
walks its body against the layout in `protocol.REQUESTS` and the switches of the engine
version (`versions.EngineFeatures`) and answers `FORWARD`, `PIPE` (a Raft peer's CONNECT:
the connection becomes a byte pipe) or a `Refusal`. Nothing here does I/O, so the rules
are tested directly and by the fuzzer through a real front.

Refused for every client, ours included:

* frames: a schema byte the engine does not read for that type, a body shorter or longer
  than its layout, text without NUL or not UTF-8, a params tuple with a bad count, type
  code or length, unknown request types, HEARTBEAT, CONNECT from a connection that is not
  a permitted peer or after other requests, DESCRIBE formats the engine aborts on, field
  values outside the table's `allowed`, statement ids never prepared on this connection or
  already finalized;
* OPEN of a URI filename (``file:...``), an empty name, flags other than 0, a VFS other
  than the engine's;
* SQL that reaches outside the database or breaks the engine (`check_sql`): ATTACH and
  DETACH, VACUUM INTO, ``load_extension`` and a few functions/tables that touch memory or
  pages directly, PRAGMAs outside an allow-list, RETURNING where the engine cannot take it.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Final

from . import protocol as P
from .barrier import BARRIER_DATABASE, BARRIER_SCHEMA, BARRIER_WRITE
from .rights import Access
from .sqltext import _TOKEN, mentions_any
from .versions import EngineFeatures

#: FAILURE code of a refused request: SQLITE_AUTH, what SQLite's own authorizer answers
REFUSED: Final = 23
#: FAILURE code of a body that does not follow its layout: DQLITE_PARSE, as the engine
MALFORMED: Final = 1005
#: FAILURE code of a request the connection's certificate has no right to: SQLITE_AUTH_USER
#: (`cowsqlpy.errors.AccessDeniedError`)
DENIED: Final = 279

#: the protocol versions a client may start with (§2: current and legacy pre-1.0)
HANDSHAKES: Final = frozenset({P.PROTOCOL_VERSION, 0x86104DD760433FE5})

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_HEADER = struct.Struct("<IBBH")
_SQL_TYPES = frozenset({P.PREPARE, P.EXEC_SQL, P.QUERY_SQL})
_PARAM_TYPES = frozenset({P.EXEC, P.QUERY, P.EXEC_SQL, P.QUERY_SQL})
_STMT_TYPES = frozenset({P.EXEC, P.QUERY, P.FINALIZE})
_FIXED_VALUES = frozenset({P.INTEGER, P.FLOAT, P.NULL, P.BOOLEAN})
_TEXT_VALUES = frozenset({P.TEXT, P.ISO8601})
_ENGINE_VFS = frozenset({"", "volatile"})
#: requests that change the cluster or copy a whole database (`Access.ADMIN` and up)
ADMIN_REQUESTS: Final = frozenset({P.ADD, P.ASSIGN, P.REMOVE, P.TRANSFER, P.WEIGHT, P.DUMP})
#: CLUSTER format the client's engine probe sends (`wire.WireConnection.engine_probe`):
#: both engines take it (1.11 answers as format 1, 1.15 with FAILURE), so the engine answers
ENGINE_PROBE_FORMAT: Final = 2
#: requests served to every certificate the CA signed (`Access.NONE`): finding the leader
_NONE_REQUESTS: Final = frozenset({P.LEADER, P.CLIENT})


@dataclass(frozen=True)
class Refusal:
    """A refused frame: reply FAILURE(code, message), or close the connection when `close`."""

    code: int
    message: str
    close: bool = False


FORWARD: Final = "forward"
PIPE: Final = "pipe"
Decision = Refusal | str


def _malformed(name: str, what: str) -> Refusal:
    return Refusal(MALFORMED, f"{name}: {what}")


def _refused(what: str) -> Refusal:
    return Refusal(REFUSED, f"refused by the node's guard: {what}")


_ACCESS_NAMES = {
    Access.NONE: "a certificate without rights",
    Access.READ: "a read-only certificate",
    Access.WRITE: "a read-write certificate",
}


def _denied(access: Access, what: str) -> Refusal:
    who = _ACCESS_NAMES.get(access, f"an {access.name.lower()} certificate")
    return Refusal(DENIED, f"refused by the node's guard for {who}: {what}")


# -- SQL ------------------------------------------------------------------------

# PRAGMAs a client may run. A name outside all three sets is refused: the engine cannot
# take journal_mode/page_size/locking_mode changes (abort), busy_timeout would sleep in the
# engine's own thread, wal_checkpoint/synchronous/mmap_size/temp_store/writable_schema
# reach under the replication, heap limits are process-wide.
PRAGMA_INFO: Final = frozenset(
    {  # argument (if any) names an object: also table-valued functions
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
        "collation_list",
        "function_list",
        "module_list",
        "pragma_list",
        "database_list",
        "compile_options",
    }
)
PRAGMA_READ: Final = frozenset(
    {  # query form only, no argument
        "journal_mode",
        "page_size",
        "auto_vacuum",
        "encoding",
        "locking_mode",
        "synchronous",
        "wal_autocheckpoint",
        "temp_store",
        "mmap_size",
        "cache_spill",
        "busy_timeout",
        "schema_version",
        "freelist_count",
        "page_count",
        "max_page_count",
        "data_version",
        "secure_delete",
        "cell_size_check",
        "writable_schema",
        "trusted_schema",
    }
)
PRAGMA_SET: Final = frozenset(
    {  # may take a value; per-connection or a replicated header field
        "foreign_keys",
        "defer_foreign_keys",
        "recursive_triggers",
        "legacy_alter_table",
        "reverse_unordered_selects",
        "ignore_check_constraints",
        "automatic_index",
        "query_only",
        "user_version",
        "application_id",
        "optimize",
        "case_sensitive_like",
        "cache_size",  # per connection; sent to an unguarded engine it survives (test_pragma_allowlist)
    }
)
# Function, virtual table and module names that reach outside SQL's sandbox.
FORBIDDEN_NAMES: Final = frozenset(
    {
        "load_extension",
        "fts3_tokenizer",
        "sqlite_dbpage",
        "sqlite_dbdata",
        "sqlite_dbptr",
        "readfile",
        "writefile",
        "edit",
        "zipfile",
        "fsdir",
    }
)
_TRANSPARENT = frozenset({"EXPLAIN", "QUERY", "PLAN"})


def _unquote(kind: str, text: str) -> str:
    if kind == "quoted":
        q = text[0]
        body = text[1:-1] if len(text) > 1 else ""
        return body.replace(q + q, q) if q != "[" else body
    return text


def _pragma_parts(words: list[tuple[str, str]]) -> tuple[str | None, bool]:
    """The name (schema prefix dropped, lower case) and whether an argument follows, of
    `words`: a statement's tokens after PRAGMA as (kind, text), comments dropped."""
    names = []
    i = 0
    while i < len(words) and words[i][0] in ("word", "quoted"):
        names.append(_unquote(*words[i]).lower())
        i += 1
        if i < len(words) and words[i] == ("other", "."):
            i += 1
            continue
        break
    return (names[-1] if names else None), i < len(words)


def _pragma_reason(words: list[tuple[str, str]]) -> str | None:
    name, has_argument = _pragma_parts(words)
    if name is None:
        return "PRAGMA without a name"
    if name in PRAGMA_INFO or name in PRAGMA_SET:
        return None
    if name in PRAGMA_READ:
        return (
            None
            if not has_argument
            else f"PRAGMA {name} may only be read (setting it breaks the engine or the replication)"
        )
    return f"PRAGMA {name} is not on the allow-list"


def _statements(sql: str) -> list[list[tuple[str, str]]]:
    """The statements of `sql`, each as its (kind, text) tokens, whitespace and comments dropped."""
    statements: list[list[tuple[str, str]]] = [[]]
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        assert kind is not None
        if kind in ("ws", "comment"):
            continue
        if kind == "semi":
            statements.append([])
            continue
        statements[-1].append((kind, m.group()))
    return statements


# Every word a refusal of `check_sql` starts from: text without any of them passes unlexed.
_REFUSAL_WORDS: Final = FORBIDDEN_NAMES | {"pragma", "returning", "attach", "detach", "vacuum"}


@functools.lru_cache(maxsize=2048)
def check_sql(sql: str, returning_safe: bool) -> str | None:
    """Why `sql` (every statement of it) is refused, or None if it may run."""
    return _lexed_check(sql, returning_safe) if mentions_any(sql, _REFUSAL_WORDS) else None


def _lexed_check(sql: str, returning_safe: bool) -> str | None:
    for tokens in _statements(sql):
        for kind, text in tokens:
            if kind not in ("word", "quoted"):
                continue
            name = _unquote(kind, text).lower()
            if name in FORBIDDEN_NAMES:
                return f"{name} reaches outside the database"
            if (
                name.startswith("pragma_")
                and name[7:] not in PRAGMA_INFO
                and name not in PRAGMA_INFO
            ):
                return f"table-valued {name} is not on the allow-list"
            if kind == "word" and name == "returning" and not returning_safe:
                return "RETURNING crashes this engine version"
        verbs = [(i, t.upper()) for i, (k, t) in enumerate(tokens) if k == "word"]
        start = 0
        while start < len(verbs) and verbs[start][1] in _TRANSPARENT:
            start += 1
        if start == len(verbs):
            continue
        index, verb = verbs[start]
        if verb in ("ATTACH", "DETACH"):
            return f"{verb} reaches outside the database"
        if verb == "VACUUM" and any(v == "INTO" for _, v in verbs[start:]):
            return "VACUUM INTO writes a file on the node's host"
        if verb == "PRAGMA":
            reason = _pragma_reason(tokens[index + 1 :])
            if reason is not None:
                return reason
    return None


# Words that write, or may, wherever they stand in a statement (outside literals, comments
# and quoted identifiers). REPLACE before "(" is the string function; ROLLBACK may only be
# a whole statement of its own.
WRITE_WORDS: Final = frozenset(
    {
        "INSERT",
        "UPDATE",
        "DELETE",
        "REPLACE",
        "UPSERT",
        "RETURNING",
        "CREATE",
        "DROP",
        "ALTER",
        "ATTACH",
        "DETACH",
        "VACUUM",
        "REINDEX",
        "ANALYZE",
        "PRAGMA",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
    }
)
_READ_VERBS = frozenset({"SELECT", "VALUES", "WITH"})
# Pragmas whose no-argument form writes all the same.
_PRAGMA_WRITES_BARE = frozenset({"optimize"})


def _read_only_statement(tokens: list[tuple[str, str]]) -> str | None:
    start = 0
    while (
        start < len(tokens)
        and tokens[start][0] == "word"
        and tokens[start][1].upper() in _TRANSPARENT
    ):
        start += 1
    tokens = tokens[start:]
    if not tokens:
        return None
    kind, first = tokens[0]
    verb = first.upper() if kind == "word" else first
    if verb == "ROLLBACK":  # undoes nothing without writes; the drivers send it after scripts
        rest = [t.upper() for _, t in tokens[1:]]
        return None if rest in ([], ["TRANSACTION"]) else "ROLLBACK TO may only follow writes"
    if verb == "PRAGMA":
        reason = _pragma_reason(tokens[1:])
        if reason is not None:
            return reason
        name, has_argument = _pragma_parts(tokens[1:])
        if name in PRAGMA_INFO:
            return None
        if has_argument:
            return f"PRAGMA {name} with a value may write"
        if name in _PRAGMA_WRITES_BARE:
            return f"PRAGMA {name} writes"
        return None
    if verb not in _READ_VERBS:
        return f"{verb} may write"
    for i, (kind, text) in enumerate(tokens):
        if kind != "word":
            continue
        word = text.upper()
        if word in WRITE_WORDS:
            if word == "REPLACE" and i + 1 < len(tokens) and tokens[i + 1][0] == "open":
                continue
            return f"{word} may write"
    return None


@functools.lru_cache(maxsize=2048)
def read_only_reason(sql: str) -> str | None:
    """Why `sql` may write (some statement of it), or None if it cannot: the rule for
    `Access.READ` connections.

    An allow-list: every statement is SELECT, VALUES or WITH ... (EXPLAIN prefixes looked
    through) with no `WRITE_WORDS` outside literals, comments and quoted identifiers; a
    PRAGMA in its reading form (information pragmas, or no value); or a bare ROLLBACK.
    """
    for tokens in _statements(sql):
        reason = _read_only_statement(tokens)
        if reason is not None:
            return reason
    return None


@functools.lru_cache(maxsize=2048)
def _sql_passes(sql: bytes, returning_safe: bool) -> bool:
    """`check_sql` of a request's raw SQL text: UTF-8 and nothing to refuse."""
    try:
        text = sql.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return check_sql(text, returning_safe) is None


# -- Frames ---------------------------------------------------------------------


class _Body:
    """A cursor over one request body; every read checks the bounds."""

    __slots__ = ("data", "pos", "name")

    def __init__(self, data: bytes | bytearray, name: str) -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def u64(self) -> int:
        if self.pos + 8 > len(self.data):
            raise _Bad("body too short for its layout")
        (value,) = _U64.unpack_from(self.data, self.pos)
        self.pos += 8
        return int(value)

    def u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise _Bad("body too short for its layout")
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def text(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise _Bad("text without NUL")
        nxt = (end + 8) & ~7
        if nxt > len(self.data):
            raise _Bad("text padding runs past the body")
        try:
            value = self.data[self.pos : end].decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad("text is not UTF-8") from None
        self.pos = nxt
        return value

    def skip_text(self) -> None:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise _Bad("text value without NUL")
        self.pos = (end + 8) & ~7
        if self.pos > len(self.data):
            raise _Bad("text padding runs past the body")

    def params(self, schema: int, max_params: int) -> int:
        """Walk a params tuple (§5.1; schema 1: a u32 count); the number of params."""
        data = self.data
        if schema == 0:
            n = data[self.pos]
            head = 1
        else:
            if self.pos + 4 > len(data):
                raise _Bad("params header too short")
            (n,) = _U32.unpack_from(data, self.pos)
            head = 4
        if n > max_params:
            raise _Bad(f"{n} params, this engine takes at most {max_params}")
        codes = data[self.pos + head : self.pos + head + n]
        self.pos += (head + n + 7) & ~7
        if len(codes) != n or self.pos > len(data):
            raise _Bad("params header runs past the body")
        for code in codes:
            if code in _FIXED_VALUES:
                self.pos += 8
                if self.pos > len(data):
                    raise _Bad("param value runs past the body")
            elif code in _TEXT_VALUES:
                self.skip_text()
            elif code == P.BLOB:
                size = self.u64()
                self.pos += (size + 7) & ~7
                if self.pos > len(data):
                    raise _Bad("blob param runs past the body")
            else:
                raise _Bad(f"type code {code} is not valid in params")
        return int(n)


# Per request type, the fields with a table of allowed values (index, field).
_ALLOWED: dict[int, tuple[tuple[int, P.Field], ...]] = {
    code: tuple((i, f) for i, f in enumerate(layout.fields) if f.allowed is not None)
    for code, layout in P.REQUESTS.items()
}


class _Bad(Exception):
    """A body that does not follow its layout (internal to this module)."""


class ConnectionGuard:
    """The rules for one client connection, with the statement ids it prepared.

    :param features: the engine version's switches.
    :param access: what the connection may do (`cowsqlpy.rights.Access`): PEER may hand
        itself to Raft with CONNECT (a peer authenticated by TLS, or any admitted address
        when TLS is off), ADMIN may send `ADMIN_REQUESTS`, READ only SQL that cannot write
        (`read_only_reason`).
    """

    def __init__(self, features: EngineFeatures, *, access: Access = Access.PEER) -> None:
        self.features = features
        self.access = access
        self.requests = 0
        self.live: set[int] = set()
        self.database: str | None = None  # the name of the connection's OPEN
        self._schema1 = features.max_params > P.MAX_PARAMS  # the engine reads params schema 1

    def prepared(self, stmt_id: int) -> None:
        """The engine answered a PREPARE of this connection with `stmt_id`."""
        self.live.add(stmt_id)

    def check(self, rtype: int, schema: int, body: bytes | bytearray) -> Decision:
        """FORWARD, PIPE or a Refusal for one request frame (its header fields and body)."""
        self.requests += 1
        if rtype in _PARAM_TYPES and self._fast(rtype, schema, body):
            return FORWARD
        name = P.REQUEST_NAMES.get(rtype, f"request type {rtype}")
        try:
            return self._check(rtype, schema, body, name)
        except _Bad as exc:
            return _malformed(name, str(exc))

    def _fast(self, rtype: int, schema: int, body: bytes | bytearray) -> bool:
        """The hot path: whether an EXEC/QUERY of a live statement, or an EXEC_SQL/QUERY_SQL
        of a SQL text already let through, passes, walking only its params. False: not
        known here (`_check` decides, and words any refusal)."""
        if schema and not self._schema1:
            return False
        n = len(body)
        if rtype == P.EXEC or rtype == P.QUERY:
            if n < 8 or _U32.unpack_from(body, 4)[0] not in self.live:
                return False
            pos = 8
        else:
            if self.access < Access.WRITE:
                return False  # read-only rules and the barrier's exception: the full path
            end = body.find(b"\0", 8)
            pos = (end + 8) & ~7
            if end < 0 or pos > n or not _sql_passes(bytes(body[8:end]), self.features.returning):
                return False
        if pos == n:
            return True
        cur = _Body(body, "")
        cur.pos = pos
        try:
            cur.params(schema, self.features.max_params)
        except _Bad:
            return False
        return cur.pos == n

    def _check(self, rtype: int, schema: int, body: bytes | bytearray, name: str) -> Decision:
        if rtype == P.CONNECT:
            if self.access < Access.PEER or self.requests != 1:
                return Refusal(
                    REFUSED, "CONNECT is for Raft peers, as their first request", close=True
                )
            cur = _Body(body, name)
            cur.u64()
            cur.text()
            if cur.pos != len(body) or schema:
                return Refusal(MALFORMED, "malformed CONNECT", close=True)
            return PIPE
        layout = P.REQUESTS.get(rtype)
        if layout is None:
            if rtype == P.HEARTBEAT:
                return _refused("HEARTBEAT is not served to clients")
            return _refused(f"unknown request type {rtype}")
        if self.access < Access.WRITE:
            denied = self._denied(rtype, name)
            if denied is not None:
                return denied
        elif rtype in ADMIN_REQUESTS and self.access < Access.ADMIN:
            return _denied(self.access, f"{name} needs an admin certificate")
        if schema and not (self._schema1 and (rtype in _PARAM_TYPES or rtype == P.PREPARE)):
            return _malformed(name, f"schema {schema} is not read by this engine for {name}")
        cur = _Body(body, name)
        values: list[int | str] = []
        for field in layout.fields:
            if field.kind == "u64":
                values.append(cur.u64())
            elif field.kind == "u32":
                values.append(cur.u32())
            elif field.kind == "text":
                values.append(cur.text())
            elif cur.pos < len(body):  # "params", optional and last
                cur.params(schema, self.features.max_params)
        if cur.pos != len(body):
            raise _Bad(f"{len(body) - cur.pos} bytes after the end of the layout")
        if rtype == P.DESCRIBE:
            if values[0] not in self.features.describe_formats:
                return _refused(f"DESCRIBE format {values[0]} aborts this engine version")
        elif not (rtype == P.CLUSTER and values[0] == ENGINE_PROBE_FORMAT):
            for index, field in _ALLOWED[rtype]:
                if values[index] not in field.allowed:  # type: ignore[operator]
                    return _refused(f"{name} {field.name}={values[index]}: {field.why}")
        if rtype in _STMT_TYPES:
            stmt_id = values[1]
            assert isinstance(stmt_id, int)
            if stmt_id not in self.live:
                return _refused(
                    f"statement {stmt_id} was never prepared on this connection or is finalized"
                )
            if rtype == P.FINALIZE:
                self.live.discard(stmt_id)
        elif rtype in _SQL_TYPES:
            sql = values[1]
            assert isinstance(sql, str)
            reason = check_sql(sql, self.features.returning)
            if reason is not None:
                return _refused(reason)
            if self.access < Access.WRITE and not self._barrier(sql):
                reason = read_only_reason(sql)
                if reason is not None:
                    shown = sql if len(sql) <= 60 else sql[:57] + "..."
                    return _denied(self.access, f"{reason} ({shown!r})")
        elif rtype == P.OPEN:
            decision = self._check_open(*values)
            if decision == FORWARD:
                assert isinstance(values[0], str)
                self.database = values[0]
            return decision
        return FORWARD

    def _denied(self, rtype: int, name: str) -> Refusal | None:
        """Below WRITE: the request types refused whatever their body."""
        if self.access == Access.NONE and rtype not in _NONE_REQUESTS:
            return _denied(self.access, f"{name} needs at least read rights")
        if rtype in ADMIN_REQUESTS:
            return _denied(self.access, f"{name} needs an admin certificate")
        if rtype == P.OPEN and self.database is not None:
            # One database a connection (the engine takes no second OPEN): the barrier's
            # exception below must not follow the connection to another database.
            return _denied(self.access, "a second OPEN on this connection")
        return None

    def _barrier(self, sql: str) -> bool:
        """The read barrier's own statements in its own database: what makes a READ
        connection's reads linearizable (`cowsqlpy.barrier`)."""
        return self.database == BARRIER_DATABASE and sql in (BARRIER_SCHEMA, BARRIER_WRITE)

    @staticmethod
    def _check_open(name: int | str, flags: int | str, vfs: int | str) -> Decision:
        assert isinstance(name, str)
        if not name:
            return _refused("OPEN of an empty name")
        if name[:5].lower() == "file:":
            return _refused("OPEN of a URI filename")
        if flags != 0:
            return _refused(f"OPEN flags {flags} (only 0 is served)")
        if vfs not in _ENGINE_VFS:
            return _refused(f"OPEN with VFS {vfs!r} (the engine's own is used)")
        return FORWARD


def failure_frame(refusal: Refusal) -> bytes:
    """The FAILURE response frame for a refusal."""
    text = refusal.message.encode("utf-8", "replace").replace(b"\0", b" ")
    body = _U64.pack(refusal.code) + text + bytes(8 - len(text) % 8)
    return _HEADER.pack(len(body) >> 3, P.FAILURE, 0, 0) + body


__all__ = [
    "REFUSED",
    "MALFORMED",
    "DENIED",
    "WRITE_WORDS",
    "read_only_reason",
    "ADMIN_REQUESTS",
    "HANDSHAKES",
    "FORWARD",
    "PIPE",
    "Refusal",
    "Decision",
    "ConnectionGuard",
    "check_sql",
    "failure_frame",
    "PRAGMA_INFO",
    "PRAGMA_READ",
    "PRAGMA_SET",
    "FORBIDDEN_NAMES",
]
