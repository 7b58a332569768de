"""Wire codec properties (hypothesis): the two implementations agree byte for byte, decode
each other's output, and never raise anything but ProtocolError on bad input.

Strategies are generated from the schema table in `cowsqlpy.protocol`, so every request and
response layout is covered. The server-side helpers exist only in the pure module, so the
cross checks are: Cython encoder -> pure decode_request, pure encode_response/encode_rows ->
both decoders.
"""

from __future__ import annotations

import struct
from datetime import date, datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cowsqlpy import protocol as P
from cowsqlpy.errors import ProtocolError
from cowsqlpy.protocol import pure as py
from tests.test_codec import load_impl

# No deadline: tests must not depend on timing; bodies of a few KiB are slow to generate.
CODEC = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def both() -> tuple[ModuleType, ModuleType]:
    return load_impl("python"), load_impl("cython")


# -- Strategies from the table -----------------------------------------------------

texts = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=40)
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
datetimes = st.one_of(st.datetimes(), st.datetimes(timezones=offsets))
PARAM_VALUES: dict[int, st.SearchStrategy[Any]] = {
    P.INTEGER: st.integers(-(2**63), 2**63 - 1),
    P.FLOAT: st.floats(),
    P.TEXT: texts,
    P.BLOB: st.one_of(st.binary(max_size=40), st.binary(max_size=40).map(bytearray)),
    P.NULL: st.none(),
    P.BOOLEAN: st.booleans(),
    P.ISO8601: st.one_of(datetimes, st.dates()),
}
param_values = st.one_of(*PARAM_VALUES.values())
params = st.one_of(
    st.none(),
    st.lists(param_values, max_size=P.MAX_PARAMS // 8),
    st.lists(st.none(), min_size=200, max_size=P.MAX_PARAMS),
)
KIND_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "u64": st.integers(0, 2**64 - 1),
    "u32": st.integers(0, 2**32 - 1),
    "text": texts,
    "params": params,
}


def field_values(field: P.Field) -> st.SearchStrategy[Any]:
    return st.sampled_from(field.allowed) if field.allowed is not None else KIND_VALUES[field.kind]


def request_args(layout: P.Layout) -> st.SearchStrategy[tuple[Any, ...]]:
    """All arguments, or the required ones only (defaults filled in by the codec)."""
    full = st.tuples(*(field_values(f) for f in layout.fields))
    required = [f for f in layout.fields if f.default is P.REQUIRED]
    return st.one_of(full, full.map(lambda args: args[: len(required)]))


requests = st.sampled_from(sorted(P.REQUESTS)).flatmap(
    lambda code: st.tuples(st.just(code), request_args(P.REQUESTS[code]))
)

# Row values are sent with an explicit type code per column, as the server does.
ROW_VALUES: dict[int, st.SearchStrategy[Any]] = {
    P.INTEGER: PARAM_VALUES[P.INTEGER],
    P.FLOAT: st.floats(),
    P.TEXT: texts,
    P.BLOB: st.binary(max_size=40),
    P.NULL: st.none(),
    P.BOOLEAN: st.booleans(),
    P.UNIXTIME: st.integers(-(2**63), 2**63 - 1),
    P.ISO8601: st.one_of(datetimes, texts),
}


@st.composite
def row_sets(
    draw: st.DrawFn, max_cols: int = 40, max_rows: int = 12
) -> tuple[list[str], list[tuple[Any, ...]], bool, list[int]]:
    ncols = draw(st.integers(1, max_cols))
    columns = draw(st.lists(texts, min_size=ncols, max_size=ncols))
    types = draw(st.lists(st.sampled_from(sorted(ROW_VALUES)), min_size=ncols, max_size=ncols))
    rows = draw(st.lists(st.tuples(*(ROW_VALUES[t] for t in types)), max_size=max_rows))
    return columns, rows, draw(st.booleans()), types


# Values whose inferred wire type decodes back to an equal value.
simple_values = st.one_of(
    st.none(), st.booleans(), PARAM_VALUES[P.INTEGER], st.floats(), texts, st.binary(max_size=20)
)
simple_rows = st.integers(1, 20).flatmap(
    lambda n: st.tuples(
        st.lists(texts, min_size=n, max_size=n),
        st.lists(st.tuples(*[simple_values] * n), max_size=8),
        st.booleans(),
    )
)


