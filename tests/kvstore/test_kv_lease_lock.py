"""Contract: leases, temp keys, locks (in-process threads)."""

from __future__ import annotations

import threading
import time

import pytest

import kvstore
from kvstore.testing import wait_until


def test_lease_grant_ttl_keepalive_revoke(env):
    kv = env.kv
    lease = kv.grant(30)
    assert lease.ttl >= 30
    kv.put(env.k("l1"), b"1", lease=lease)
    kv.put(env.k("l2"), b"2", lease=lease.id)
    info = kv.ttl(lease)
    assert 0 < info.ttl <= info.granted_ttl and set(info.keys) == {env.k("l1"), env.k("l2")}
    assert kv.get_kv(env.k("l1")).lease == lease.id
    assert kv.keepalive(lease) >= 30
    rev = kv.revision()
    kv.revoke(lease)
    assert kv.get(env.k("l1")) is None and kv.get(env.k("l2")) is None
    assert kv.get(env.k("l1"), revision=rev) == b"1"
    for fn in (kv.revoke, kv.keepalive, kv.ttl):
        with pytest.raises(kvstore.LeaseNotFound):
            fn(lease)
    with pytest.raises(kvstore.LeaseNotFound):
        kv.put(env.k("l3"), b"x", lease=lease)


def test_lease_expiry_deletes_keys(env):
    kv = env.kv
    lease = kv.grant(2)   # 1 s can pass between two calls on a loaded 2-CPU machine
    kv.put(env.k("exp"), b"x", lease=lease)
    with kv.watch_key(env.k("exp")) as w:
        wait_until(lambda: kv.get(env.k("exp")) is None, timeout=30, what="lease expiry")
        ev = w.get(timeout=30)
    assert ev.type is kvstore.EventType.DELETE
    with pytest.raises(kvstore.LeaseNotFound):
        kv.keepalive(lease)


def test_keepalive_keeps_key(env):
    kv = env.kv
    lease = kv.grant(2)
    kv.put(env.k("ka"), b"x", lease=lease)
    deadline = time.monotonic() + 5  # more than twice the TTL, kept alive
    while time.monotonic() < deadline:
        kv.keepalive(lease)
        assert kv.get(env.k("ka")) == b"x"
        time.sleep(0.3)
    kv.revoke(lease)


def test_temp_key_lifecycle(env):
    h = env.fresh()
    t = h.temp_key(env.k("tmp"), b"alive")
    assert env.kv.get(env.k("tmp")) == b"alive"
    t2 = h.temp_key(env.k("tmp2"), ttl=5)
    assert env.kv.get_kv(env.k("tmp2")).lease == t2.lease != t.lease
    t2.release()
    assert env.kv.get(env.k("tmp2")) is None
    # the session keepalive keeps it past several TTLs (session_ttl=2 in tests)
    time.sleep(3)
    assert env.kv.get(env.k("tmp")) == b"alive"
    h.close()  # closing the handle removes its temp keys at once
    assert env.kv.get(env.k("tmp")) is None


def test_ephemeral_create(env):
    h = env.fresh()
    h.create(env.k("eph"), b"1", ephemeral=True)
    assert env.kv.get_kv(env.k("eph")).lease != 0
    h.close()
    assert env.kv.get(env.k("eph")) is None


def test_lock_mutual_exclusion_threads(env):
    name = env.k("lock").decode()
    counter = env.k("cnt")
    inside = []
    tokens = []
    errors = []

    def work(h):
        try:
            for _ in range(5):
                with h.lock(name, timeout=60) as lk:
                    inside.append(1)
                    assert len(inside) == 1
                    tokens.append(lk.fencing_token)
                    v = int(h.get(counter) or b"0")
                    h.put(counter, str(v + 1))
                    inside.pop()
        except Exception as e:  # asserted below
            errors.append(e)
    handles = [env.kv, env.other, env.kv, env.other]
    ts = [threading.Thread(target=work, args=(h,)) for h in handles]
    for t in ts:
        t.start()
    for t in ts:
        t.join(180)
    assert not errors, errors
    assert env.kv.get(counter) == b"20"
    assert tokens == sorted(tokens) and len(set(tokens)) == 20  # fencing tokens increase


def test_lock_timeout_and_release(env):
    name = env.k("tl")
    held = env.kv.lock(name)
    assert held.is_held()
    with pytest.raises(kvstore.LockTimeout):
        env.other.lock(name, timeout=0.5)
    with pytest.raises(TimeoutError):
        env.other.lock(name, timeout=0.2)
    token = held.fencing_token
    held.release()
    held.release()  # idempotent
    with env.other.lock(name, timeout=30) as l2:
        assert l2.fencing_token > token
    # nothing left behind by the timed-out waiters
    assert len(env.kv.get_prefix(b"__kvstore/lock/" + name + b"/")) == 0


def test_lock_freed_when_holder_closes(env):
    h = env.fresh()
    name = env.k("dead")
    h.lock(name)
    h.close()  # revokes the session: lock freed
    with env.kv.lock(name, timeout=30):
        pass


def test_renewing_temp_key_comes_back_after_its_lease_is_lost(env):
    h = env.fresh()
    k = env.k("registered")
    with h.temp_key(k, b"me", ttl=3, renew=True) as tk:
        first = tk.lease
        h.revoke(first)     # what an outage longer than the TTL does to the lease
        assert h.get(k) is None
        back = wait_until(lambda: h.get_kv(k), timeout=30, what="the key put again")
        assert back.value == b"me" and back.lease == tk.lease != first
    assert h.get(k) is None    # release deletes it (and revokes the new lease)
    with pytest.raises(kvstore.InvalidArgument):
        h.temp_key(k, b"x", renew=True)   # the session lease is shared: no renew on it
