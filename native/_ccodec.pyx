# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: auto_pickle=False, autotestdict=False
"""Cython wire codec: the fast twin of `cowsqlpy.protocol.pure`, with the same API and behaviour.

Both interpret the layouts in `cowsqlpy.protocol` and call its helpers for argument binding,
result shaping, datetime text and error messages (all off the hot path). What is written
again here, for speed, is the byte work: little-endian words read and written through raw
pointers, text found with memchr, row tuples built in place. The server-side test helpers
(encode_response, encode_rows, decode_request) exist only in the pure module.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.float cimport PyFloat_AsDouble, PyFloat_FromDouble
from cpython.long cimport PyLong_AsLongLong, PyLong_AsUnsignedLongLong, PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memchr, memcpy, memset

from datetime import date

from cowsqlpy import protocol as P
from cowsqlpy.errors import ProtocolError

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    object PyUnicode_DecodeUTF8(const char*, Py_ssize_t, const char*)

# Codes come from the protocol table, never re-typed here.
cdef uint64_t _PART = P.PART
cdef uint64_t _DONE = P.DONE
cdef int _INTEGER = P.INTEGER
cdef int _FLOAT = P.FLOAT
cdef int _TEXT = P.TEXT
cdef int _BLOB = P.BLOB
cdef int _NULL = P.NULL
cdef int _UNIXTIME = P.UNIXTIME
cdef int _ISO8601 = P.ISO8601
cdef int _BOOLEAN = P.BOOLEAN
cdef Py_ssize_t _MAX_PARAMS = P.MAX_PARAMS
cdef Py_ssize_t _HEADER_SIZE = P.HEADER_SIZE
cdef int _ROWS = P.ROWS
cdef dict _RESPONSES = P.RESPONSES

cdef enum Kind:
    K_U64, K_U32, K_PAD32, K_TEXT, K_PARAMS, K_NODES, K_FILES, K_ROWS

_KIND_IDS = {name: i for i, name in enumerate(P.KINDS)}
assert [_KIND_IDS[k] for k in ("u64", "u32", "pad32", "text", "params", "nodes", "files", "rows")] == [
    K_U64, K_U32, K_PAD32, K_TEXT, K_PARAMS, K_NODES, K_FILES, K_ROWS
], "protocol.KINDS and the Kind enum disagree"
# Layout code -> field kinds as ints, compiled once from the tables.
cdef dict _REQUEST_KINDS = {c: tuple(_KIND_IDS[f.kind] for f in lay.fields) for c, lay in P.REQUESTS.items()}
cdef dict _RESPONSE_KINDS = {c: tuple(_KIND_IDS[f.kind] for f in lay.fields) for c, lay in P.RESPONSES.items()}

_bind_request = P.bind_request
_shape_result = P.shape_result
_format_datetime = P.format_datetime
_iso8601_value = P.iso8601_value
_unixtime_value = P.unixtime_value
_truncated = P.truncated
_NodeInfo = P.NodeInfo


# -- Little-endian words (shifts compile to plain loads on little-endian hosts) --

cdef inline uint64_t _ld64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>p[0] | <uint64_t>p[1] << 8 | <uint64_t>p[2] << 16 | <uint64_t>p[3] << 24
            | <uint64_t>p[4] << 32 | <uint64_t>p[5] << 40 | <uint64_t>p[6] << 48 | <uint64_t>p[7] << 56)

cdef inline uint32_t _ld32(const unsigned char* p) noexcept nogil:
    return <uint32_t>p[0] | <uint32_t>p[1] << 8 | <uint32_t>p[2] << 16 | <uint32_t>p[3] << 24

cdef inline void _st64(unsigned char* p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[i] = <unsigned char>(v >> (8 * i))

cdef inline void _st32(unsigned char* p, uint32_t v) noexcept nogil:
    cdef int i
    for i in range(4):
        p[i] = <unsigned char>(v >> (8 * i))

cdef inline double _ldf64(const unsigned char* p) noexcept nogil:
    cdef uint64_t bits = _ld64(p)
    cdef double d
    memcpy(&d, &bits, 8)
    return d


cdef object _as_bytes(object body):
    if type(body) is bytes:
        return body
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"expected a bytes-like body, not {type(body).__name__}")


# -- Encoding ------------------------------------------------------------------

cdef struct Writer:
    unsigned char* data
    Py_ssize_t size
    Py_ssize_t cap


cdef unsigned char* _room(Writer* w, Py_ssize_t n) except NULL:
    """Reserve n bytes at the end of the buffer and return where they start."""
    cdef Py_ssize_t cap
    cdef unsigned char* data
    if w.size + n > w.cap:
        cap = max(w.cap * 2, w.size + n, 256)
        data = <unsigned char*>realloc(w.data, cap)
        if data == NULL:
            raise MemoryError()
        w.data = data
        w.cap = cap
    data = w.data + w.size
    w.size += n
    return data


cdef inline int _w_f64(Writer* w, double d) except -1:
    cdef uint64_t bits
    memcpy(&bits, &d, 8)
    _st64(_room(w, 8), bits)
    return 0


cdef int _w_text(Writer* w, object value) except -1:
    """Text with NUL and padding (str subclasses too: `object`, as a typed `str` would
    refuse them). Returns 1 if it holds a NUL, 2 if it is not UTF-8."""
    cdef Py_ssize_t n
    cdef const char* s
    try:
        s = PyUnicode_AsUTF8AndSize(value, &n)
    except UnicodeEncodeError:
        return 2
    if memchr(s, 0, n) != NULL:
        return 1
    cdef Py_ssize_t total = (n + 8) & ~7
    cdef unsigned char* out = _room(w, total)
    memcpy(out, s, n)
    memset(out + n, 0, total - n)
    return 0


cdef int _w_text_field(Writer* w, object value, object what) except -1:
    if not isinstance(value, str):
        raise P.text_type_error(what, value)
    cdef int rc = _w_text(w, value)
    if rc == 1:
        raise P.nul_error(what)
    if rc == 2:
        raise P.utf8_error(what)
    return 0


cdef int _w_blob(Writer* w, object value) except -1:
    cdef bytes data = value if type(value) is bytes else bytes(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t total = (n + 7) & ~7
    cdef unsigned char* out = _room(w, 8 + total)
    _st64(out, <uint64_t>n)
    memcpy(out + 8, PyBytes_AS_STRING(data), n)
    memset(out + 8 + n, 0, total - n)
    return 0


cdef int _w_param(Writer* w, object value, Py_ssize_t i) except -1:
    """Encode one param; return its type code. Same precedence as protocol.pure._infer_type."""
    cdef object tp = type(value)
    cdef long long integer
    cdef int rc
    if value is None:
        _st64(_room(w, 8), 0)
        return _NULL
    if value is True or value is False:
        _st64(_room(w, 8), 1 if value is True else 0)
        return _BOOLEAN
    if tp is int or (tp is not float and tp is not str and isinstance(value, int)):
        try:
            integer = PyLong_AsLongLong(value)
        except OverflowError:
            raise P.int_range_error(f"params[{i}]", value) from None
        _st64(_room(w, 8), <uint64_t>integer)
        return _INTEGER
    if tp is float or isinstance(value, float):
        _w_f64(w, PyFloat_AsDouble(value))
        return _FLOAT
    if tp is str or isinstance(value, str):
        rc = _w_text(w, value)
        if rc == 1:
            raise P.nul_error(f"params[{i}]")
        if rc == 2:
            raise P.utf8_error(f"params[{i}]")
        return _TEXT
    if isinstance(value, (bytes, bytearray, memoryview)):
        _w_blob(w, value)
        return _BLOB
    if isinstance(value, date):
        _w_text(w, _format_datetime(value))
        return _ISO8601
    raise P.unsupported_type_error(f"params[{i}]", value)


cdef int _w_params(Writer* w, object params) except -1:
    if params is None:
        return 0
    if type(params) is not list and type(params) is not tuple:
        params = P.param_sequence(params)
    cdef Py_ssize_t n = len(params)
    if n == 0:
        return 0
    if n > _MAX_PARAMS:
        raise P.too_many_params_error(n)
    cdef Py_ssize_t header = w.size
    cdef Py_ssize_t header_size = (n + 8) & ~7
    memset(_room(w, header_size), 0, header_size)
    w.data[header] = <unsigned char>n
    cdef Py_ssize_t i
    cdef int code
    for i in range(n):
        code = _w_param(w, params[i], i)
        w.data[header + 1 + i] = <unsigned char>code  # via w.data: _room may have moved it
    return 0


cdef bytes _finish(Writer* w, int rtype):
    """Fill in the header reserved at offset 0 and copy the frame out."""
    cdef Py_ssize_t body = w.size - _HEADER_SIZE
    if body >= (<Py_ssize_t>1 << 35):
        raise P.too_big_error(body)
    _st32(w.data, <uint32_t>(body >> 3))
    w.data[4] = <unsigned char>rtype
    w.data[5] = 0
    w.data[6] = 0
    w.data[7] = 0
    return PyBytes_FromStringAndSize(<char*>w.data, w.size)


cdef int _w_unsigned(Writer* w, object value, int bits, object layout, object field) except -1:
    if type(value) is not int and (type(value) is bool or not isinstance(value, int)):
        raise P.unsigned_error(f"{layout.name} {field.name}", bits, value)
    if value < 0 or value >> bits:
        raise P.unsigned_error(f"{layout.name} {field.name}", bits, value)
    if bits == 64:
        _st64(_room(w, 8), PyLong_AsUnsignedLongLong(value))
    else:
        _st32(_room(w, 4), <uint32_t>PyLong_AsUnsignedLongLong(value))
    return 0


def handshake():
    """The 8-byte word a client sends first: the protocol version (1)."""
    cdef unsigned char word[8]
    _st64(word, P.PROTOCOL_VERSION)
    return PyBytes_FromStringAndSize(<char*>word, 8)


def encode_params(params):
    """The parameter tuple alone; b"" for None or no params. See protocol.pure.encode_params."""
    cdef Writer w = Writer(NULL, 0, 0)
    try:
        _w_params(&w, params)
        return PyBytes_FromStringAndSize(<char*>w.data, w.size)
    finally:
        free(w.data)


def encode_request(rtype, *args):
    """One request frame laid out per protocol.REQUESTS. See protocol.pure.encode_request."""
    layout, values = _bind_request(rtype, args)
    cdef tuple kinds = _REQUEST_KINDS[layout.code]
    cdef Writer w = Writer(NULL, 0, 0)
    cdef Py_ssize_t i
    cdef int kind
    try:
        _room(&w, _HEADER_SIZE)
        for i in range(len(kinds)):
            kind = kinds[i]
            value = values[i]
            if kind == K_U64:
                _w_unsigned(&w, value, 64, layout, layout.fields[i])
            elif kind == K_U32:
                _w_unsigned(&w, value, 32, layout, layout.fields[i])
            elif kind == K_TEXT:
                _w_text_field(&w, value, f"{layout.name} {layout.fields[i].name}")
            else:  # K_PARAMS, always last
                _w_params(&w, value)
        return _finish(&w, layout.code)
    finally:
        free(w.data)


# -- Framing -------------------------------------------------------------------

cdef class FrameReader:
    """Splits a byte stream from a server into (response type, body) frames.

    See protocol.pure.FrameReader: one bytearray, whole frames cut from its front
    (O(1) in CPython), so a big frame arriving in small chunks costs linear time.
    """

    cdef bytearray _buf
    cdef Py_ssize_t _max

    def __init__(self, max_frame=1 << 30):
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data):
        """Buffer bytes received from the socket."""
        self._buf += data

    @property
    def buffered(self):
        """Bytes held that are not yet part of a returned frame (non-zero at EOF = cut frame)."""
        return PyByteArray_GET_SIZE(self._buf)

    def next_frame(self):
        """The next whole frame as (type, body), or None until more bytes arrive."""
        cdef Py_ssize_t have = PyByteArray_GET_SIZE(self._buf)
        if have < _HEADER_SIZE:
            return None
        cdef const unsigned char* p = <const unsigned char*>PyByteArray_AS_STRING(self._buf)
        cdef Py_ssize_t size = <Py_ssize_t>_ld32(p) * 8
        if size > self._max:
            raise ProtocolError(f"frame of {size} bytes exceeds max_frame={self._max}")
        cdef Py_ssize_t end = _HEADER_SIZE + size
        if have < end:
            return None
        cdef int rtype = p[4]
        body = PyBytes_FromStringAndSize(<const char*>p + _HEADER_SIZE, size)
        del self._buf[:end]
        return rtype, body


# -- Decoding ------------------------------------------------------------------
# Every read checks the bytes left first: a malformed body raises ProtocolError, and no
# allocation is ever bigger than the body.

cdef inline int _need(Py_ssize_t pos, Py_ssize_t size, Py_ssize_t n) except -1:
    if size > n - pos:
        raise _truncated("body")
    return 0


cdef inline uint64_t _rd64(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos) except? 0xFFFFFFFFFFFFFFFF:
    _need(pos[0], 8, n)
    pos[0] += 8
    return _ld64(p + pos[0] - 8)


cdef inline uint32_t _rd32(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos) except? 0xFFFFFFFF:
    _need(pos[0], 4, n)
    pos[0] += 4
    return _ld32(p + pos[0] - 4)


cdef object _rd_text(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos):
    cdef Py_ssize_t start = pos[0]
    if start >= n:
        raise _truncated("text (no NUL)")
    cdef const unsigned char* nul = <const unsigned char*>memchr(p + start, 0, n - start)
    if nul == NULL:
        raise _truncated("text (no NUL)")
    cdef Py_ssize_t end = nul - p
    cdef Py_ssize_t nxt = (end + 8) & ~7
    if nxt > n:
        raise _truncated("text padding")
    pos[0] = nxt
    return PyUnicode_DecodeUTF8(<const char*>p + start, end - start, NULL)


cdef object _rd_blob(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos):
    cdef uint64_t size = _rd64(p, n, pos)
    cdef Py_ssize_t start = pos[0]
    if size > <uint64_t>(n - start):
        raise _truncated("blob length")
    cdef Py_ssize_t nxt = start + ((<Py_ssize_t>size + 7) & ~7)
    if nxt > n:
        raise _truncated("blob padding")
    pos[0] = nxt
    return PyBytes_FromStringAndSize(<const char*>p + start, <Py_ssize_t>size)


cdef object _rd_value(int code, const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos):
    """One value of wire type `code` (§5.3); the rare types of rows."""
    if code == _BLOB:
        return _rd_blob(p, n, pos)
    if code == _BOOLEAN:
        return _rd64(p, n, pos) != 0
    if code == _ISO8601:
        return _iso8601_value(_rd_text(p, n, pos))
    if code == _UNIXTIME:
        return _unixtime_value(<int64_t>_rd64(p, n, pos))
    raise ProtocolError(f"unknown value type code {code} in a row header")


cdef tuple _rows(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos):
    cdef uint64_t ncols64 = _rd64(p, n, pos)
    if ncols64 > <uint64_t>((n - pos[0]) >> 3):  # every name takes at least a word
        raise _truncated("ROWS column count")
    cdef Py_ssize_t ncols = <Py_ssize_t>ncols64
    cdef Py_ssize_t i
    cdef list columns = [_rd_text(p, n, pos) for i in range(ncols)]
    cdef Py_ssize_t header_size = ((ncols + 15) >> 4) << 3
    cdef list rows = []
    cdef const unsigned char* header
    cdef uint64_t word
    cdef int code
    cdef object value
    cdef object row
    cdef Py_ssize_t at = pos[0]
    while True:
        _need(at, 8, n)
        word = _ld64(p + at)
        if word == _DONE or word == _PART:
            pos[0] = at + 8
            return columns, rows, word == _DONE
        if ncols == 0:  # no header to consume: refuse rather than loop for ever
            raise ProtocolError("row in a ROWS response with no columns")
        _need(at, header_size, n)
        header = p + at
        at += header_size
        row = PyTuple_New(ncols)
        for i in range(ncols):
            code = (header[i >> 1] >> ((i & 1) << 2)) & 0xF
            if code == _INTEGER:
                _need(at, 8, n)
                value = PyLong_FromLongLong(<int64_t>_ld64(p + at))
                at += 8
            elif code == _TEXT:
                value = _rd_text(p, n, &at)
            elif code == _FLOAT:
                _need(at, 8, n)
                value = PyFloat_FromDouble(_ldf64(p + at))
                at += 8
            elif code == _NULL:
                _need(at, 8, n)
                value = None
                at += 8
            else:
                value = _rd_value(code, p, n, &at)
            Py_INCREF(value)  # SET_ITEM steals a reference
            PyTuple_SET_ITEM(row, i, value)
        rows.append(row)


def decode_rows(body):
    """Decode a ROWS body into (columns, rows, done). See protocol.pure.decode_rows.

    Engine quirk (dqlite#882): NULL in a BOOLEAN column arrives as False.
    """
    cdef bytes data = _as_bytes(body)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t pos = 0
    try:
        result = _rows(<const unsigned char*>PyBytes_AS_STRING(data), n, &pos)
    except UnicodeDecodeError as exc:
        raise _truncated("ROWS body") from exc
    if pos != n:
        raise ProtocolError(f"{n - pos} bytes after the ROWS end marker")
    return result


cdef list _nodes(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos, bint with_role):
    cdef uint64_t count = _rd64(p, n, pos)
    if count > <uint64_t>((n - pos[0]) >> 4):  # id word + address word at least
        raise _truncated("SERVERS count")
    cdef list nodes = []
    cdef uint64_t k
    for k in range(count):
        node_id = PyLong_FromUnsignedLongLong(_rd64(p, n, pos))
        address = _rd_text(p, n, pos)
        role = PyLong_FromUnsignedLongLong(_rd64(p, n, pos)) if with_role else None
        nodes.append(_NodeInfo(node_id, address, role))
    return nodes


cdef list _files(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos):
    cdef uint64_t count = _rd64(p, n, pos)
    if count > <uint64_t>((n - pos[0]) >> 4):  # name word + size word at least
        raise _truncated("FILES count")
    cdef list files = []
    cdef uint64_t k
    for k in range(count):
        name = _rd_text(p, n, pos)
        files.append((name, _rd_blob(p, n, pos)))
    return files


def decode_response(rtype, body, format=1):
    """Decode a response body per protocol.RESPONSES. See protocol.pure.decode_response."""
    layout = _RESPONSES.get(rtype)
    if layout is None:
        raise ProtocolError(f"unknown response type {rtype!r}")
    if rtype == _ROWS:
        return decode_rows(body)
    cdef tuple kinds = _RESPONSE_KINDS[rtype]
    cdef bytes data = _as_bytes(body)
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t pos = 0
    cdef int kind
    cdef list values = []
    try:
        for kind in kinds:
            if kind == K_U64:
                values.append(PyLong_FromUnsignedLongLong(_rd64(p, n, &pos)))
            elif kind == K_U32:
                values.append(_rd32(p, n, &pos))
            elif kind == K_PAD32:
                _rd32(p, n, &pos)
            elif kind == K_TEXT:
                values.append(_rd_text(p, n, &pos))
            elif kind == K_NODES:
                values.append(_nodes(p, n, &pos, format != 0))
            else:  # K_FILES
                values.append(_files(p, n, &pos))
    except UnicodeDecodeError as exc:
        raise _truncated(f"{layout.name} body") from exc
    if pos != n:
        raise ProtocolError(f"{n - pos} unexpected bytes at the end of {layout.name}")
    return _shape_result(layout, values)
