"""Wire codec: known-answer vectors from the protocol reference, refusals, the selector.

Every test runs against both implementations (the `impl` fixture); tests that compare the
two take `both`. Property and robustness tests are in test_codec_properties.py.
"""

from __future__ import annotations

import inspect
import os
import struct
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cowsqlpy import codec
from cowsqlpy import protocol as P
from cowsqlpy.errors import DataError, ProgrammingError, ProtocolError
from cowsqlpy.protocol import pure as py

ROOT = Path(__file__).resolve().parents[1]
API = (
    "handshake",
    "encode_request",
    "encode_params",
    "FrameReader",
    "decode_response",
    "decode_rows",
)


def load_impl(name: str) -> ModuleType:
    """The named codec; skip if the Cython one is not built, unless CI requires it."""
    try:
        return codec.load(name)
    except ImportError as exc:
        if os.environ.get("COWSQLPY_REQUIRE_CYTHON") == "1":
            pytest.fail(f"COWSQLPY_REQUIRE_CYTHON=1 but the {name} codec does not import: {exc}")
        pytest.skip(f"{name} codec not available (run setup.py build_ext --inplace): {exc}")


@pytest.fixture(scope="module", params=["python", "cython"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return load_impl(request.param)


@pytest.fixture(scope="module")
def both() -> tuple[ModuleType, ModuleType]:
    return load_impl("python"), load_impl("cython")


def u64(*values: int) -> bytes:
    return b"".join(struct.pack("<Q", v) for v in values)


def frame(rtype: int, body: bytes) -> bytes:
    return struct.pack("<IBBH", len(body) // 8, rtype, 0, 0) + body


# -- Known answers ---------------------------------------------------------------


def test_handshake_is_version_one(impl: ModuleType) -> None:
    assert impl.handshake() == bytes.fromhex("0100000000000000")


def test_leader_request(impl: ModuleType) -> None:
    # header: 1 word, type 0, schema 0, unused 0; body: one unused zero word
    assert impl.encode_request(P.LEADER) == bytes.fromhex("01000000 00 00 0000 0000000000000000")


def test_text_takes_nul_and_padding(impl: ModuleType) -> None:
    seven = impl.encode_request(P.DUMP, "abcdefg")
    eight = impl.encode_request(P.DUMP, "abcdefgh")
    assert seven == frame(P.DUMP, b"abcdefg\0")
    assert eight == frame(P.DUMP, b"abcdefgh" + bytes(8))


@pytest.mark.parametrize(
    ("n", "header_words"), [(1, 1), (7, 1), (8, 2), (15, 2), (16, 3), (255, 32)]
)
def test_param_tuple_header_padding(impl: ModuleType, n: int, header_words: int) -> None:
    encoded = impl.encode_params([None] * n)
    header = header_words * 8
    assert encoded[0] == n
    assert encoded[1 : 1 + n] == bytes([P.NULL]) * n
    assert encoded[1 + n : header] == bytes(header - 1 - n)
    assert len(encoded) == header + 8 * n


def test_param_value_encodings(impl: ModuleType) -> None:
    got = impl.encode_params([-2, 1.5, "hi", b"\x01\x02\x03", None, True, date(2006, 1, 2)])
    assert got == (
        bytes([7, P.INTEGER, P.FLOAT, P.TEXT, P.BLOB, P.NULL, P.BOOLEAN, P.ISO8601])
        + struct.pack("<q", -2)
        + struct.pack("<d", 1.5)
        + b"hi\0\0\0\0\0\0"
        + u64(3)
        + b"\x01\x02\x03\0\0\0\0\0"
        + u64(0)
        + u64(1)
        + b"2006-01-02\0\0\0\0\0\0"
    )


def test_no_params_means_no_tuple(impl: ModuleType) -> None:
    bare = frame(P.EXEC_SQL, u64(0) + b"select 1\0" + bytes(7))
    assert impl.encode_request(P.EXEC_SQL, 0, "select 1") == bare
    assert impl.encode_request(P.EXEC_SQL, 0, "select 1", []) == bare
    assert impl.encode_request(P.EXEC_SQL, 0, "select 1", None) == bare
    assert impl.encode_params(()) == b""


def test_exec_uses_u32_ids(impl: ModuleType) -> None:
    got = impl.encode_request(P.EXEC, 0, 3, [1])
    assert got == frame(
        P.EXEC, bytes.fromhex("00000000 03000000") + bytes([1, P.INTEGER]) + bytes(6) + u64(1)
    )


def test_open_defaults(impl: ModuleType) -> None:
    assert impl.encode_request(P.OPEN, "db") == frame(
        P.OPEN, b"db\0" + bytes(5) + u64(0) + b"volatile" + bytes(8)
    )
    assert impl.encode_request(P.OPEN, "db", 0, "volatile") == impl.encode_request(P.OPEN, "db")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2006, 1, 2, 15, 4, 5), "2006-01-02 15:04:05"),
        (datetime(2006, 1, 2, 15, 4, 5, 120000), "2006-01-02 15:04:05.12"),
        (
            datetime(2006, 1, 2, 15, 4, 5, 1, tzinfo=timezone(timedelta(hours=-7))),
            "2006-01-02 15:04:05.000001-07:00",
        ),
        (datetime(2006, 1, 2, 15, 4, 5, tzinfo=UTC), "2006-01-02 15:04:05+00:00"),
        (
            datetime(2006, 1, 2, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "2006-01-02 00:00:00+05:30",
        ),
        (date(987, 6, 5), "0987-06-05"),
    ],
)
def test_datetime_params_as_go_dqlite_writes_them(impl: ModuleType, value: date, text: str) -> None:
    raw = text.encode()
    assert impl.encode_params([value]) == bytes([1, P.ISO8601]) + bytes(6) + raw + bytes(
        8 - len(raw) % 8
    )


