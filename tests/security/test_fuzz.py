"""A hypothesis fuzzer against a guarded node in a child process: structured frames of
every request type with mutated fields, truncations, lying headers and random bytes.
After every example the engine process must be alive; at the end it must still serve.

Bounded for CI: COWSQLPY_FUZZ_EXAMPLES (default 2500) examples per test, about a minute
in all on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cowsqlpy import codec
from cowsqlpy import protocol as P

from .conftest import GuardedNode
from .raw import frame

EXAMPLES = int(os.environ.get("COWSQLPY_FUZZ_EXAMPLES", "2500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure prints its bytes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_HEADER = struct.Struct("<IBBH")
_SENTINEL = codec.encode_request(P.LEADER)


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardedNode]:
    node = GuardedNode(Path(tmp_path_factory.mktemp("fuzz")))
    try:
        yield node
    finally:
        node.close()


SQL = st.sampled_from(
    [
        "SELECT 1",
        "CREATE TABLE IF NOT EXISTS f (k INTEGER PRIMARY KEY, v)",
        "INSERT INTO f (v) VALUES (?)",
        "SELECT * FROM f WHERE k > ?",
        "UPDATE f SET v = ? WHERE k = ?",
        "DELETE FROM f WHERE k = ?",
        "INSERT INTO f (v) VALUES (1) RETURNING k",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "PRAGMA journal_mode=DELETE",
        "PRAGMA page_size=512",
        "PRAGMA table_info(f)",
        "VACUUM",
        "ATTACH 'x' AS y",
        "SELECT load_extension('x')",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 500) SELECT x FROM c",
        "",
        ";",
        "SELEC",
        "SELECT * FROM pragma_journal_mode('delete')",
        "PRAGMA user_version = 7",
        "SAVEPOINT a",
        "RELEASE a",
    ]
) | st.text(max_size=40)
VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=30).filter(lambda s: "\0" not in s),
    st.binary(max_size=40),
)
PARAMS = st.lists(VALUE, max_size=6)
SMALL = st.integers(0, 8)
ID = st.integers(2, 2**20)  # never the node's own id (a client REMOVE of it is allowed by design)

ARGS = {
    P.LEADER: st.tuples(st.just(0)),
    P.CLIENT: st.tuples(st.integers(0, 2**64 - 1)),
    P.OPEN: st.tuples(
        st.sampled_from(["f", "g", "file:x", "", "a" * 300])
        | st.text(max_size=10).filter(lambda s: "\0" not in s),
        st.just(0),
        st.just("volatile"),
    ),
    P.PREPARE: st.tuples(SMALL, SQL),
    P.EXEC: st.tuples(SMALL, SMALL, PARAMS),
    P.QUERY: st.tuples(SMALL, SMALL, PARAMS),
    P.FINALIZE: st.tuples(SMALL, SMALL),
    P.EXEC_SQL: st.tuples(SMALL, SQL, PARAMS),
    P.QUERY_SQL: st.tuples(SMALL, SQL, PARAMS),
    P.INTERRUPT: st.tuples(SMALL),
    P.ADD: st.tuples(ID, st.just("127.0.0.1:1")),
    P.ASSIGN: st.tuples(
        ID, st.sampled_from([P.STANDBY, P.SPARE])
    ),  # a dead voter would cost the quorum
    P.DUMP: st.tuples(st.sampled_from(["f", "g", "nope"])),
    P.CLUSTER: st.tuples(st.sampled_from([0, 1])),
    P.TRANSFER: st.tuples(ID),
    P.DESCRIBE: st.tuples(st.just(0)),
    P.WEIGHT: st.tuples(st.integers(0, 2**64 - 1)),
}


def _encode(rtype: int, args: tuple[object, ...]) -> bytes | None:
    try:
        return codec.encode_request(rtype, *args)
    except Exception:  # values the codec refuses (NUL, ranges) are not sent
        return None


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    """A well-formed request of a random type, maybe mutated."""
    rtype = draw(st.sampled_from(sorted(ARGS)))
    data = _encode(rtype, draw(ARGS[rtype])) or codec.encode_request(P.LEADER)
    mutation = draw(st.sampled_from(["none", "none", "flip", "truncate", "extend", "header"]))
    body = bytearray(data[8:])
    words, ftype, schema, extra = _HEADER.unpack_from(data)
    if mutation == "flip" and body:
        for _ in range(draw(st.integers(1, 4))):
            body[draw(st.integers(0, len(body) - 1))] ^= draw(st.integers(1, 255))
    elif mutation == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
        body += bytes(-len(body) % 8) if draw(st.booleans()) else b""
        words = len(body) // 8
        body = body[: words * 8]
    elif mutation == "extend":
        body += draw(st.binary(min_size=8, max_size=64))
        body = body[: len(body) // 8 * 8]
        words = len(body) // 8
    elif mutation == "header":
        ftype = draw(st.integers(0, 255)) if draw(st.booleans()) else ftype
        schema = draw(st.integers(0, 255)) if draw(st.booleans()) else schema
        if draw(st.booleans()):
            words = draw(st.integers(0, len(body) // 8))
            body = body[: words * 8]
    return _HEADER.pack(words, ftype, schema, extra) + bytes(body)


RANDOM_FRAME = st.builds(
    lambda t, s, b: frame(t, b[: len(b) // 8 * 8], schema=s),
    st.integers(0, 255),
    st.integers(0, 3),
    st.binary(max_size=200),
)


def _exchange(node: GuardedNode, payload: bytes) -> None:
    """Send the handshake, `payload` and a LEADER sentinel, half-close, read until the
    front closes (it answers every whole frame first). No close within 10 s: wedged."""
    host, port = node.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(codec.handshake() + payload + _SENTINEL)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return  # closed by the front part-way: fine
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return
            except TimeoutError:
                pytest.fail(f"no reply within 10 s (wedged) after {payload.hex()}")
            if not data:
                return


def _check_alive(node: GuardedNode, payload: bytes) -> None:
    assert node.alive(), f"engine died after {payload.hex()}:\n{node.log()}"


@FUZZ
@given(frames=st.lists(structured(), min_size=1, max_size=5))
def test_structured_frames(fuzz_node: GuardedNode, frames: list[bytes]) -> None:
    payload = b"".join(frames)
    _exchange(fuzz_node, payload)
    _check_alive(fuzz_node, payload)


@FUZZ
@given(frames=st.lists(RANDOM_FRAME, min_size=1, max_size=4), tail=st.binary(max_size=64))
def test_random_frames_and_bytes(fuzz_node: GuardedNode, frames: list[bytes], tail: bytes) -> None:
    payload = b"".join(frames) + tail
    _exchange(fuzz_node, payload)
    _check_alive(fuzz_node, payload)


def test_the_fuzzed_node_still_serves(fuzz_node: GuardedNode) -> None:
    fuzz_node.assert_serving()
    assert fuzz_node.front.stats.refused_requests > 0
