"""The dqlite/cowsql client wire protocol: constants and the one table of message layouts.

Both codecs (`cowsqlpy._ccodec`, Cython, and `cowsqlpy.protocol.pure`, its pure-Python twin)
interpret `REQUESTS` and `RESPONSES`; nothing else in the project spells out a layout.
The helpers below the tables (argument binding, result shaping, datetime text, error
messages) are called by both codecs so that behaviour and messages cannot drift; none of
them is on a hot path.

Facts are in docs/protocol.md (sections cited as §N).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, NamedTuple

from cowsqlpy.errors import DataError, ProgrammingError, ProtocolError

PROTOCOL_VERSION = 1  # §2; the legacy pre-1.0 version is never sent
WORD = 8
HEADER_SIZE = 8  # u32 words, u8 type, u8 schema (0), u16 unused (§3)
MAX_PARAMS = 255  # u8 count in 1.11.1; wrapping it loses params silently (lxd#10706)
PART = 0xEEEEEEEEEEEEEEEE  # ROWS end marker: another ROWS response follows (§6.1)
DONE = 0xFFFFFFFFFFFFFFFF  # ROWS end marker: result set complete

# -- Request codes (§4) --------------------------------------------------------
LEADER = 0
CLIENT = 1
HEARTBEAT = 2
OPEN = 3
PREPARE = 4
EXEC = 5
QUERY = 6
FINALIZE = 7
EXEC_SQL = 8
QUERY_SQL = 9
INTERRUPT = 10
CONNECT = 11
ADD = 12
ASSIGN = 13
REMOVE = 14
DUMP = 15
CLUSTER = 16
TRANSFER = 17
DESCRIBE = 18
WEIGHT = 19

# -- Response codes (§7) -------------------------------------------------------
FAILURE = 0
SERVER = 1
WELCOME = 2
SERVERS = 3
DB = 4
STMT = 5
RESULT = 6
ROWS = 7
EMPTY = 8
FILES = 9
METADATA = 10

# -- Value type codes (§5.3) ---------------------------------------------------
INTEGER = 1
FLOAT = 2
TEXT = 3
BLOB = 4
NULL = 5
UNIXTIME = 9
ISO8601 = 10
BOOLEAN = 11

VALUE_TYPES = frozenset({INTEGER, FLOAT, TEXT, BLOB, NULL, UNIXTIME, ISO8601, BOOLEAN})
# UNIXTIME is valid in rows but the 1.11.1 engine rejects it in params (FAILURE 1005).
PARAM_TYPES = VALUE_TYPES - {UNIXTIME}

# -- Node roles (§7) -----------------------------------------------------------
VOTER = 0
STANDBY = 1
SPARE = 2


class Failure(NamedTuple):
    """A FAILURE response: engine code (usually an extended SQLite code) and message."""

    code: int
    message: str


class NodeInfo(NamedTuple):
    """One entry of a SERVERS response; `role` is None for CLUSTER format 0."""

    id: int
    address: str
    role: int | None


# -- The schema table ----------------------------------------------------------

REQUIRED: Any = object()  # marker: the argument has no default

# Field kinds. Fixed-width fields must keep the body word-aligned (u32s come in pairs).
#   u64 / u32   unsigned little-endian integers
#   pad32       four bytes the decoder skips (responses only)
#   text        UTF-8, NUL, zero padding to a word
#   params      optional trailing parameter tuple (§5.1); empty/None = no tuple at all
#   nodes       u64 n, n x {u64 id, text address, [u64 role unless format 0]}
#   files       u64 n, n x {text name, u64 size, bytes padded to a word}
#   rows        a ROWS body (§6.1)
KINDS = ("u64", "u32", "pad32", "text", "params", "nodes", "files", "rows")

# How a response's decoded fields become the return value of decode_response:
#   value (the only field), tuple (all fields), none, failure (a Failure).
RESULT_FORMS = ("value", "tuple", "none", "failure")


class Field(NamedTuple):
    name: str
    kind: str
    default: Any = REQUIRED
    allowed: tuple[int, ...] | None = None  # the only values the engine handles safely
    why: str = ""  # reason given when a value outside `allowed` is refused


class Layout(NamedTuple):
    code: int
    name: str
    fields: tuple[Field, ...]
    result: str = "value"  # responses only, one of RESULT_FORMS


def _table(*layouts: Layout) -> dict[int, Layout]:
    return {layout.code: layout for layout in layouts}


_PARAMS = Field("params", "params", ())  # always the last field

# fmt: off
# Requests the codec will encode. HEARTBEAT and CONNECT are absent on purpose (NEVER_SEND).
REQUESTS: dict[int, Layout] = _table(
    Layout(LEADER,    "LEADER",    (Field("unused", "u64", 0),)),
    Layout(CLIENT,    "CLIENT",    (Field("id", "u64"),)),
    # flags and vfs are ignored by 1.11.1 but must be present (§4).
    Layout(OPEN,      "OPEN",      (Field("name", "text"), Field("flags", "u64", 0),
                                    Field("vfs", "text", "volatile"))),
    Layout(PREPARE,   "PREPARE",   (Field("db_id", "u64"), Field("sql", "text"))),
    Layout(EXEC,      "EXEC",      (Field("db_id", "u32"), Field("stmt_id", "u32"), _PARAMS)),
    Layout(QUERY,     "QUERY",     (Field("db_id", "u32"), Field("stmt_id", "u32"), _PARAMS)),
    Layout(FINALIZE,  "FINALIZE",  (Field("db_id", "u32"), Field("stmt_id", "u32"))),
    Layout(EXEC_SQL,  "EXEC_SQL",  (Field("db_id", "u64"), Field("sql", "text"), _PARAMS)),
    Layout(QUERY_SQL, "QUERY_SQL", (Field("db_id", "u64"), Field("sql", "text"), _PARAMS)),
    Layout(INTERRUPT, "INTERRUPT", (Field("db_id", "u64"),)),
    Layout(ADD,       "ADD",       (Field("id", "u64"), Field("address", "text"))),
    # The engine reads a missing role as VOTER (legacy PROMOTE); we always send it.
    Layout(ASSIGN,    "ASSIGN",    (Field("id", "u64"),
                                    Field("role", "u64", REQUIRED, (VOTER, STANDBY, SPARE),
                                          "roles are VOTER(0), STANDBY(1), SPARE(2)"))),
    Layout(REMOVE,    "REMOVE",    (Field("id", "u64"),)),
    Layout(DUMP,      "DUMP",      (Field("name", "text"),)),
    # 1.11.1 reads any format but 0 as 1; later servers reject unknown formats.
    Layout(CLUSTER,   "CLUSTER",   (Field("format", "u64", 1, (0, 1), "CLUSTER formats are 0 and 1"),)),
    Layout(TRANSFER,  "TRANSFER",  (Field("id", "u64"),)),
    Layout(DESCRIBE,  "DESCRIBE",  (Field("format", "u64", 0, (0,),
                                          "format != 0 aborts the engine in 1.11.1"),)),
    Layout(WEIGHT,    "WEIGHT",    (Field("weight", "u64"),)),
)

NEVER_SEND: dict[int, str] = {
    HEARTBEAT: "HEARTBEAT (2) has no handler in libdqlite 1.11.1: no reply and the connection wedges",
    CONNECT: "CONNECT (11) hands the socket over to raft; clients never send it",
}

RESPONSES: dict[int, Layout] = _table(
    Layout(FAILURE,  "FAILURE",  (Field("code", "u64"), Field("message", "text")), "failure"),
    Layout(SERVER,   "SERVER",   (Field("id", "u64"), Field("address", "text")), "tuple"),
    Layout(WELCOME,  "WELCOME",  (Field("heartbeat_timeout", "u64"),)),
    Layout(SERVERS,  "SERVERS",  (Field("nodes", "nodes"),)),
    Layout(DB,       "DB",       (Field("db_id", "u32"), Field("unused", "pad32"))),
    Layout(STMT,     "STMT",     (Field("db_id", "u32"), Field("stmt_id", "u32"),
                                  Field("nparams", "u64")), "tuple"),
    Layout(RESULT,   "RESULT",   (Field("last_insert_id", "u64"), Field("rows_affected", "u64")),
           "tuple"),
    Layout(ROWS,     "ROWS",     (Field("rows", "rows"),)),
    Layout(EMPTY,    "EMPTY",    (Field("unused", "u64"),), "none"),
    Layout(FILES,    "FILES",    (Field("files", "files"),)),
    Layout(METADATA, "METADATA", (Field("failure_domain", "u64"), Field("weight", "u64")), "tuple"),
)
# fmt: on

REQUEST_NAMES: dict[int, str] = {
    **{c: lay.name for c, lay in REQUESTS.items()},
    HEARTBEAT: "HEARTBEAT",
    CONNECT: "CONNECT",
}
RESPONSE_NAMES: dict[int, str] = {c: lay.name for c, lay in RESPONSES.items()}


# -- Shared helpers (called by both codecs) ------------------------------------


def bind_request(rtype: object, args: tuple[Any, ...]) -> tuple[Layout, tuple[Any, ...]]:
    """Check a request against the table and fill in defaults.

    Returns the layout and one value per field. Field values are type-checked by the codec
    while it encodes them. :raises ProgrammingError: unknown or forbidden request type,
    wrong number of arguments, a value the engine must not receive.
    """
    code = rtype if isinstance(rtype, int) and not isinstance(rtype, bool) else None
    layout = REQUESTS.get(code) if code is not None else None
    if layout is None:
        if code in NEVER_SEND:
            raise ProgrammingError(f"request type {code} refused: {NEVER_SEND[code]}")
        raise ProgrammingError(
            f"unknown request type {rtype!r}: libdqlite 1.11.1 never answers it and the connection wedges"
        )
    fields = layout.fields
    if len(args) == len(fields):
        values = args
    else:
        required = sum(1 for f in fields if f.default is REQUIRED)
        if not required <= len(args) <= len(fields):
            sig = ", ".join(
                f.name if f.default is REQUIRED else f"{f.name}={f.default!r}" for f in fields
            )
            raise ProgrammingError(f"{layout.name} takes ({sig}), got {len(args)} argument(s)")
        values = args + tuple(f.default for f in fields[len(args) :])
    for f, v in zip(fields, values, strict=True):
        if f.allowed is not None and v not in f.allowed:
            raise ProgrammingError(f"{layout.name} {f.name}={v!r} refused: {f.why}")
    return layout, values


def shape_result(layout: Layout, values: list[Any]) -> Any:
    """Turn a response's decoded field values into decode_response's return value."""
    form = layout.result
    if form == "value":
        return values[0]
    if form == "tuple":
        return tuple(values)
    if form == "failure":
        return Failure(*values)
    return None


def param_sequence(params: object) -> Sequence[Any]:
    """Accept any sequence of params except str/bytes-like (a common mistake)."""
    if isinstance(params, (str, bytes, bytearray, memoryview)) or not isinstance(params, Sequence):
        raise ProgrammingError(
            f"params must be a sequence (list or tuple), not {type(params).__name__}"
        )
    return params


def unsigned_error(what: str, bits: int, value: object) -> ProgrammingError:
    return ProgrammingError(f"{what} must be an int in [0, 2**{bits}), got {value!r}")


def text_type_error(what: str, value: object) -> ProgrammingError:
    return ProgrammingError(f"{what} must be str, not {type(value).__name__}")


def nul_error(what: str) -> DataError:
    return DataError(f"{what} contains a NUL character, which the engine would silently truncate")


def utf8_error(what: str) -> DataError:
    return DataError(f"{what} is not encodable as UTF-8 (lone surrogate)")


def int_range_error(what: str, value: int) -> DataError:
    return DataError(f"{what}={value} does not fit in a signed 64-bit INTEGER")


def unsupported_type_error(what: str, value: object) -> ProgrammingError:
    return ProgrammingError(
        f"{what}: unsupported parameter type {type(value).__name__} "
        "(use None, bool, int, float, str, bytes, datetime or date)"
    )


def too_many_params_error(n: int) -> ProgrammingError:
    return ProgrammingError(
        f"{n} parameters given; libdqlite 1.11.1 accepts at most {MAX_PARAMS} per statement"
    )


def too_big_error(size: int) -> DataError:
    return DataError(f"message body of {size} bytes does not fit the u32 word count of the header")


def truncated(what: str) -> ProtocolError:
    return ProtocolError(f"truncated or malformed {what}")


# -- Datetime values -----------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The formats go-dqlite reads back (plus "Z", as it trims a trailing Z); date-only allowed.
_ISO8601 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)"
    r"(?:[ T](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,9}))?)?)?"
    r"(Z|[+-]\d\d:\d\d)?",
    re.ASCII,
)


def format_datetime(value: date) -> str:
    """ISO8601 text as go-dqlite writes it: "YYYY-MM-DD HH:MM:SS[.fraction][+HH:MM]".

    The fraction drops trailing zeros (Go's ".999999999"); naive datetimes get no offset;
    a date gives "YYYY-MM-DD". :raises DataError: an offset that is not whole minutes.
    """
    if not isinstance(value, datetime):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    text = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    offset = value.utcoffset()
    if offset is not None:
        minutes, rest = divmod(offset, timedelta(minutes=1))
        if rest:
            raise DataError(f"UTC offset {offset} of {value!r} is not a whole number of minutes")
        sign = "-" if minutes < 0 else "+"
        hours, minutes = divmod(abs(minutes), 60)
        text += f"{sign}{hours:02d}:{minutes:02d}"
    return text


def iso8601_value(text: str) -> datetime | str | None:
    """Decode an ISO8601 column value.

    "" is the engine's typed NULL (NULL in a DATETIME column), so it gives None. Text
    without an offset gives a naive datetime, "Z" gives UTC; digits past microseconds are
    dropped. Text that does not parse is returned unchanged.
    """
    if not text:
        return None
    m = _ISO8601.fullmatch(text)
    if m is None:
        return text
    year, month, day, hour, minute, second, frac, tz = m.groups()
    try:
        tzinfo: timezone | None = None
        if tz == "Z":
            tzinfo = UTC
        elif tz is not None:
            oh, om = int(tz[1:3]), int(tz[4:6])
            if om >= 60:
                return text
            delta = timedelta(hours=oh, minutes=om)
            tzinfo = timezone(-delta if tz[0] == "-" else delta)
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((frac or "").ljust(6, "0")[:6]),
            tzinfo,
        )
    except ValueError:
        return text


def unixtime_value(seconds: int) -> datetime | int:
    """Decode a UNIXTIME column value to an aware UTC datetime (out of range: the int)."""
    try:
        return EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        return seconds


def unixtime_seconds(value: datetime | int) -> int:
    """Seconds since the epoch for a UNIXTIME value; naive datetimes are taken as UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - EPOCH) // timedelta(seconds=1)
    return value