def test_rows_layout_with_nibble_types(impl: ModuleType) -> None:
    body = (
        u64(3)
        + b"a\0\0\0\0\0\0\0b\0\0\0\0\0\0\0c\0\0\0\0\0\0\0"
        # row 1: INTEGER, TEXT, NULL -> byte 0 = 0x31 (col 0 low nibble, col 1 high), byte 1 = 0x05
        + bytes([0x31, 0x05])
        + bytes(6)
        + struct.pack("<q", -7)
        + b"hi\0\0\0\0\0\0"
        + u64(0)
        # row 2: FLOAT, BLOB, BOOLEAN
        + bytes([0x42, 0x0B])
        + bytes(6)
        + struct.pack("<d", 0.25)
        + u64(2)
        + b"zz\0\0\0\0\0\0"
        + u64(1)
        + u64(P.DONE)
    )
    assert impl.decode_rows(body) == (
        ["a", "b", "c"],
        [(-7, "hi", None), (0.25, b"zz", True)],
        True,
    )
    assert impl.decode_response(P.ROWS, body) == impl.decode_rows(body)


def test_row_header_spans_words_past_16_columns(impl: ModuleType) -> None:
    columns = [f"c{i}" for i in range(17)]
    body = py.encode_rows(columns, [tuple(range(17))], False)
    header_at = 8 + 8 * 17
    assert body[header_at : header_at + 16] == bytes([0x11] * 8 + [0x01] + [0] * 7)
    assert impl.decode_rows(body) == (columns, [tuple(range(17))], False)


def test_zero_row_part_batch(impl: ModuleType) -> None:
    assert impl.decode_rows(u64(1) + b"x\0" + bytes(6) + u64(P.PART)) == (["x"], [], False)


def test_typed_values_and_engine_quirks(impl: ModuleType) -> None:
    rows = [
        (0, "", False),  # NULL in DATETIME columns comes as ISO8601 "", in BOOLEAN ones as 0
        (1136214245, "2006-01-02T15:04:05.123456789Z", True),
        (-1, "2006-01-02", True),
        (2**62, "not a date", True),
        (0, "2006-01-02 15:04:05-07:00", False),
        (0, "2006-13-02 15:04", False),
    ]
    body = py.encode_rows(["u", "iso", "b"], rows, True, types=[P.UNIXTIME, P.ISO8601, P.BOOLEAN])
    _, got, _ = impl.decode_rows(body)
    assert got == [
        (datetime(1970, 1, 1, tzinfo=UTC), None, False),
        (
            datetime(2006, 1, 2, 15, 4, 5, tzinfo=UTC),
            datetime(2006, 1, 2, 15, 4, 5, 123456, tzinfo=UTC),
            True,
        ),
        (datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2006, 1, 2), True),
        (2**62, "not a date", True),  # beyond datetime's range: the raw value
        (datetime(1970, 1, 1, tzinfo=UTC), datetime(2006, 1, 2, 22, 4, 5, tzinfo=UTC), False),
        (datetime(1970, 1, 1, tzinfo=UTC), "2006-13-02 15:04", False),
    ]
    assert got[4][1].utcoffset() == timedelta(hours=-7)
    assert got[1][0].tzinfo is not None


