"""``af.CircuitBreaker``: stop calling a dependency that keeps failing, for a while.

One breaker object is shared by every step (and every run) it is given to. It counts
consecutive failed attempts; at ``failure_threshold`` it opens, and attempts fail at once with
:class:`~actorflow.errors.CircuitOpen` (without running) for ``reset_timeout``. Then it lets
``half_open_max`` trial attempts through: a success closes it, a failure opens it again.
Its state lives in the engine's memory (a restart starts closed), and it reads the engine's
clock, so a ``ManualClock`` drives it in tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from actorflow.definition._options import parse_duration

__all__ = ["CircuitBreaker"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
#: Shortest wait before retrying an attempt an open circuit stopped (seconds).
_MIN_RETRY = 0.5


class CircuitBreaker:
    """A circuit breaker for steps: ``.step(name, fn, breaker=cb)``, ``ctx.step(..., breaker=cb)``.

    Args:
        failure_threshold: consecutive failed attempts that open the circuit.
        reset_timeout: how long it stays open (seconds or ``"30s"``) before trials.
        half_open_max: trial attempts let through at once while half-open.
        name: shown in ``engine.statistics()["breakers"]`` (default ``breaker-<n>``).

    Raises:
        ValueError: a bad argument (named).
    """

    _count = 0

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: Any = 30.0,
        half_open_max: int = 1,
        name: str | None = None,
    ) -> None:
        for what, value in (
            ("failure_threshold", failure_threshold),
            ("half_open_max", half_open_max),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CircuitBreaker {what}: expected an integer >= 1, got {value!r}")
        self.failure_threshold = failure_threshold
        self.reset_timeout = parse_duration(reset_timeout, "CircuitBreaker reset_timeout")
        self.half_open_max = half_open_max
        CircuitBreaker._count += 1
        self.name = name or f"breaker-{CircuitBreaker._count}"
        self._lock = threading.Lock()
        self._clock: Callable[[], float] = time.time
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0
        self.opened = 0  # times it opened
        self.rejected = 0  # attempts failed fast

    def reset(self) -> None:
        """Close the circuit and zero its counters (between tests: a breaker is shared)."""
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._trials = 0
            self.opened = 0
            self.rejected = 0

    def bind(self, clock: Callable[[], float]) -> None:
        """Read time from ``clock`` (the engine's) from now on."""
        self._clock = clock

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"``.

        An open circuit past its ``reset_timeout`` reads ``"half_open"``.
        """
        with self._lock:
            self._advance()
            return self._state

    def _advance(self) -> None:
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            self._state = HALF_OPEN
            self._trials = 0

    def allow(self) -> bool:
        """Whether an attempt may start now (while half-open, each yes is a trial)."""
        with self._lock:
            self._advance()
            if self._state == CLOSED:
                return True
            if self._state == HALF_OPEN and self._trials < self.half_open_max:
                self._trials += 1
                return True
            self.rejected += 1
            return False

    def retry_after(self, delay: float) -> float:
        """The delay before retrying an attempt this open circuit stopped.

        The policy's ``delay``, but not before the circuit may let a trial through, and
        never at once: an open circuit and a zero delay must not spin.
        """
        with self._lock:
            left = 0.0
            if self._state == OPEN:
                left = self._opened_at + self.reset_timeout - self._clock()
        return max(delay, left, _MIN_RETRY)

    def succeeded(self) -> None:
        """An attempt succeeded: the circuit closes."""
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._trials = 0

    def failed(self) -> None:
        """An attempt failed (error, timeout, crash)."""
        with self._lock:
            if self._state == HALF_OPEN:
                self._open()
            elif self._state == CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._open()

    def _open(self) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self._trials = 0
        self.opened += 1

    def snapshot(self) -> dict[str, Any]:
        """State and counters, for statistics."""
        with self._lock:
            self._advance()
            return {
                "state": self._state,
                "consecutive_failures": self._failures,
                "opened": self.opened,
                "rejected": self.rejected,
                "failure_threshold": self.failure_threshold,
                "reset_timeout": self.reset_timeout,
            }

    def describe(self) -> dict[str, Any]:
        """Its settings (for stored definitions)."""
        return {
            "name": self.name,
            "failure_threshold": self.failure_threshold,
            "reset_timeout": self.reset_timeout,
            "half_open_max": self.half_open_max,
        }

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name} {self.state}>"
