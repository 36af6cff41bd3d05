"""Clocks: the wall clock and a manual clock for tests.

Durable timers (retry backoff, run deadlines) are stored as wall-clock times, so that they
survive restarts, and are driven by a :class:`Clock`. Step timeouts are not: they are real
deadlines on real processes and always use ``time.monotonic``.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What the engine needs from a clock."""

    def now(self) -> float:
        """Return the current time in seconds since the epoch."""
        ...

    def wait(self, cond: threading.Condition, deadline: float | None) -> None:
        """Block on ``cond`` (held by the caller) until notified or until ``deadline``.

        Args:
            cond: a condition the caller holds; it is released while waiting.
            deadline: a time as returned by :meth:`now`, or None to wait for a notify.
        """
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        """Return ``time.time()``."""
        return time.time()

    def wait(self, cond: threading.Condition, deadline: float | None) -> None:
        """Wait on ``cond`` until notified or the deadline passes."""
        if deadline is None:
            cond.wait()
        else:
            cond.wait(max(0.0, deadline - time.time()))


class ManualClock:
    """A clock that moves only when told to: ``advance`` skips time at once.

    Waiters blocked in :meth:`wait` are woken whenever the time changes, so a 24-hour backoff
    completes as soon as a test advances the clock past it.

    Args:
        start: the initial time in seconds since the epoch.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self._waiters: weakref.WeakSet[threading.Condition] = weakref.WeakSet()

    def now(self) -> float:
        """Return the manual time."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` and wake every waiter; return the new time."""
        if seconds < 0:
            raise ValueError(f"ManualClock.advance: seconds must be >= 0, got {seconds}")
        with self._lock:
            self._now += seconds
            waiters = list(self._waiters)
        for cond in waiters:
            with cond:
                cond.notify_all()
        return self._now

    def wait(self, cond: threading.Condition, deadline: float | None) -> None:
        """Wait on ``cond`` until notified (by a sender or by :meth:`advance`)."""
        with self._lock:
            self._waiters.add(cond)
        if deadline is not None and deadline <= self._now:
            return
        cond.wait()