@pytest.mark.parametrize(
    ("rtype", "body", "expected"),
    [
        (P.FAILURE, u64(10250) + b"not leader\0" + bytes(5), P.Failure(10250, "not leader")),
        (P.SERVER, u64(7) + b"127.0.0.1:9001\0\0", (7, "127.0.0.1:9001")),
        (P.SERVER, u64(0) + bytes(8), (0, "")),  # no known leader
        (P.WELCOME, u64(15000), 15000),
        (P.DB, bytes(8), 0),
        (P.STMT, bytes.fromhex("00000000 02000000") + u64(3), (0, 2, 3)),
        (P.RESULT, u64(5, 1), (5, 1)),
        (P.EMPTY, bytes(8), None),
        (
            P.FILES,
            u64(2) + b"db\0" + bytes(5) + u64(8) + b"12345678" + b"db-wal\0\0" + u64(0),
            [("db", b"12345678"), ("db-wal", b"")],
        ),
        (P.METADATA, u64(3, 42), (3, 42)),
    ],
)
def test_decode_response_known_answers(
    impl: ModuleType, rtype: int, body: bytes, expected: Any
) -> None:
    assert impl.decode_response(rtype, body) == expected
    assert impl.decode_response(rtype, memoryview(body)) == expected


def test_servers_format_0_and_1(impl: ModuleType) -> None:
    v1 = (
        u64(2)
        + u64(1)
        + b"a:1\0"
        + bytes(4)
        + u64(P.VOTER)
        + u64(2)
        + b"b:2\0"
        + bytes(4)
        + u64(P.SPARE)
    )
    v0 = u64(1) + u64(1) + b"a:1\0" + bytes(4)
    assert impl.decode_response(P.SERVERS, v1) == [P.NodeInfo(1, "a:1", 0), P.NodeInfo(2, "b:2", 2)]
    assert impl.decode_response(P.SERVERS, v0, format=0) == [P.NodeInfo(1, "a:1", None)]
    with pytest.raises(ProtocolError):
        impl.decode_response(P.SERVERS, v1, format=0)  # role words left over


# -- Refusals --------------------------------------------------------------------

BAD_REQUESTS: list[tuple[tuple[Any, ...], type[Exception], str]] = [
    ((P.HEARTBEAT, 0), ProgrammingError, "HEARTBEAT"),
    ((P.CONNECT, 1, "a:1"), ProgrammingError, "CONNECT"),
    ((20,), ProgrammingError, "unknown request type 20"),
    ((-1,), ProgrammingError, "unknown request type"),
    (("LEADER",), ProgrammingError, "unknown request type"),
    ((True,), ProgrammingError, "unknown request type"),
    ((P.DESCRIBE, 1), ProgrammingError, "format != 0 aborts the engine in 1.11.1"),
    ((P.ASSIGN, 2, 3), ProgrammingError, "roles are"),
    ((P.CLUSTER, 2), ProgrammingError, "CLUSTER formats"),
    ((P.EXEC_SQL, 0, "x", [None] * 256), ProgrammingError, "at most 255"),
    ((P.EXEC_SQL, 0, "x", [2**63]), DataError, "signed 64-bit"),
    ((P.EXEC_SQL, 0, "x", [-(2**63) - 1]), DataError, "signed 64-bit"),
    ((P.EXEC_SQL, 0, "x", ["a\0b"]), DataError, "params[0] contains a NUL"),
    ((P.EXEC_SQL, 0, "x", [1, "\udc80"]), DataError, "params[1] is not encodable"),
    (
        (P.EXEC_SQL, 0, "x", [1, 2, object()]),
        ProgrammingError,
        "params[2]: unsupported parameter type object",
    ),
    ((P.EXEC_SQL, 0, "x", [{1: 2}]), ProgrammingError, "unsupported parameter type dict"),
    ((P.EXEC_SQL, 0, "x", "abc"), ProgrammingError, "params must be a sequence"),
    ((P.EXEC_SQL, 0, "x", {"a": 1}), ProgrammingError, "params must be a sequence"),
    (
        (P.EXEC_SQL, 0, "x", [datetime(2000, 1, 1, tzinfo=timezone(timedelta(seconds=30)))]),
        DataError,
        "whole number of minutes",
    ),
    ((P.EXEC_SQL, 0, "sel\0ect"), DataError, "EXEC_SQL sql contains a NUL"),
    ((P.PREPARE, 0, "\ud800"), DataError, "PREPARE sql is not encodable"),
    ((P.ADD, 2, b"a:1"), ProgrammingError, "ADD address must be str"),
    ((P.CLIENT, -1), ProgrammingError, "CLIENT id must be an int in [0, 2**64)"),
    ((P.CLIENT, 2**64), ProgrammingError, "2**64"),
    ((P.CLIENT, 1.0), ProgrammingError, "CLIENT id"),
    ((P.CLIENT, True), ProgrammingError, "CLIENT id"),
    ((P.EXEC, 2**32, 0), ProgrammingError, "EXEC db_id must be an int in [0, 2**32)"),
    ((P.FINALIZE, 0, -1), ProgrammingError, "FINALIZE stmt_id"),
    ((P.EXEC,), ProgrammingError, "EXEC takes (db_id, stmt_id, params=())"),
    ((P.REMOVE, 1, 2), ProgrammingError, "REMOVE takes (id)"),
]


