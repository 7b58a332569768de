"""Pure-Python wire codec: the twin of the Cython `cowsqlpy._ccodec`.

Same API and behaviour as the Cython module (tests check both byte for byte); both
interpret the layouts in `cowsqlpy.protocol`. Import through `cowsqlpy.codec`, which
picks the implementation.

Besides the client API (`handshake`, `encode_request`, `encode_params`, `FrameReader`,
`decode_response`, `decode_rows`) this module alone has the server-side mirror used by
tests and fake servers: `encode_response`, `encode_rows`, `decode_request`. They are not
hot paths, so they exist only here; the tests cross-check them against the Cython module
(pure encoder -> Cython decoder and Cython encoder -> pure decoder).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import date
from typing import Any

from cowsqlpy import protocol as P
from cowsqlpy.errors import ProgrammingError, ProtocolError

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_U32 = struct.Struct("<I")
_HEADER = struct.Struct("<IBBH")
_U32_MAX = 1 << 32
_U64_MAX = 1 << 64
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_ZEROS = bytes(8)
_NUL = b"\0"
_BYTES_LIKE = (bytes, bytearray, memoryview)


def _pad(n: int) -> bytes:
    """Zero bytes that bring a length of n up to a whole word."""
    return _ZEROS[: -n % 8]


def _as_bytes(body: Any) -> bytes:
    if type(body) is bytes:
        return body
    if isinstance(body, _BYTES_LIKE):
        return bytes(body)
    raise TypeError(f"expected a bytes-like body, not {type(body).__name__}")


# -- Encoding ------------------------------------------------------------------


def handshake() -> bytes:
    """The 8-byte word a client sends first: the protocol version (1)."""
    return _U64.pack(P.PROTOCOL_VERSION)


def _text(value: object, what: str) -> bytes:
    """UTF-8 text, NUL, zero padding to a word."""
    if not isinstance(value, str):
        raise P.text_type_error(what, value)
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise P.utf8_error(what) from None
    if _NUL in data:
        raise P.nul_error(what)
    return data + _ZEROS[: 8 - len(data) % 8]


def _unsigned(value: object, bits: int, limit: int, what: str) -> int:
    if type(value) is bool or not isinstance(value, int) or not 0 <= value < limit:
        raise P.unsigned_error(what, bits, value)
    return value


def _infer_type(value: object, what: str) -> int:
    """The wire type a Python value is sent as. bool before int: bool is an int."""
    if value is None:
        return P.NULL
    if value is True or value is False:
        return P.BOOLEAN
    if isinstance(value, int):
        return P.INTEGER
    if isinstance(value, float):
        return P.FLOAT
    if isinstance(value, str):
        return P.TEXT
    if isinstance(value, _BYTES_LIKE):
        return P.BLOB
    if isinstance(value, date):  # datetime is a date too
        return P.ISO8601
    raise P.unsupported_type_error(what, value)


def _encode_value(code: int, value: Any, what: str) -> bytes:
    """One value in the encoding of type `code` (§5.3)."""
    if code == P.INTEGER:
        if not _I64_MIN <= value <= _I64_MAX:
            raise P.int_range_error(what, value)
        return _I64.pack(value)
    if code == P.TEXT:
        return _text(value, what)
    if code == P.FLOAT:
        return _F64.pack(value)
    if code == P.NULL:
        return _ZEROS
    if code == P.BLOB:
        data = bytes(value)
        return _U64.pack(len(data)) + data + _pad(len(data))
    if code == P.BOOLEAN:
        return _U64.pack(1 if value else 0)
    if code == P.ISO8601:
        # None/"" here is only reachable from encode_rows (the engine's typed NULL).
        text = (
            "" if value is None else value if isinstance(value, str) else P.format_datetime(value)
        )
        return _text(text, what)
    if code == P.UNIXTIME:
        return _I64.pack(P.unixtime_seconds(value))
    raise ProgrammingError(f"{what}: unknown value type code {code}")


def encode_params(params: Sequence[Any] | None) -> bytes:
    """The parameter tuple (§5.1) alone; b"" for None or no params (no tuple is sent).

    :raises ProgrammingError: more than 255 params, an unsupported type, not a sequence.
    :raises DataError: an int outside signed 64 bits, text with NUL or a lone surrogate.
    """
    if params is None:
        return b""
    if type(params) is not list and type(params) is not tuple:
        params = P.param_sequence(params)
    n = len(params)
    if n == 0:
        return b""
    if n > P.MAX_PARAMS:
        raise P.too_many_params_error(n)
    types = bytearray([n])
    values = []
    for i, value in enumerate(params):
        what = f"params[{i}]"
        code = _infer_type(value, what)
        types.append(code)
        values.append(_encode_value(code, value, what))
    types += _pad(len(types))
    return bytes(types) + b"".join(values)


def _frame(rtype: int, body: bytes) -> bytes:
    if len(body) >= _U32_MAX * 8:
        raise P.too_big_error(len(body))
    return _HEADER.pack(len(body) >> 3, rtype, 0, 0) + body


def encode_request(rtype: int, *args: Any) -> bytes:
    """One request frame (header + body) laid out per `protocol.REQUESTS`.

    :raises ProgrammingError: unknown/forbidden request type, wrong arguments,
        out-of-range integers, non-str text.
    :raises DataError: text or params that cannot be encoded (NUL, surrogates, big ints).
    """
    layout, values = P.bind_request(rtype, args)
    parts = []
    for field, value in zip(layout.fields, values, strict=True):
        kind = field.kind
        if kind == "u64":
            parts.append(_U64.pack(_unsigned(value, 64, _U64_MAX, f"{layout.name} {field.name}")))
        elif kind == "u32":
            parts.append(_U32.pack(_unsigned(value, 32, _U32_MAX, f"{layout.name} {field.name}")))
        elif kind == "text":
            parts.append(_text(value, f"{layout.name} {field.name}"))
        else:  # "params", always last
            parts.append(encode_params(value))
    return _frame(layout.code, b"".join(parts))


# -- Framing -------------------------------------------------------------------


class FrameReader:
    """Splits a byte stream from a server into (response type, body) frames.

    Bytes are appended to one bytearray and whole frames are cut from its front;
    CPython deletes a bytearray prefix in O(1), so a large frame arriving in many small
    chunks costs linear time.
    """

    def __init__(self, max_frame: int = 1 << 30) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes received from the socket."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet part of a returned frame (non-zero at EOF = cut frame)."""
        return len(self._buf)

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next whole frame as (type, body), or None until more bytes arrive.

        :raises ProtocolError: the header announces a body larger than max_frame.
        """
        buf = self._buf
        if len(buf) < P.HEADER_SIZE:
            return None
        words, rtype, _, _ = _HEADER.unpack_from(buf)
        size = words * 8
        if size > self._max:
            raise ProtocolError(f"frame of {size} bytes exceeds max_frame={self._max}")
        end = P.HEADER_SIZE + size
        if len(buf) < end:
            return None
        with memoryview(buf) as view:
            body = view[P.HEADER_SIZE : end].tobytes()
        del buf[:end]
        return rtype, body


# -- Decoding ------------------------------------------------------------------
# Fixed-width reads rely on struct.unpack_from raising struct.error past the end of the
# body (converted to ProtocolError at the entry points); variable lengths are checked
# against the body before any slice or allocation.


def _read_text(body: bytes, pos: int) -> tuple[str, int]:
    end = body.find(_NUL, pos)
    if end < 0:
        raise P.truncated("text (no NUL)")
    nxt = (end + 8) & ~7
    if nxt > len(body):
        raise P.truncated("text padding")
    return body[pos:end].decode("utf-8"), nxt


def _read_blob(body: bytes, pos: int) -> tuple[bytes, int]:
    (size,) = _U64.unpack_from(body, pos)
    pos += 8
    if size > len(body) - pos:
        raise P.truncated("blob length")
    nxt = pos + size + (-size % 8)
    if nxt > len(body):
        raise P.truncated("blob padding")
    return body[pos : pos + size], nxt


def _read_value(code: int, body: bytes, pos: int) -> tuple[Any, int]:
    """One value of wire type `code` (§5.3) at pos; the same decoding serves rows and params."""
    if code == P.INTEGER:
        return _I64.unpack_from(body, pos)[0], pos + 8
    if code == P.TEXT:
        return _read_text(body, pos)
    if code == P.FLOAT:
        return _F64.unpack_from(body, pos)[0], pos + 8
    if code == P.NULL:
        _U64.unpack_from(body, pos)  # bounds check only
        return None, pos + 8
    if code == P.BLOB:
        return _read_blob(body, pos)
    if code == P.BOOLEAN:
        return _U64.unpack_from(body, pos)[0] != 0, pos + 8
    if code == P.ISO8601:
        text, pos = _read_text(body, pos)
        return P.iso8601_value(text), pos
    if code == P.UNIXTIME:
        return P.unixtime_value(_I64.unpack_from(body, pos)[0]), pos + 8
    raise ProtocolError(f"unknown value type code {code}")


def _row_types(header: bytes, ncols: int) -> tuple[int, ...]:
    types = tuple((header[i >> 1] >> ((i & 1) << 2)) & 0xF for i in range(ncols))
    for code in types:
        if code not in P.VALUE_TYPES:
            raise ProtocolError(f"unknown value type code {code} in a row header")
    return types


def _decode_rows(body: bytes, pos: int) -> tuple[list[str], list[tuple[Any, ...]], bool, int]:
    n = len(body)
    (ncols,) = _U64.unpack_from(body, pos)
    pos += 8
    if ncols > (n - pos) >> 3:  # every name takes at least a word
        raise P.truncated("ROWS column count")
    columns = []
    for _ in range(ncols):
        name, pos = _read_text(body, pos)
        columns.append(name)
    header_size = ((ncols + 15) >> 4) << 3
    rows: list[tuple[Any, ...]] = []
    type_cache: dict[bytes, tuple[int, ...]] = {}  # a page's rows mostly share a header
    unpack_u64 = _U64.unpack_from
    unpack_i64 = _I64.unpack_from
    unpack_f64 = _F64.unpack_from
    find = body.find
    while True:
        (word,) = unpack_u64(body, pos)
        if word == P.DONE or word == P.PART:
            return columns, rows, word == P.DONE, pos + 8
        if ncols == 0:  # no header to consume: refuse rather than loop for ever
            raise ProtocolError("row in a ROWS response with no columns")
        header = body[pos : pos + header_size]
        pos += header_size
        types = type_cache.get(header)
        if types is None:
            if len(header) < header_size:
                raise P.truncated("row header")
            types = type_cache[header] = _row_types(header, ncols)
        row: list[Any] = []
        append = row.append
        for code in types:
            if code == 1:  # INTEGER
                append(unpack_i64(body, pos)[0])
                pos += 8
            elif code == 3:  # TEXT
                end = find(_NUL, pos)
                if end < 0:
                    raise P.truncated("text (no NUL)")
                append(body[pos:end].decode("utf-8"))
                pos = (end + 8) & ~7
            elif code == 2:  # FLOAT
                append(unpack_f64(body, pos)[0])
                pos += 8
            elif code == 5:  # NULL
                append(None)
                pos += 8
            else:
                value, pos = _read_value(code, body, pos)
                append(value)
        if pos > n:
            raise P.truncated("row")
        rows.append(tuple(row))


def decode_rows(
    body: bytes | bytearray | memoryview,
) -> tuple[list[str], list[tuple[Any, ...]], bool]:
    """Decode a ROWS body into (columns, rows, done).

    `done` is True for the DONE marker, False for PART (another ROWS response follows;
    a PART batch may hold any number of rows, zero included). Values: INTEGER int,
    FLOAT float, TEXT str, BLOB bytes, NULL None, UNIXTIME aware UTC datetime,
    ISO8601 datetime (see `protocol.iso8601_value`; "" is the engine's NULL and gives None),
    BOOLEAN bool. Engine quirk (dqlite#882): NULL in a BOOLEAN column arrives as False.

    :raises ProtocolError: truncated or malformed body, unknown type code, invalid UTF-8.
    """
    body = _as_bytes(body)
    try:
        columns, rows, done, pos = _decode_rows(body, 0)
    except (struct.error, UnicodeDecodeError) as exc:
        raise P.truncated("ROWS body") from exc
    if pos != len(body):
        raise ProtocolError(f"{len(body) - pos} bytes after the ROWS end marker")
    return columns, rows, done


def _decode_nodes(body: bytes, pos: int, fmt: int) -> tuple[list[P.NodeInfo], int]:
    (count,) = _U64.unpack_from(body, pos)
    pos += 8
    if count > (len(body) - pos) >> 4:  # id word + address word at least
        raise P.truncated("SERVERS count")
    nodes = []
    for _ in range(count):
        (node_id,) = _U64.unpack_from(body, pos)
        address, pos = _read_text(body, pos + 8)
        role = None
        if fmt != 0:
            (role,) = _U64.unpack_from(body, pos)
            pos += 8
        nodes.append(P.NodeInfo(node_id, address, role))
    return nodes, pos


def _decode_files(body: bytes, pos: int) -> tuple[list[tuple[str, bytes]], int]:
    (count,) = _U64.unpack_from(body, pos)
    pos += 8
    if count > (len(body) - pos) >> 4:  # name word + size word at least
        raise P.truncated("FILES count")
    files = []
    for _ in range(count):
        name, pos = _read_text(body, pos)
        data, pos = _read_blob(body, pos)
        files.append((name, data))
    return files, pos


def decode_response(rtype: int, body: bytes | bytearray | memoryview, format: int = 1) -> Any:  # noqa: A002 - protocol term
    """Decode a response body per `protocol.RESPONSES`.

    Returns: FAILURE `Failure(code, message)`; SERVER `(id, address)`; WELCOME int;
    SERVERS list of `NodeInfo` (role None when `format` is 0, the CLUSTER format asked);
    DB int; STMT `(db_id, stmt_id, nparams)`; RESULT `(last_insert_id, rows_affected)`;
    ROWS as `decode_rows`; EMPTY None; FILES list of `(name, bytes)`;
    METADATA `(failure_domain, weight)`.

    :raises ProtocolError: unknown type, truncated or malformed body, trailing bytes.
    """
    layout = P.RESPONSES.get(rtype)
    if layout is None:
        raise ProtocolError(f"unknown response type {rtype!r}")
    if layout.code == P.ROWS:
        return decode_rows(body)
    body = _as_bytes(body)
    values: list[Any] = []
    pos = 0
    try:
        for field in layout.fields:
            kind = field.kind
            if kind == "u64":
                values.append(_U64.unpack_from(body, pos)[0])
                pos += 8
            elif kind == "u32":
                values.append(_U32.unpack_from(body, pos)[0])
                pos += 4
            elif kind == "pad32":
                _U32.unpack_from(body, pos)
                pos += 4
            elif kind == "text":
                text, pos = _read_text(body, pos)
                values.append(text)
            elif kind == "nodes":
                nodes, pos = _decode_nodes(body, pos, format)
                values.append(nodes)
            else:  # "files"
                files, pos = _decode_files(body, pos)
                values.append(files)
    except (struct.error, UnicodeDecodeError) as exc:
        raise P.truncated(f"{layout.name} body") from exc
    if pos != len(body):
        raise ProtocolError(f"{len(body) - pos} unexpected bytes at the end of {layout.name}")
    return P.shape_result(layout, values)


# -- Server side: test helpers (pure Python only) -----------------------------


def _encode_row(row: Sequence[Any], types: Sequence[int | None] | None, what: str) -> bytes:
    codes = []
    values = []
    for i, value in enumerate(row):
        code = types[i] if types is not None else None
        if code is None:
            code = _infer_type(value, f"{what}[{i}]")
        codes.append(code)
        values.append(_encode_value(code, value, f"{what}[{i}]"))
    header = bytearray(((len(codes) + 15) >> 4) << 3)
    for i, code in enumerate(codes):
        header[i >> 1] |= code << ((i & 1) << 2)
    return bytes(header) + b"".join(values)


def encode_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    done: bool,
    types: Sequence[int | None] | None = None,
) -> bytes:
    """A ROWS body as the server sends it (test helper).

    Each value's type is inferred as for params unless `types` gives a code per column
    (None entries infer). Explicit codes can reproduce the engine's typed values, e.g.
    ISO8601 with None sends "" and BOOLEAN with None sends 0, as 1.11.1 does.
    """
    parts = [_U64.pack(len(columns))]
    parts += [_text(name, f"columns[{i}]") for i, name in enumerate(columns)]
    if types is not None and len(types) != len(columns):
        raise ProgrammingError(f"{len(types)} types for {len(columns)} columns")
    for r, row in enumerate(rows):
        if len(row) != len(columns):
            raise ProgrammingError(f"rows[{r}] has {len(row)} values for {len(columns)} columns")
        parts.append(_encode_row(row, types, f"rows[{r}]"))
    parts.append(_U64.pack(P.DONE if done else P.PART))
    return b"".join(parts)


def encode_response(rtype: int, value: Any, format: int = 1) -> bytes:  # noqa: A002
    """A response frame (header + body) for the value decode_response would return (test helper)."""
    layout = P.RESPONSES.get(rtype)
    if layout is None:
        raise ProgrammingError(f"unknown response type {rtype!r}")
    if layout.result == "none":
        value = (0,)
    elif layout.result == "value":
        value = (value,)
    fields = [f for f in layout.fields if f.kind != "pad32"]
    if len(value) != len(fields):
        raise ProgrammingError(f"{layout.name} takes {len(fields)} values, got {len(value)}")
    values = iter(value)
    parts = []
    for field in layout.fields:
        what = f"{layout.name} {field.name}"
        kind = field.kind
        if kind == "pad32":
            parts.append(bytes(4))
            continue
        v = next(values)
        if kind == "u64":
            parts.append(_U64.pack(_unsigned(v, 64, _U64_MAX, what)))
        elif kind == "u32":
            parts.append(_U32.pack(_unsigned(v, 32, _U32_MAX, what)))
        elif kind == "text":
            parts.append(_text(v, what))
        elif kind == "nodes":
            parts.append(_U64.pack(len(v)))
            for node_id, address, role in v:
                parts += [_U64.pack(node_id), _text(address, what)]
                if format != 0:
                    parts.append(_U64.pack(role))
        elif kind == "files":
            parts.append(_U64.pack(len(v)))
            for name, data in v:
                parts += [_text(name, what), _encode_value(P.BLOB, data, what)]
        else:  # "rows"
            parts.append(encode_rows(*v))
    return _frame(layout.code, b"".join(parts))


def decode_request(frame: bytes) -> tuple[int, tuple[Any, ...]]:
    """(request type, arguments) from a whole request frame (test helper, fake servers).

    Defaults fill fields missing at the end of the body, as the engine does (ASSIGN
    without a role is VOTER); params come back decoded like row values, () when absent.

    :raises ProtocolError: bad header, unknown request type, malformed body.
    """
    frame = _as_bytes(frame)
    if len(frame) < P.HEADER_SIZE:
        raise P.truncated("request header")
    words, rtype, _, _ = _HEADER.unpack_from(frame)
    body = frame[P.HEADER_SIZE :]
    if len(body) != words * 8:
        raise ProtocolError(f"header says {words * 8} body bytes, frame has {len(body)}")
    layout = P.REQUESTS.get(rtype)
    if layout is None:
        raise ProtocolError(f"unknown request type {rtype}")
    args: list[Any] = []
    pos = 0
    try:
        for field in layout.fields:
            if pos == len(body) and field.default is not P.REQUIRED:
                args.append(field.default)
                continue
            kind = field.kind
            if kind == "u64":
                args.append(_U64.unpack_from(body, pos)[0])
                pos += 8
            elif kind == "u32":
                args.append(_U32.unpack_from(body, pos)[0])
                pos += 4
            elif kind == "text":
                text, pos = _read_text(body, pos)
                args.append(text)
            else:  # "params"
                n = body[pos]
                codes = body[pos + 1 : pos + 1 + n]
                pos += ((n + 8) >> 3) << 3
                if len(codes) != n or pos > len(body):
                    raise P.truncated("params header")
                params = []
                for code in codes:
                    if code not in P.PARAM_TYPES:
                        raise ProtocolError(f"type code {code} is not valid in params")
                    value, pos = _read_value(code, body, pos)
                    params.append(value)
                args.append(tuple(params))
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise P.truncated(f"{layout.name} body") from exc
    if pos != len(body):
        raise ProtocolError(f"{len(body) - pos} unexpected bytes at the end of {layout.name}")
    return rtype, tuple(args)


__all__ = [
    "handshake",
    "encode_request",
    "encode_params",
    "FrameReader",
    "decode_response",
    "decode_rows",
    "encode_response",
    "encode_rows",
    "decode_request",
]
