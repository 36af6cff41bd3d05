"""Identifiers and status enums shared by every layer.

Run ids are time-ordered (48-bit milliseconds, then 48 random bits, in hex) so that the runs
database iterates oldest to newest and ``engine.runs()`` can read newest first without an index.
Within one process ids are strictly increasing even within one millisecond.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from typing import NewType

__all__ = ["ParentClosePolicy", "RunId", "RunStatus", "StepKey", "StepStatus", "new_run_id"]

RunId = NewType("RunId", str)
StepKey = NewType("StepKey", str)


class RunStatus(enum.StrEnum):
    """Where a run is in its life."""

    QUEUED = "queued"  # waiting for a slot under the workflow's concurrency limit
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # A code workflow whose own code failed unexpectedly (a bug, a nondeterministic change):
    # it keeps its history and is restarted by its panic policy or by ``engine.restart``.
    PANICKED = "panicked"
    # A code workflow that called ``ctx.continue_as_new``: a new run carries on.
    CONTINUED = "continued"
    # Its workflow, or a step its plan reaches, is not defined on the engine now (a deploy
    # removed it): it goes on, from where it was, once code that defines it is deployed.
    WAITING_FOR_DEFINITION = "waiting_for_definition"

    @property
    def terminal(self) -> bool:
        """True for completed, failed, cancelled and continued (as a new run)."""
        return self in _TERMINAL_RUN


_TERMINAL_RUN = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.CONTINUED}
)


class StepStatus(enum.StrEnum):
    """Where a step is in its life."""

    PENDING = "pending"
    RUNNING = "running"  # dispatch recorded; the work is queued or executing in a worker
    RETRYING = "retrying"  # failed, waiting on a durable backoff timer
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class ParentClosePolicy(enum.StrEnum):
    """What happens to a code workflow's running child when its parent's run closes.

    The parent closes when it completes, fails, is cancelled or continues as new (not when
    it panics: it may restart). As in Temporal, the default is ``TERMINATE``.
    """

    TERMINATE = "terminate"  # the child ends cancelled at once; its code is not told
    REQUEST_CANCEL = "request_cancel"  # the child is cancelled: its code is told, cleans up
    ABANDON = "abandon"  # the child goes on, on its own (it survives continue_as_new)


_lock = threading.Lock()
_last = (0, 0)


def new_run_id() -> RunId:
    """Return a new time-ordered run id (24 hex digits)."""
    global _last
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(6), "big")
    with _lock:
        last_ms, last_rand = _last
        if ms <= last_ms:
            # Same (or earlier: clock stepped back) millisecond: stay ordered by counting up.
            ms, rand = last_ms, last_rand + 1
            if rand >= 1 << 48:
                ms, rand = ms + 1, 0
        _last = (ms, rand)
    return RunId(f"{ms:012x}{rand:012x}")
