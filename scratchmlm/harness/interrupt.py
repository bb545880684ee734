"""Stopping a loop politely: Ctrl-C (SIGINT) and SIGTERM ask it to stop instead of killing it.

    with StopRequests() as stop:
        while not stop.requested:
            ...one step...

Inside the ``with`` block the first Ctrl-C or SIGTERM only records the request (``requested``
is then the signal number), so the loop can finish its step and save; a second Ctrl-C raises
``KeyboardInterrupt`` at once. The handler does nothing else (no printing: a signal can arrive in
the middle of a write to the same stream). The previous handlers come back on exit. Handlers can
only be installed in the main thread; elsewhere (a worker thread) the block does nothing special.
"""

from __future__ import annotations

import signal
import threading

SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class Terminated(BaseException):
    """SIGTERM outside a ``StopRequests`` block (start-up, say): raised where the process was, like
    ``KeyboardInterrupt`` for Ctrl-C, so that ``finally`` blocks run and the command exits cleanly."""


def raise_terminated(_signum, _frame) -> None:
    """A SIGTERM handler for the whole command: ``signal.signal(signal.SIGTERM, raise_terminated)``."""
    raise Terminated


class StopRequests:
    def __init__(self):
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _on_signal(self, signum, _frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:   # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        if self.requested is None:
            self.requested = signum

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNAL_NAMES:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