@pytest.mark.parametrize(
    ("args", "exc", "match"), BAD_REQUESTS, ids=[repr(a)[:60] for a, _, _ in BAD_REQUESTS]
)
def test_bad_requests_refused_alike(
    both: tuple[ModuleType, ModuleType], args: tuple[Any, ...], exc: type[Exception], match: str
) -> None:
    messages = []
    for impl in both:
        with pytest.raises(exc) as info:
            impl.encode_request(*args)
        assert type(info.value) is exc
        assert match in str(info.value)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_never_send_codes_are_not_encodable() -> None:
    assert not set(P.NEVER_SEND) & set(P.REQUESTS)
    assert set(P.REQUESTS) | set(P.NEVER_SEND) == set(range(20))


def test_255_params_accepted(impl: ModuleType) -> None:
    encoded = impl.encode_request(P.EXEC_SQL, 0, "x", list(range(255)))
    assert py.decode_request(encoded)[1][2] == tuple(range(255))


def test_bool_is_boolean_not_integer(impl: ModuleType) -> None:
    assert impl.encode_params([True, 1, False])[1:4] == bytes([P.BOOLEAN, P.INTEGER, P.BOOLEAN])


def test_bytes_like_params(impl: ModuleType) -> None:
    want = impl.encode_params([b"abc"])
    assert impl.encode_params([bytearray(b"abc")]) == want
    assert impl.encode_params([memoryview(b"xabc")[1:]]) == want


def test_decode_rejects_unknown_types(impl: ModuleType) -> None:
    with pytest.raises(ProtocolError):
        impl.decode_response(11, u64(0))
    with pytest.raises(ProtocolError):
        impl.decode_response(-1, u64(0))
    for code in (0, 6, 7, 8, 12, 15):
        body = u64(1) + b"x\0" + bytes(6) + bytes([code]) + bytes(7) + u64(0) + u64(P.DONE)
        with pytest.raises(ProtocolError):
            impl.decode_rows(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        u64(1),  # no column name
        u64(1) + b"x\0" + bytes(6),  # no end marker
        u64(1) + b"x\0" + bytes(6) + u64(P.DONE) + bytes(8),  # bytes after DONE
        u64(2**60) + u64(P.DONE),  # absurd column count: refused before allocating
        u64(0) + u64(1) + u64(P.DONE),  # a row with no columns would never end
        u64(1)
        + b"x\0"
        + bytes(6)
        + bytes([P.BLOB])
        + bytes(7)
        + u64(2**63)
        + u64(P.DONE),  # blob past the end
        u64(1)
        + b"x\0"
        + bytes(6)
        + bytes([P.TEXT])
        + bytes(7)
        + b"\xff\xfe\0"
        + bytes(5)
        + u64(P.DONE),  # bad UTF-8
        u64(1) + b"x\0" + bytes(6) + bytes([P.TEXT]) + bytes(7) + b"abcdefgh",  # text without NUL
        u64(1) + b"x" * 7,  # column name without NUL
    ],
)
def test_malformed_rows_raise_protocol_error(impl: ModuleType, body: bytes) -> None:
    with pytest.raises(ProtocolError):
        impl.decode_rows(body)


def test_decode_response_rejects_trailing_and_short_bodies(impl: ModuleType) -> None:
    with pytest.raises(ProtocolError):
        impl.decode_response(P.RESULT, u64(1))
    with pytest.raises(ProtocolError):
        impl.decode_response(P.RESULT, u64(1, 2, 3))
    with pytest.raises(ProtocolError):
        impl.decode_response(P.FILES, u64(2**62))
    with pytest.raises(ProtocolError):
        impl.decode_response(P.FILES, u64(1) + b"db\0" + bytes(5) + u64(2**40))


# -- Framing ---------------------------------------------------------------------


