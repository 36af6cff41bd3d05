"""Code workflows: ``async def`` functions whose steps are recorded and replayed.

How a run works::

    @engine.workflow("etl") async def etl(ctx, src) ──▶ CodeWorkflowSpec
    trigger ──▶ CodeSupervisor (on a shard) ──▶ Driver ──▶ DeterministicLoop runs etl(ctx, src)
                      ▲      │ commands (step, sleep, wait...) recorded in the history,
                      │      ▼ then carried out once durable (tasks to the pool, timers...)
                      └── resolutions (a step's result, a timer, a signal) wake the function

After a crash, a restart or an eviction from the sticky cache, the function is replayed
against its history (``_replay.py``): recorded commands resolve at once from the record, and
the first divergence raises :class:`~actorflow.NondeterminismError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actorflow.code._context import WorkflowContext, WorkflowInfo
from actorflow.code._definition import CodeWorkflow, CodeWorkflowSpec, PanicPolicy

if TYPE_CHECKING:
    from actorflow.code._replay import ReplayResult, replay

__all__ = [
    "CodeWorkflow",
    "CodeWorkflowSpec",
    "PanicPolicy",
    "ReplayResult",
    "WorkflowContext",
    "WorkflowInfo",
    "replay",
]


def __getattr__(name: str) -> Any:
    # The replay checker drives the deterministic loop (asyncio): loaded on first use, so
    # ``import actorflow`` does not import asyncio (PEP 562).
    if name in ("ReplayResult", "replay"):
        from actorflow.code import _replay

        return getattr(_replay, name)
    raise AttributeError(f"module 'actorflow.code' has no attribute {name!r}")
