"""The cyclic garbage collector while engines run: a full collection walks what is new.

Why: CPython's collector is stop-the-world. A full (generation 2) collection walks every
tracked object in the process while holding the GIL, so every thread, and every event
loop, waits for it. An engine with ten thousand runs in flight holds some three hundred
thousand such objects (supervisors, steps, promises, the callers' tasks), and a full
collection over them took 60-80 ms on a 2-core machine: the longest stall of an event loop
serving ``trigger_async`` (bench B16). It finds nothing to free: what the engine allocates
per run forms no reference cycles (``tests/runtime/test_collector.py`` checks it), so
reference counting frees it all.

How (``collector="freeze"``, the default): after each full collection, its survivors move
to the permanent generation (``gc.freeze()``). Reference counting still frees them as
usual, but the next full collection walks only what was made since: its pause is that of
the objects young enough to be garbage, not of everything alive. Python still collects
generations 0 and 1 as it always does.

What that defers is the collection of a *cycle* among frozen objects (made by user code,
say). Those are collected at the next **thaw**: ``gc.unfreeze()``, after which the next
full collection walks everything once and freezing resumes. A thaw happens at the end of
a full collection once ``THAW_AFTER`` seconds have passed since the last one and the
process is quiet (the frozen population is back near its low-water mark, so the walk is
short), and at the latest after ``THAW_AT_MOST`` seconds, quiet or not. When the last
engine that uses the policy stops, the process is left as it was found: unfrozen, unless
the application had frozen objects itself before.

``collector="python"`` leaves the collector alone.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["CollectorPolicy", "policy"]

#: Seconds between thaws at the least (a thaw then waits for a quiet moment).
THAW_AFTER = 60.0
#: Seconds between thaws at the most (thawed then even if never quiet).
THAW_AT_MOST = 600.0
#: Quiet: at most this many times the low-water mark of frozen objects (plus ``_SLACK``).
_QUIET = 1.5
_SLACK = 20_000
#: Objects the interpreter itself keeps in the permanent generation, as counted when this
#: module was imported: 0 on Python 3.11, a few hundred on 3.12 (which puts them back at
#: each collection, even after ``gc.unfreeze()``). More than this at an engine's start means
#: the application froze objects of its own.
BASELINE = gc.get_freeze_count()


class CollectorPolicy:
    """Freezes the survivors of each full collection while at least one engine runs.

    Process-wide (the collector is): engines :meth:`acquire` it when they start and
    :meth:`release` it when they stop; it acts while the count is above zero.

    Args:
        clock: monotonic seconds (a test drives the thaws with its own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Reentrant: the collector may call back on a thread that holds it (an allocation
        # inside acquire or release). Held by the callback too: a thread switch inside the
        # callback must not let a release unfreeze between its check and its freeze.
        self._lock = threading.RLock()
        self._users = 0
        self._found_frozen = False  # the application had frozen objects of its own
        self._last_thaw = 0.0
        self._low = 0  # fewest objects frozen after a full collection since the last thaw
        self.freezes = 0
        self.thaws = 0

    @property
    def active(self) -> bool:
        """True while some engine uses the policy."""
        return self._users > 0

    def acquire(self) -> None:
        """An engine starts: act from now on (the first one installs the callback)."""
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            self._found_frozen = gc.get_freeze_count() > BASELINE
            self._last_thaw = self._clock()
            self._low = 0
            gc.callbacks.append(self._on_collect)

    def release(self) -> None:
        """An engine stops: the last one removes the callback and unfreezes."""
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users > 0:
                return
            if self._on_collect in gc.callbacks:
                gc.callbacks.remove(self._on_collect)
            if not self._found_frozen:
                gc.unfreeze()  # cycles among the objects it froze are collected as usual

    def _on_collect(self, phase: str, info: dict[str, Any]) -> None:
        # Called by the collector, on whichever thread allocated, with automatic collection
        # suspended until it returns: short.
        if phase != "stop" or info["generation"] != 2:
            return
        with self._lock:
            if self._users > 0:
                self._after_full_collection()

    def _after_full_collection(self) -> None:
        now = self._clock()
        frozen = gc.get_freeze_count()
        since = now - self._last_thaw
        quiet = frozen <= self._low * _QUIET + _SLACK
        if (since >= THAW_AFTER and quiet) or since >= THAW_AT_MOST:
            gc.unfreeze()  # the next full collection walks everything once
            self._last_thaw = now
            self._low = 0
            self.thaws += 1
            return
        gc.freeze()
        self.freezes += 1
        after = gc.get_freeze_count()
        if self._low == 0 or after < self._low:
            self._low = after

    def stats(self) -> dict[str, int]:
        """Objects frozen now, and the freezes and thaws so far (for ``engine.health()``)."""
        return {"frozen": gc.get_freeze_count(), "freezes": self.freezes, "thaws": self.thaws}


#: The process's policy, shared by its engines.
policy = CollectorPolicy()
