"""Contract: size limits, empty keys, wrong types."""

from __future__ import annotations

import importlib.util

import pytest

import kvstore
from kvstore import MAX_KEY_BYTES, MAX_VALUE_BYTES


def test_value_size_limits(env):
    kv = env.kv
    big = b"x" * MAX_VALUE_BYTES
    kv.put(env.k("big"), big)
    assert kv.get(env.k("big")) == big
    with pytest.raises(kvstore.ValueTooLarge):
        kv.put(env.k("big"), big + b"x")
    assert MAX_VALUE_BYTES == 1536 * 1024


def test_key_limits_and_types(env):
    kv = env.kv
    with pytest.raises(kvstore.InvalidKey):
        kv.put(b"", b"x")
    with pytest.raises(kvstore.InvalidKey):
        kv.get("")
    with pytest.raises(kvstore.InvalidKey):
        kv.put(b"k" * (MAX_KEY_BYTES + 1), b"x")
    kv.put(env.ns + b"k" * (MAX_KEY_BYTES - len(env.ns)), b"ok")
    for bad in (None, 1, 1.5, ["a"], object()):
        with pytest.raises(kvstore.InvalidType):
            kv.put(env.k("t"), bad)
        with pytest.raises(kvstore.InvalidType):
            kv.get(bad)
    with pytest.raises(TypeError):  # also a builtin TypeError
        kv.put(env.k("t"), 5)
    with pytest.raises(kvstore.InvalidType):
        kv.get_range(env.k("a"), limit="3")
    with pytest.raises(kvstore.InvalidArgument):
        kv.get_range(env.k("a"), limit=-1)
    kv.put(bytearray(env.k("ba")), memoryview(b"mv"))
    assert kv.get(env.k("ba")) == b"mv"


def test_error_hierarchy():
    for cls in (kvstore.InvalidKey, kvstore.ValueTooLarge, kvstore.CompactedError,
                kvstore.LeaseNotFound, kvstore.LockTimeout, kvstore.InvalidType):
        assert issubclass(cls, kvstore.KVError)
    assert issubclass(kvstore.LockTimeout, TimeoutError)
    assert kvstore.LockTimeout is not TimeoutError
    assert "TimeoutError" not in kvstore.__all__ and "ConnectionError" not in kvstore.__all__


def test_open_unknown_and_unavailable_schemes():
    with pytest.raises(kvstore.UnsupportedScheme, match="unknown kvstore scheme"):
        kvstore.open("nosuch://x")
    with pytest.raises(kvstore.UnsupportedScheme):
        kvstore.open("no-scheme-here")
    if importlib.util.find_spec("kvstore.backends.cowsql") is None:
        with pytest.raises(kvstore.BackendUnavailable, match="cowsql"):
            kvstore.open("cowsql://127.0.0.1:9001/db")
    assert set(kvstore.BACKENDS) >= {"mem", "raft", "etcd", "cowsql"}
