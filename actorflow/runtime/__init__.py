"""The runtime: the engine facade and its actors.

How a run flows through the engine::

    definition ──build()──▶ WorkflowSpec ──compile_plan()──▶ Plan
                                                               │
    engine.trigger(payload)                                    ▼
        │ StartRun                     ┌──────────── Supervisor (one per run, on a Shard actor)
        ▼                              │  evaluator(plan, state, event) -> ready steps
    Shard ─── Write(ops, then) ──▶ StoreWriter ── group commit ──▶ Store (LMDB)
        ▲                              │ durable: then-callbacks
        │                              ▼
        │ StepSucceeded /          Dispatcher ── task ──▶ worker process (pipe)
        │ StepFailed(kind)             ▲                        │
        └──────────────────────────────┴──── result / crash ────┘
                                   Scheduler ── TimerFired (retry backoff, deadlines)

Every state change is a store op carried by one ``Write``; anything that acts on the world
(sending a task, arming a timer, killing a worker, waking a waiter) runs as a callback of that
write, i.e. only once it is durable.
"""

from __future__ import annotations

from actorflow.runtime._engine import Engine
from actorflow.runtime._handle import RunHandle
from actorflow.runtime._lifecycle import LifecycleEvent, RunFinished, RunStarted, StepAttempted
from actorflow.runtime._versions import WorkflowVersion
from actorflow.runtime._views import (
    AttemptDetails,
    ErrorDetails,
    RunDetails,
    RunSummary,
    StepDetails,
)
from actorflow.store._prune import PruneReport

__all__ = [
    "AttemptDetails",
    "Engine",
    "ErrorDetails",
    "LifecycleEvent",
    "PruneReport",
    "RunDetails",
    "RunFinished",
    "RunHandle",
    "RunStarted",
    "RunSummary",
    "StepAttempted",
    "StepDetails",
    "WorkflowVersion",
]