def response_value(layout: P.Layout, fmt: int) -> st.SearchStrategy[Any]:
    node = st.tuples(KIND_VALUES["u64"], texts, st.sampled_from([0, 1, 2]) if fmt else st.none())
    kinds: dict[str, st.SearchStrategy[Any]] = {
        **KIND_VALUES,
        "nodes": st.lists(node.map(lambda n: P.NodeInfo(*n)), max_size=5),
        "files": st.lists(st.tuples(texts, st.binary(max_size=64)), max_size=3),
        "rows": simple_rows,
    }
    fields = [kinds[f.kind] for f in layout.fields if f.kind != "pad32"]
    if layout.result == "none":
        return st.none()
    if layout.result == "value":
        return fields[0]
    if layout.result == "failure":
        return st.tuples(*fields).map(lambda v: P.Failure(*v))
    return st.tuples(*fields)


responses = st.sampled_from(sorted(P.RESPONSES)).flatmap(
    lambda code: st.sampled_from([0, 1]).flatmap(
        lambda fmt: st.tuples(st.just(code), response_value(P.RESPONSES[code], fmt), st.just(fmt))
    )
)


# -- Comparison helpers ----------------------------------------------------------


def norm(value: Any) -> Any:
    """Compare floats by bits (NaN, -0.0) and aware datetimes with their offset."""
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, datetime):
        return ("datetime", value.replace(tzinfo=None), value.utcoffset())
    if isinstance(value, tuple | list):
        return type(value).__name__, [norm(v) for v in value]
    return value


def expected_param(value: Any) -> Any:
    """What decode_request gives back for a param value."""
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return value


def expected_row_value(code: int, value: Any) -> Any:
    if code == P.UNIXTIME:
        return P.unixtime_value(value)
    if code == P.ISO8601:
        return P.iso8601_value(value if isinstance(value, str) else P.format_datetime(value))
    return value


def outcome(fn: Any, *args: Any) -> Any:
    """Result or exception type; anything but ProtocolError fails the test."""
    try:
        return ("ok", norm(fn(*args)))
    except ProtocolError:
        return ("ProtocolError",)


# -- Properties --------------------------------------------------------------------


@CODEC
@given(requests)
def test_requests_identical_and_decodable(
    both: tuple[ModuleType, ModuleType], request: tuple[int, tuple[Any, ...]]
) -> None:
    pure, fast = both
    code, args = request
    encoded = fast.encode_request(code, *args)
    assert pure.encode_request(code, *args) == encoded
    rtype, decoded = py.decode_request(encoded)
    assert rtype == code
    _, bound = P.bind_request(code, args)
    want = tuple(
        tuple(expected_param(v) for v in value or ()) if f.kind == "params" else value
        for f, value in zip(P.REQUESTS[code].fields, bound, strict=True)
    )
    assert norm(decoded) == norm(want)
    words, _, schema, unused = struct.unpack_from("<IBBH", encoded)
    assert (words * 8 + 8, schema, unused) == (len(encoded), 0, 0)


@CODEC
@given(st.lists(param_values, max_size=P.MAX_PARAMS))
def test_params_identical(both: tuple[ModuleType, ModuleType], values: list[Any]) -> None:
    pure, fast = both
    assert (
        pure.encode_params(values)
        == fast.encode_params(values)
        == fast.encode_params(tuple(values))
    )


@CODEC
@given(row_sets())
def test_rows_decode_alike(
    both: tuple[ModuleType, ModuleType], rowset: tuple[list[str], list[Any], bool, list[int]]
) -> None:
    columns, rows, done, types = rowset
    body = py.encode_rows(columns, rows, done, types)
    want = (
        columns,
        [tuple(expected_row_value(t, v) for t, v in zip(types, row, strict=True)) for row in rows],
        done,
    )
    for impl in both:
        assert norm(impl.decode_rows(body)) == norm(want)
        assert norm(impl.decode_response(P.ROWS, bytearray(body))) == norm(want)


@CODEC
@given(
    st.integers(1, 30).flatmap(
        lambda n: st.lists(st.lists(param_values, min_size=n, max_size=n), min_size=1, max_size=5)
    )
)
def test_inferred_row_types_round_trip(
    both: tuple[ModuleType, ModuleType], rows: list[list[Any]]
) -> None:
    width = len(rows[0])
    body = py.encode_rows([f"c{i}" for i in range(width)], rows, True)
    want = [tuple(expected_param(v) for v in row) for row in rows]
    for impl in both:
        assert norm(impl.decode_rows(body)[1]) == norm(want)


