"""Containment: whatever the code under test does, a check finishes and reports.

Every call into your code goes through ``call``: an exception (a ``RuntimeError`` from ``.view``, a
``RecursionError``, an ``IndexError``) or a call that runs past ``CALL_TIME_LIMIT`` seconds becomes a
``Failed`` value, which the check grades as a failed item with a one-line reason and the last line of
*your* code that ran (the traceback's last frame outside the checks, ``adapters.py`` counting as
yours). The rest of the part, and every other part, is still graded. ``report.grading`` wraps a
whole check: if something still escapes (a wrong return type the check stumbles over), the report
gets one failed item in place of the items left ungraded, instead of a traceback.

The time limit is ``signal.setitimer`` on the main thread (SIGALRM, Unix): the alarm raises
``TimeLimitExceeded`` inside the running Python code, which stops a runaway loop. It is a
``BaseException``, so an ``except Exception`` in the code under test does not swallow it. Off the
main thread, or without SIGALRM (Windows), calls run without a limit. A single long C call (one
huge matmul) is only interrupted when it returns.
"""

from __future__ import annotations

import contextlib
import signal
import sysconfig
import threading
import time
import traceback
from pathlib import Path

CALL_TIME_LIMIT = 60.0           # seconds for one call into your code (the reference needs < 1 s)
PART_TIME_LIMIT = 600.0          # seconds for a whole part

CHECKS_DIR = Path(__file__).resolve().parent
STUDENT_FILES_IN_CHECKS = {"adapters.py"}          # the one file of the checks that you edit
_LIBRARY_DIRS = tuple(str(Path(p).resolve()) for p in {sysconfig.get_paths()["stdlib"],
                                                        sysconfig.get_paths()["purelib"],
                                                        sysconfig.get_paths()["platlib"]})
_TORCH_DIR = None


RAISED = "your code raised an exception here (or ran out of time): fix that line first"
YOUR_LINE = "last line of your code: "


class TimeLimitExceeded(BaseException):
    """Raised by the alarm inside code that ran past its time limit."""


class Failed:
    """What a call into your code gave instead of a value: the reason in one line and where."""

    def __init__(self, reason: str, where: str = ""):
        self.reason, self.where = reason, where

    def __str__(self) -> str:
        return f"{self.reason} (at {self.where})" if self.where else self.reason

    def __repr__(self) -> str:
        return f"Failed({str(self)!r})"


def _grader_file(filename: str) -> bool:
    path = Path(filename).resolve()
    return path.parent == CHECKS_DIR and path.name not in STUDENT_FILES_IN_CHECKS


def _library_file(filename: str) -> bool:
    global _TORCH_DIR
    if _TORCH_DIR is None:
        import torch
        _TORCH_DIR = str(Path(torch.__file__).resolve().parent)
    resolved = str(Path(filename).resolve())
    if resolved.startswith(_TORCH_DIR) or filename.startswith("<"):
        return True
    return any(resolved.startswith(d) for d in _LIBRARY_DIRS) and "scratchmlm" not in resolved


def where(error: BaseException) -> str:
    """``file:line in function: source`` of the last frame of ``error``'s traceback that is your code:
    not the checks' own files, not torch or the standard library (the last frame outside the checks if
    none is)."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if not _grader_file(frame.filename)]
    yours = [frame for frame in frames if not _library_file(frame.filename)]
    frame = (yours or frames or [None])[-1]
    if frame is None:
        return "the call itself: your function does not take the arguments the check passes (see adapters.py)"
    path = Path(frame.filename)
    try:
        shown = path.resolve().relative_to(CHECKS_DIR.parents[2])
    except ValueError:
        shown = path
    line = f": {frame.line.strip()}" if frame.line else ""
    return f"{shown}:{frame.lineno} in {frame.name}{line}"


def reason(error: BaseException) -> str:
    """The exception in one line."""
    if isinstance(error, TimeLimitExceeded):
        return str(error)
    message = " ".join(str(error).split())
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def failure(error: BaseException) -> Failed:
    return Failed(reason(error), where(error))


@contextlib.contextmanager
def time_limit(seconds: float, what: str = "the call"):
    """Raise ``TimeLimitExceeded`` in the running code after ``seconds`` (main thread, Unix only).
    Nested limits keep the earlier deadline; the outer one is restored on exit."""
    if (seconds is None or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return
    outer_remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    limit = min(seconds, outer_remaining) if outer_remaining > 0 else seconds
    own = not (outer_remaining > 0 and outer_remaining <= seconds)

    def alarm(signum, frame):
        raise TimeLimitExceeded(f"{what} ran longer than {seconds:g} s: stopped (an endless loop, or far "
                                f"too much work?)")

    previous = signal.signal(signal.SIGALRM, alarm) if own else None
    start = time.monotonic()
    if own:
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        if own:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer_remaining > 0:
                signal.setitimer(signal.ITIMER_REAL, max(outer_remaining - (time.monotonic() - start), 1e-3))


def call(function, *args, **kwargs):
    """``function(*args, **kwargs)``, or a ``Failed`` when it raises or runs past ``CALL_TIME_LIMIT``.
    A ``NotImplementedError`` passes through: the part is a stub, not wrong."""
    try:
        with time_limit(CALL_TIME_LIMIT, f"your {getattr(function, '__name__', 'code')}"):
            return function(*args, **kwargs)
    except NotImplementedError:
        raise
    except (Exception, TimeLimitExceeded) as error:      # RecursionError, MemoryError too: they are Exceptions
        return failure(error)


def raise_failed(value):
    """``value``, or ``StudentCodeFailed`` when it is a ``Failed``: for code that cannot go on without it."""
    if isinstance(value, Failed):
        raise StudentCodeFailed(value)
    return value


class StudentCodeFailed(Exception):
    def __init__(self, failed: Failed):
        super().__init__(str(failed))
        self.failed = failed


__all__ = ["RAISED", "YOUR_LINE", "CALL_TIME_LIMIT", "PART_TIME_LIMIT", "Failed", "TimeLimitExceeded", "StudentCodeFailed", "call",
           "raise_failed", "time_limit", "where"]
