"""The event loop behind the synchronous API.

The client core is asyncio. Synchronous callers (the DB-API driver, the sync
admin client) run coroutines on one background loop thread (uvloop when
installed), so there is one implementation of every protocol exchange.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_stopping = False


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else the stock one;
    ``COWSQLPY_LOOP=asyncio`` forces the stock one (the test suite's second pass)."""
    if os.environ.get("COWSQLPY_LOOP", "") == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            _thread = threading.Thread(target=run, name="cowsqlpy-loop", daemon=True)
            _thread.start()
            ready.wait()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run `coro` on the background loop and wait for its result in this thread."""
    loop = _loop
    if loop is None or loop.is_closed():
        loop = background_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("synchronous cowsqlpy call made from inside its own event loop; use the async API")
    if _stopping:
        coro.close()
        raise RuntimeError("cowsqlpy's event loop has shut down (interpreter exit)")
    call = _SyncCall(coro)
    loop.call_soon_threadsafe(call.start, loop)
    return call.wait(loop, timeout)


class _SyncCall:
    """One `run_sync` call: a task on the loop and a plain lock the caller waits on.

    Half the cost of `asyncio.run_coroutine_threadsafe` (measured 55 against 110 us
    a call): no concurrent Future, no Condition, no chained callbacks; every DB-API
    call makes one of these hops."""

    __slots__ = ("coro", "done", "task", "cancelled")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.done = threading.Lock()
        self.done.acquire()
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:  # on the loop
        if self.cancelled:
            self.coro.close()
            self.done.release()
            return
        self.task = loop.create_task(self.coro)
        self.task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.done.release()

    def _cancel_on_loop(self) -> None:
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()

    def wait(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> Any:
        try:
            if not self.done.acquire(timeout=-1 if timeout is None else timeout):
                raise concurrent.futures.TimeoutError()
        except BaseException:  # the timeout, or KeyboardInterrupt while waiting
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._cancel_on_loop)
            raise
        if self.task is None:
            raise concurrent.futures.CancelledError()
        return self.task.result()


def shutting_down() -> bool:
    """True once the interpreter is exiting and the background loop has been stopped."""
    return _stopping


def call_soon(coro_factory: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Start a coroutine on the background loop without waiting (finalizers use this)."""
    with _lock:
        loop = _loop
    if loop is None or loop.is_closed() or _stopping:
        return
    loop.call_soon_threadsafe(lambda: asyncio.ensure_future(coro_factory()))


def _shutdown() -> None:
    global _stopping
    _stopping = True
    with _lock:
        loop = _loop
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


atexit.register(_shutdown)


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds pass; whether it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


class BusyPoll:
    """Keeps an event loop polling its sockets, instead of sleeping in epoll, for
    `window` seconds after the last network activity (`touch`).

    On a virtual machine a sleeping thread takes tens of microseconds to wake:
    here a point read's round trip to an in-process node is 62 us when the client
    sleeps for the reply and 26 us when it polls. With one request at a time that
    wake-up is most of the latency; Go's runtime spins the same way before
    parking a thread. The price is CPU: up to `window` of one core after each
    burst of activity, none while idle. Use `enable_busy_poll`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, window: float) -> None:
        self.loop = loop
        self.window = window
        self.spinning = False
        self.spins = 0  # loop iterations spent polling (tests, metrics)
        self._last = 0.0

    def touch(self) -> None:
        """Activity now: keep polling until `window` has passed without any."""
        self._last = time.perf_counter()
        if not self.spinning:
            self.spinning = True
            self.loop.call_soon(self._spin)

    def _spin(self) -> None:
        # A ready callback makes the loop poll with a zero timeout on its next turn.
        if time.perf_counter() - self._last < self.window:
            self.spins += 1
            self.loop.call_soon(self._spin)
        else:
            self.spinning = False


#: the longest busy-poll window `enable_busy_poll` takes (seconds)
MAX_BUSY_POLL = 0.01

_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BusyPoll] = weakref.WeakKeyDictionary()


def enable_busy_poll(loop: asyncio.AbstractEventLoop, window: float) -> BusyPoll | None:
    """Busy-poll `loop` for `window` seconds after each network event of cowsqlpy's
    connections on it (and each `touch` of the returned poller); 0 turns it off."""
    if isinstance(window, bool) or not isinstance(window, int | float) or not 0 <= window <= MAX_BUSY_POLL:
        raise ValueError(f"busy-poll window must be 0..{MAX_BUSY_POLL} s, got {window!r}")
    if not window:
        _pollers.pop(loop, None)
        return None
    poller = _pollers[loop] = BusyPoll(loop, float(window))
    return poller


def busy_poll_of(loop: asyncio.AbstractEventLoop) -> BusyPoll | None:
    """The poller `enable_busy_poll` set up for `loop`, if any."""
    return _pollers.get(loop)
