"""The public face of the event loop behind cowsqlpy's synchronous API.

cowsqlpy's core is asyncio; synchronous callers (the DB-API driver, `SyncClient`,
`App`) run coroutines on one background loop thread (uvloop when installed).
Packages built on cowsqlpy (kvstore, demo, fusefs) and applications use the same
loop through these names:

- `background_loop()`: the loop thread, started on first use.
- `run_sync(coro, timeout=None)`: run `coro` there and wait for its result; raises
  `RuntimeError` when called from that loop's own thread.
- `call_soon(factory)`: schedule a coroutine there without waiting.
- `shutting_down()`: whether the interpreter is exiting (background work should stop).
- `new_event_loop()`: a uvloop loop when uvloop is installed, else the stock one
  (``COWSQLPY_LOOP=asyncio`` forces the stock one, for the background loop too).
- `wait_event(event, timeout)`: await an `asyncio.Event` with a timeout; whether it was set.
- `enable_busy_poll(loop, window)` / `busy_poll_of(loop)` / `BusyPoll` /
  `MAX_BUSY_POLL`: keep a loop polling for `window` seconds after network activity
  instead of sleeping (a VM thread's wake-up is most of a point read's latency).
- `StopSignals`: SIGTERM/SIGINT handling for a process that runs an App (start-up that
  a stop can interrupt, a closing hand-over a second signal cuts short).
"""

from __future__ import annotations

from ._loop import (
    MAX_BUSY_POLL,
    BusyPoll,
    background_loop,
    busy_poll_of,
    call_soon,
    enable_busy_poll,
    new_event_loop,
    run_sync,
    shutting_down,
    wait_event,
)
from ._runner import StopSignals

__all__ = [
    "MAX_BUSY_POLL",
    "BusyPoll",
    "StopSignals",
    "background_loop",
    "busy_poll_of",
    "call_soon",
    "enable_busy_poll",
    "new_event_loop",
    "run_sync",
    "shutting_down",
    "wait_event",
]