def test_frame_reader_reassembles_byte_by_byte(impl: ModuleType) -> None:
    stream = (
        py.encode_response(P.RESULT, (1, 2))
        + py.encode_response(P.EMPTY, None)
        + frame(P.WELCOME, u64(15000))
    )
    reader = impl.FrameReader()
    frames = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        got = reader.next_frame()
        if got is not None:
            frames.append(got)
    assert frames == [(P.RESULT, u64(1, 2)), (P.EMPTY, u64(0)), (P.WELCOME, u64(15000))]
    assert reader.next_frame() is None
    assert reader.buffered == 0


def test_frame_reader_many_frames_in_one_feed(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    reader.feed(bytearray(frame(P.RESULT, u64(3, 4)) * 1000) + memoryview(frame(P.DB, bytes(8))))
    frames = iter(reader.next_frame, None)
    assert [next(frames) for _ in range(1000)] == [(P.RESULT, u64(3, 4))] * 1000
    assert next(frames) == (P.DB, bytes(8))
    assert reader.next_frame() is None


def test_frame_reader_big_frame_in_64k_chunks(impl: ModuleType) -> None:
    body = bytes(range(256)) * (10 * 4096)  # 10 MiB
    data = frame(P.FILES, body)
    reader = impl.FrameReader()
    for start in range(0, len(data), 65536):
        assert reader.next_frame() is None
        reader.feed(memoryview(data)[start : start + 65536])
    rtype, got = reader.next_frame()
    assert rtype == P.FILES and got == body


def test_frame_reader_refuses_oversized_frame_before_buffering_it(impl: ModuleType) -> None:
    reader = impl.FrameReader(max_frame=1024)
    reader.feed(frame(P.RESULT, bytes(1024)))
    assert reader.next_frame() == (P.RESULT, bytes(1024))
    reader.feed(struct.pack("<IBBH", 129, P.ROWS, 0, 0))
    with pytest.raises(ProtocolError, match="exceeds max_frame"):
        reader.next_frame()
    huge = impl.FrameReader()
    huge.feed(struct.pack("<IBBH", 0xFFFFFFFF, P.ROWS, 0, 0))
    with pytest.raises(ProtocolError):
        huge.next_frame()


# -- API and selector ------------------------------------------------------------


def test_same_api_and_signatures(both: tuple[ModuleType, ModuleType]) -> None:
    pure, fast = both

    def shape(obj: Any) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]

    for name in API:
        if name != "FrameReader":  # a cdef class has no introspectable __init__
            assert shape(getattr(pure, name)) == shape(getattr(fast, name)), name
    assert fast.FrameReader(max_frame=8).next_frame() is None
    for name in ("feed", "next_frame"):
        assert shape(getattr(pure.FrameReader, name)) == shape(getattr(fast.FrameReader, name))


def test_codec_reexports_selected_implementation() -> None:
    assert codec.IMPLEMENTATION in ("cython", "python")
    chosen = codec.load(codec.IMPLEMENTATION)
    for name in API:
        assert getattr(codec, name) is getattr(chosen, name)


def _selector(env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COWSQLPY_")}
    code = (
        "import logging, sys; logging.basicConfig(stream=sys.stderr, format='%(levelname)s %(message)s')\n"
        f"{prelude}\nfrom cowsqlpy import codec; print(codec.IMPLEMENTATION)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_selector_purepython_env() -> None:
    proc = _selector({"COWSQLPY_PUREPYTHON": "1", "COWSQLPY_REQUIRE_CYTHON": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "python"
    assert "WARNING" not in proc.stderr  # asked for, so no warning


def test_selector_default_is_cython_when_built() -> None:
    load_impl("cython")
    proc = _selector({})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cython"


BLOCK_CYTHON = "sys.modules['cowsqlpy._ccodec'] = None  # as if the extension were not built"


def test_selector_falls_back_loudly() -> None:
    proc = _selector({}, BLOCK_CYTHON)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "python"
    assert "WARNING Cython codec unavailable" in proc.stderr


def test_selector_require_cython_fails_instead_of_falling_back() -> None:
    proc = _selector({"COWSQLPY_REQUIRE_CYTHON": "1"}, BLOCK_CYTHON)
    assert proc.returncode != 0
    assert "ImportError: COWSQLPY_REQUIRE_CYTHON=1" in proc.stderr


def test_str_and_int_subclasses_encode_as_their_base(impl: ModuleType) -> None:
    """An enum.StrEnum member (or SQLAlchemy's quoted_name) is text, an IntEnum an integer,
    in both codecs alike (the Cython one once refused str subclasses)."""
    import enum

    class Color(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    assert impl.encode_params([Color.RED, Level.HIGH]) == impl.encode_params(["red", 3])
    frame = impl.encode_request(P.EXEC_SQL, 0, Color.RED, [])
    assert frame == impl.encode_request(P.EXEC_SQL, 0, "red", [])