@CODEC
@given(responses)
def test_responses_round_trip(
    both: tuple[ModuleType, ModuleType], response: tuple[int, Any, int]
) -> None:
    code, value, fmt = response
    data = py.encode_response(code, value, format=fmt)
    for impl in both:
        reader = impl.FrameReader()
        reader.feed(data)
        rtype, body = reader.next_frame()
        assert rtype == code
        assert norm(impl.decode_response(rtype, body, fmt)) == norm(value)


def test_every_layout_is_word_aligned() -> None:
    for layout in [*P.REQUESTS.values(), *P.RESPONSES.values()]:
        assert all(f.kind in P.KINDS for f in layout.fields)
        assert layout.result in P.RESULT_FORMS
        fixed32 = sum(1 for f in layout.fields if f.kind in ("u32", "pad32"))
        assert fixed32 % 2 == 0, layout.name
        params = [i for i, f in enumerate(layout.fields) if f.kind == "params"]
        assert params in ([], [len(layout.fields) - 1]), layout.name


# -- Robustness: bad bytes raise ProtocolError, identically, and never hang ----------

valid_bodies = st.one_of(
    row_sets(max_cols=6, max_rows=4).map(lambda r: (P.ROWS, py.encode_rows(*r), 1)),
    responses.map(lambda r: (r[0], py.encode_response(r[0], r[1], format=r[2])[8:], r[2])),
)


@CODEC
@given(st.integers(-1, 12), st.binary(max_size=200), st.sampled_from([0, 1]))
def test_random_bodies(
    both: tuple[ModuleType, ModuleType], rtype: int, body: bytes, fmt: int
) -> None:
    pure, fast = both
    assert outcome(pure.decode_response, rtype, body, fmt) == outcome(
        fast.decode_response, rtype, body, fmt
    )
    assert outcome(pure.decode_rows, body) == outcome(fast.decode_rows, body)


@CODEC
@given(valid_bodies, st.data())
def test_every_truncation_and_mutation(
    both: tuple[ModuleType, ModuleType], valid: tuple[int, bytes, int], data: st.DataObject
) -> None:
    pure, fast = both
    rtype, body, fmt = valid
    for cut in range(len(body)):
        short = body[:cut]
        assert outcome(pure.decode_response, rtype, short, fmt) == outcome(
            fast.decode_response, rtype, short, fmt
        )
    assume(body)
    at = data.draw(st.integers(0, len(body) - 1))
    mutated = body[:at] + bytes([data.draw(st.integers(0, 255))]) + body[at + 1 :]
    assert outcome(pure.decode_response, rtype, mutated, fmt) == outcome(
        fast.decode_response, rtype, mutated, fmt
    )


@CODEC
@given(
    st.binary(max_size=300),
    st.lists(st.integers(1, 64), min_size=1, max_size=20),
    st.integers(0, 256),
)
def test_frame_reader_on_random_streams(
    both: tuple[ModuleType, ModuleType], stream: bytes, chunks: list[int], max_frame: int
) -> None:
    results = []
    for impl in both:
        reader = impl.FrameReader(max_frame=max_frame)
        frames: list[Any] = []
        pos = 0
        for size in chunks * (len(stream) // sum(chunks) + 1):
            reader.feed(stream[pos : pos + size])
            pos += size
            try:
                while (got := reader.next_frame()) is not None:
                    frames.append(got)
                    assert len(got[1]) <= max_frame
            except ProtocolError:
                frames.append("ProtocolError")
                break
        results.append((frames, reader.buffered))
    assert results[0] == results[1]


@CODEC
@given(valid_bodies)
def test_frames_split_anywhere(
    both: tuple[ModuleType, ModuleType], valid: tuple[int, bytes, int]
) -> None:
    rtype, body, _ = valid
    data = struct.pack("<IBBH", len(body) // 8, rtype, 0, 0) + body
    for impl in both:
        for cut in range(0, len(data) + 1, max(1, len(data) // 16)):
            reader = impl.FrameReader()
            reader.feed(data[:cut])
            first = reader.next_frame()
            reader.feed(data[cut:])
            assert (first or reader.next_frame()) == (rtype, body)
            assert reader.buffered == 0
