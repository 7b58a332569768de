"""The guard's rules without I/O: SQL checks and frame checks, with hypothesis."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowsqlpy import codec
from cowsqlpy import protocol as P
from cowsqlpy.guard import (
    FORBIDDEN_NAMES,
    FORWARD,
    MALFORMED,
    PIPE,
    PRAGMA_INFO,
    PRAGMA_READ,
    PRAGMA_SET,
    REFUSED,
    ConnectionGuard,
    Refusal,
    _lexed_check,
    check_sql,
)
from cowsqlpy.rights import Access
from cowsqlpy.versions import COWSQL_1_15, DQLITE_1_11

FEATURES = [DQLITE_1_11, COWSQL_1_15]


def _cased(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda ups: "".join(c.upper() if u else c.lower() for c, u in zip(word, ups, strict=True))
    )


SPACE = st.sampled_from([" ", "  ", "\n", "\t", " /* c */ ", " -- c\n"])
QUOTES = st.sampled_from(["{}", '"{}"', "[{}]", "`{}`"])


@given(
    name=st.sampled_from(sorted(PRAGMA_READ)),
    quote=QUOTES,
    space=SPACE,
    schema=st.sampled_from(["", "main.", '"main".']),
    value=st.sampled_from(["=DELETE", " = 'memory'", "(512)", "=0", "= -1"]),
)
def test_setting_a_read_only_pragma_is_refused_however_it_is_spelled(
    name: str, quote: str, space: str, schema: str, value: str
) -> None:
    sql = f"PRAGMA{space}{schema}{quote.format(name)}{value}"
    assert check_sql(sql, True) is not None
    assert check_sql(f"PRAGMA {name}", True) is None  # reading is fine


@given(name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20))
def test_unknown_pragmas_are_refused(name: str) -> None:
    known = PRAGMA_INFO | PRAGMA_READ | PRAGMA_SET
    assert (check_sql(f"PRAGMA {name}", True) is None) == (name in known)


@given(
    verb=st.sampled_from(["ATTACH", "DETACH"]).flatmap(_cased),
    space=SPACE,
    prefix=st.sampled_from(["", "EXPLAIN ", "SELECT 1; "]),
)
def test_attach_and_detach_are_refused_anywhere_in_the_text(
    verb: str, space: str, prefix: str
) -> None:
    assert check_sql(f"{prefix}{verb}{space}'x.db' AS y", True) is not None


@given(name=st.sampled_from(sorted(FORBIDDEN_NAMES)).flatmap(_cased), quote=QUOTES)
def test_forbidden_functions_even_quoted(name: str, quote: str) -> None:
    assert check_sql(f"SELECT {quote.format(name)}('x')", True) is not None


@pytest.mark.parametrize(
    "sql",
    [
        "VACUUM INTO '/tmp/x'",
        "vacuum main into 'file:/x?vfs=unix'",
        "SELECT 1; VACUUM INTO 'y'",
        "SELECT * FROM pragma_journal_mode('delete')",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        'SELECT * FROM "pragma_page_size"',
        "PRAGMA",
        "PRAGMA 'x'",
    ],
)
def test_refused_sql(sql: str) -> None:
    assert check_sql(sql, True) is not None


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'ATTACH x', \"load_extension\" FROM t",  # a literal, and a column that is not called
        "SELECT * FROM t -- VACUUM INTO 'x'",
        "VACUUM",
        "PRAGMA table_info(t)",
        "SELECT * FROM pragma_table_info('t')",
        "PRAGMA foreign_keys = OFF",
        "PRAGMA user_version = 3",
        "CREATE TABLE attachments (x)",
        "",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "PRAGMA main.table_info(t)",
    ],
)
def test_allowed_sql(sql: str) -> None:
    if "load_extension" in sql:
        assert (
            check_sql(sql, True) is not None
        )  # a quoted name is still the function's name: refused
    else:
        assert check_sql(sql, True) is None


def test_returning_follows_the_version_table() -> None:
    sql = "INSERT INTO t (v) VALUES (1) RETURNING k"
    assert check_sql(sql, False) is not None
    assert check_sql(sql, True) is None
    for features in FEATURES:
        guard = ConnectionGuard(features, access=Access.ADMIN)
        verdict = _check(guard, codec.encode_request(P.EXEC_SQL, 0, sql))
        assert (verdict == FORWARD) == features.returning


@pytest.mark.parametrize("features", FEATURES, ids=lambda f: f.name)
def test_every_pragma_the_version_table_calls_fatal_is_refused(features: object) -> None:
    for name, values in features.fatal_pragmas:  # type: ignore[attr-defined]
        for value in values or {"1", "512", "delete"}:
            sql = f"PRAGMA {name}" + (f" = {value}" if value else "")
            assert check_sql(sql, True) is not None, sql


def _check(guard: ConnectionGuard, data: bytes) -> object:
    words, rtype, schema = int.from_bytes(data[:4], "little"), data[4], data[5]
    assert len(data) == 8 + words * 8
    return guard.check(rtype, schema, data[8:])


@pytest.mark.parametrize("features", FEATURES, ids=lambda f: f.name)
def test_every_request_the_client_encodes_passes(features: object) -> None:
    guard = ConnectionGuard(features, access=Access.ADMIN)  # type: ignore[arg-type]
    guard.prepared(3)
    for data in [
        codec.encode_request(P.LEADER),
        codec.encode_request(P.OPEN, "db"),
        codec.encode_request(P.PREPARE, 0, "SELECT ?"),
        codec.encode_request(P.EXEC, 0, 3, [1, "a", b"b", None, 1.5, True]),
        codec.encode_request(P.QUERY_SQL, 0, "SELECT ?", [2]),
        codec.encode_request(P.ASSIGN, 5, P.STANDBY),
        codec.encode_request(P.CLUSTER, 1),
        codec.encode_request(P.DESCRIBE, 0),
        codec.encode_request(P.FINALIZE, 0, 3),
    ]:
        assert _check(guard, data) == FORWARD, data
    assert 3 not in guard.live  # finalized


@given(rtype=st.sampled_from(sorted(P.REQUESTS)), cut=st.integers(1, 64))
def test_a_body_cut_short_is_malformed(rtype: int, cut: int) -> None:
    layout = P.REQUESTS[rtype]
    args = {"u64": 1, "u32": 0, "text": "x", "params": ()}
    values = [f.allowed[0] if f.allowed else args[f.kind] for f in layout.fields]
    data = codec.encode_request(rtype, *values)
    body = data[8:][: max(0, len(data) - 8 - cut * 8)]
    verdict = ConnectionGuard(COWSQL_1_15, access=Access.ADMIN).check(rtype, 0, body)
    assert isinstance(verdict, Refusal) and verdict.code in (MALFORMED, REFUSED)


def test_connect_only_first_and_only_for_peers() -> None:
    connect = (
        (11).to_bytes(8, "little")[:0] + (7).to_bytes(8, "little") + b"127.0.0.1:1\0" + bytes(4)
    )
    assert ConnectionGuard(COWSQL_1_15, access=Access.PEER).check(P.CONNECT, 0, connect) == PIPE
    refused = ConnectionGuard(COWSQL_1_15, access=Access.ADMIN).check(P.CONNECT, 0, connect)
    assert isinstance(refused, Refusal) and refused.close
    guard = ConnectionGuard(COWSQL_1_15, access=Access.PEER)
    guard.check(P.LEADER, 0, bytes(8))
    late = guard.check(P.CONNECT, 0, connect)
    assert isinstance(late, Refusal) and late.close


def test_params_over_the_engines_limit_are_refused() -> None:
    small = dataclasses.replace(COWSQL_1_15, max_params=2)
    guard = ConnectionGuard(small, access=Access.ADMIN)
    guard.prepared(0)
    verdict = _check(guard, codec.encode_request(P.EXEC, 0, 0, [1, 2, 3]))
    assert isinstance(verdict, Refusal) and verdict.code == MALFORMED


_SQL_TEXTS = [
    "SELECT ?",
    "INSERT INTO t VALUES (?, ?)",
    "ATTACH 'x' AS y",
    "PRAGMA journal_mode = delete",
    "SELECT 1 RETURNING x",
    "BEGIN",
]
_PARAM = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.text(st.characters(blacklist_characters="\x00"), max_size=20),
    st.binary(max_size=40),
    st.none(),
    st.floats(allow_nan=False),
)


@given(
    rtype=st.sampled_from([P.EXEC, P.QUERY, P.EXEC_SQL, P.QUERY_SQL]),
    sql=st.sampled_from(_SQL_TEXTS),
    stmt_id=st.integers(0, 3),
    params=st.lists(_PARAM, max_size=4),
    cut=st.integers(0, 40),
    flip=st.tuples(st.integers(0, 2000), st.integers(0, 255)),
    access=st.sampled_from([Access.READ, Access.WRITE, Access.PEER]),
)
def test_the_hot_path_agrees_with_the_full_check(
    rtype: int, sql: str, stmt_id: int, params: list[object], cut: int,
    flip: tuple[int, int], access: Access,
) -> None:  # fmt: skip
    """Whatever the guard's hot path passes, the full rules pass too (mutated bodies included)."""
    if rtype in (P.EXEC, P.QUERY):
        data = codec.encode_request(rtype, 0, stmt_id, params)
    else:
        data = codec.encode_request(rtype, 0, sql, params)
    body = bytearray(data[8:])
    if cut:
        del body[len(body) - min(cut, len(body)) :]
    if body and flip[0] < len(body):
        body[flip[0]] = flip[1]
    for features in FEATURES:
        fast = ConnectionGuard(features, access=access)
        full = ConnectionGuard(features, access=access)
        for g in (fast, full):
            g.prepared(1)
            g.prepared(2)
        if fast._fast(rtype, data[5], bytes(body)):
            assert full._check(rtype, data[5], bytes(body), "x") == FORWARD


