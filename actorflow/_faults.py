"""Crash points for fault-injection tests (like FoundationDB's "buggify", but only a kill).

``ACTORFLOW_CRASH_AT="point=N"`` makes the engine process SIGKILL itself the N-th time it
reaches ``point``, so crash tests can stop it exactly between two durable steps. Unset (the
normal case) each point costs one global lookup. Points:

- ``shard.before_record``: a step result reached its supervisor, nothing recorded yet.
- ``writer.after_commit``: a group is durable, none of its effects (dispatch...) carried out.
- ``dispatcher.before_send``: a dispatch is recorded, the task not yet sent to a worker.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["ACTIVE", "crash_point"]

_lock = threading.Lock()
_counts: dict[str, int] = {}
for _item in os.environ.get("ACTORFLOW_CRASH_AT", "").split(","):
    _name, _, _n = _item.partition("=")
    if _name.strip():
        _counts[_name.strip()] = int(_n or "1")

#: True when any crash point is armed; hot paths test this before calling crash_point.
ACTIVE = bool(_counts)


def crash_point(name: str) -> None:
    """SIGKILL this process if ``name`` is armed and this is its N-th hit."""
    with _lock:
        left = _counts.get(name)
        if left is None:
            return
        left -= 1
        _counts[name] = left
    if left == 0:
        os.kill(os.getpid(), signal.SIGKILL)
