"""Integer codes shared by the plan, both evaluator twins and the supervisor.

The Cython twin repeats these numbers as C constants; ``tests/graph/test_evaluator.py`` checks
that both agree.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "EV_FAILED",
    "EV_SKIPPED",
    "EV_SUCCEEDED",
    "KIND_ACTION",
    "KIND_STEP",
    "NODE_CANCELLED",
    "NODE_FAILED",
    "NODE_PENDING",
    "NODE_RUNNING",
    "NODE_SKIPPED",
    "NODE_SUCCEEDED",
    "RUN_ACTIVE",
    "RUN_COMPLETED",
    "RUN_FAILED",
]

# Node kinds.
KIND_STEP: Final = 0
KIND_ACTION: Final = 1

# Node states (one byte each in the run state).
NODE_PENDING: Final = 0
NODE_RUNNING: Final = 1  # chosen: dispatch recorded or about to be
NODE_SUCCEEDED: Final = 2
NODE_FAILED: Final = 3
NODE_SKIPPED: Final = 4
NODE_CANCELLED: Final = 5

# Events applied to a node.
EV_SUCCEEDED: Final = 1
EV_FAILED: Final = 2
EV_SKIPPED: Final = 3

# Run outcomes returned with each evaluation.
RUN_ACTIVE: Final = 0
RUN_COMPLETED: Final = 1
RUN_FAILED: Final = 2
