"""Contract: the async face (kvstore.AsyncKV) on every backend: a blocking handle's
``kv.aio`` awaited from another loop (each call hops to the backend's loop) and
``open_async`` on the caller's loop."""

from __future__ import annotations

import asyncio

import pytest

import kvstore
from kvstore import EventType, Put, Value


def test_async_calls_give_the_blocking_results(env):
    kv = env.kv.aio
    k = env.k("a")

    async def scenario() -> None:
        r = await kv.put(k, b"1")
        assert await kv.get(k) == b"1" == env.other.get(k)
        assert (await kv.get_kv(k)).mod_revision == r.revision
        assert await kv.get(k, revision=r.revision) == b"1"
        t = await kv.txn([Value(k) == b"1"], [Put(k, b"2")], [])
        assert t.succeeded and env.other.get(k) == b"2"
        assert not await kv.tas(k, b"1", b"3")
        seq = await kv.create(env.k("s-"), b"x", sequence=True)
        assert seq.startswith(env.k("s-")) and env.other.get(seq) == b"x"
        assert [x.key for x in (await kv.get_prefix(env.ns)).kvs] == sorted([k, seq])
        lease = await kv.grant(30)
        assert (await kv.ttl(lease)).granted_ttl == 30
        await kv.revoke(lease)
        with pytest.raises(kvstore.LeaseNotFound):
            await kv.keepalive(lease)
        assert await kv.delete(k) and await kv.get(k) is None
        assert await kv.revision() == env.other.revision()

    asyncio.run(scenario())


def test_async_watch_waits_without_blocking_the_loop(env):
    kv, other = env.kv.aio, env.other.aio
    p = env.k("w/")

    async def scenario() -> tuple[list[tuple[EventType, bytes]], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async def writer() -> None:
            await asyncio.sleep(0.2)
            for i in range(3):
                await other.put(p + b"%d" % i, b"v")
            await other.delete(p + b"0")

        seen: list[tuple[EventType, bytes]] = []
        tick_task = asyncio.ensure_future(ticker())
        async with await kv.watch_prefix(p) as events:
            write_task = asyncio.ensure_future(writer())
            async for ev in events:
                seen.append((ev.type, ev.key))
                if len(seen) == 4:
                    break
            await write_task
        ticked = ticks
        tick_task.cancel()
        return seen, ticked

    seen, ticks = asyncio.run(scenario())
    assert seen == [(EventType.PUT, p + b"0"), (EventType.PUT, p + b"1"), (EventType.PUT, p + b"2"),
                    (EventType.DELETE, p + b"0")]
    assert ticks > 0   # the loop ran other tasks while the watch waited


def test_async_lock_excludes_across_handles(env):
    handles = [env.kv.aio, env.fresh().aio]
    name = env.k("lock")
    inside: list[int] = []
    overlaps: list[int] = []

    async def worker(i: int) -> None:
        for _ in range(3):
            async with await handles[i % 2].lock(name, timeout=60):
                if inside:
                    overlaps.append(i)
                inside.append(i)
                await asyncio.sleep(0.01)   # other tasks run while the lock is held
                inside.remove(i)

    async def scenario() -> None:
        await asyncio.gather(*(worker(i) for i in range(4)))

    asyncio.run(scenario())
    assert overlaps == [] and inside == []


def test_open_async_and_close(env):
    async def scenario() -> bool:
        # a raft:// URL names a member, and env.url's member is open already: use a spare
        kv = env.fresh().aio if env.name == "raft" else await kvstore.open_async(env.url)
        async with kv:
            if env.name in ("cowsql", "etcd"):   # asyncio clients: started on this loop
                assert kv.loop is asyncio.get_running_loop()
            await kv.put(env.k("o"), b"1")
            assert env.other.get(env.k("o")) == b"1"
        return kv.closed

    assert asyncio.run(scenario())


def test_watch_batch_returns_whole_revisions(env):
    p = env.k("b/")

    async def scenario() -> tuple[list[list[bytes]], list[int]]:
        kv = env.kv.aio
        async with await kv.watch_prefix(p) as stream:
            assert await stream.batch(0.05) == []          # nothing yet: a timeout
            r = await kv.txn([], [Put(p + b"1", b"a"), Put(p + b"2", b"b"), Put(p + b"3", b"c")])
            await kv.put(p + b"4", b"d")
            first = await stream.batch(30, max_events=1)   # one revision holds 3 events
            second = await stream.batch(30)
            stream.cancel()
            assert await stream.batch(1) is None           # cancelled
        assert first is not None and second is not None
        return [[e.key for e in first], [e.key for e in second]], [first[0].revision, r.revision]

    keys, (rev, txn_rev) = asyncio.run(scenario())
    assert keys == [[p + b"1", p + b"2", p + b"3"], [p + b"4"]] and rev == txn_rev
