"""The process side of running an App (`python -m cowsqlpy node`, `python -m demo`):
SIGTERM/SIGINT ask it to stop, start-up waits for the node unless a stop comes
first, and the closing hand-over can be cut short by a second signal."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Installs SIGTERM/SIGINT handlers that set ``stopped`` (main thread only)."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.received: list[int] = []
        for sig in _SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        self.stopped.set()

    def wait_ready(self, app: Any) -> bool:
        """Wait for ``app.ready()``; False if a stop signal came first."""
        while not self.stopped.is_set():
            try:
                app.ready(timeout=0.2)
                return True
            except TimeoutError:
                continue
        return False

    def close(self, close: Callable[[], None], abandon: Callable[[], None], log: logging.Logger) -> int:
        """Run ``close`` (the hand-over) in a thread; a second signal meanwhile calls
        ``abandon`` instead of waiting. The exit code: 0, or 1 when cut short."""
        second = threading.Event()
        for sig in _SIGNALS:
            signal.signal(sig, lambda s, f: second.set())
        closer = threading.Thread(target=close, daemon=True)
        closer.start()
        while closer.is_alive() and not second.is_set():
            closer.join(0.1)
        if second.is_set() and closer.is_alive():
            log.warning("second signal: stopping without finishing the hand-over")
            abandon()
            return 1
        return 0
