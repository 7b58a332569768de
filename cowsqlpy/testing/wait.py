"""One polling helper for tests and harnesses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["wait_for"]


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition", interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns a truthy value (returned) or `timeout` passes.

    Exceptions from cowsqlpy or the OS count as "not yet".
    :raises TimeoutError: with `what` in the message.
    """
    from ..errors import Error

    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (Error, OSError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else ""))
        time.sleep(interval)