def test_the_engine_probe_reaches_the_engine() -> None:
    """CLUSTER format 2 is the client's engine probe: the engine's answer tells 1.11 from
    1.15, so the guard passes it (and no other format outside the table)."""
    guard = ConnectionGuard(COWSQL_1_15, access=Access.READ)
    assert guard.check(P.CLUSTER, 0, (2).to_bytes(8, "little")) == FORWARD
    refused = guard.check(P.CLUSTER, 0, (3).to_bytes(8, "little"))
    assert isinstance(refused, Refusal) and refused.code == REFUSED


_WORDS = sorted(FORBIDDEN_NAMES) + ["pragma", "returning", "attach", "detach", "vacuum", "into"]
_PHRASES = [
    "vacuum into 'f'",
    "attach 'f' as a",
    "detach a",
    "pragma journal_mode=delete",
    "pragma main.page_size",
    "select * from pragma_table_info('t')",
    "insert into t values (1) returning *",
    "select load_extension('x')",
    "explain query plan vacuum into 'f'",
]
_NOISE = st.lists(
    st.one_of(
        st.sampled_from(["SELECT", "x", "main.", "=", "(1)", "'credit'", ";", "-- c\n"]),
        st.sampled_from(["\u212a", "\u0130", "\u017f"]),  # lower/upper to ASCII or to two chars
        SPACE,
    ),
    max_size=4,
).map("".join)


@pytest.mark.parametrize("trigger", _WORDS + _PHRASES)
@settings(max_examples=4)
@given(data=st.data(), returning_safe=st.booleans())
def test_the_keyword_screen_never_skips_a_refusal(
    trigger: str, data: st.DataObject, returning_safe: bool
) -> None:
    """check_sql skips the lexer for text without a refusal word: its answer is the lexer's
    (each refusal shape, in any case, bare or quoted, among harmless tokens)."""
    word = data.draw(_cased(trigger))
    if " " not in trigger:
        word = data.draw(QUOTES).format(word)
    sql = data.draw(_NOISE) + word + data.draw(_NOISE)
    assert check_sql(sql, returning_safe) == _lexed_check(sql, returning_safe)
