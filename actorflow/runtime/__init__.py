"""The runtime: the actors under the engine facade (``actorflow.engine``).

How a run flows through the engine::

    graph:  definition ──build()──▶ WorkflowSpec ──compile_plan()──▶ Plan
    code:   @engine.workflow async def ──▶ CodeWorkflowSpec
                                                   │ (every version defined, in Core)
    engine.trigger / webhook / schedule / child    ▼
        │ StartRun                 ┌── a supervisor per run, on a Shard actor (_run.py):
        ▼                          │   graph: evaluator(plan, state, event) -> commands
    Shard ─ Write(ops, then) ─▶ StoreWriter ─ group commit ─▶ Store (LMDB)
        ▲                          │   code: the workflow function on a deterministic
        │                          │   loop, replayed against its history -> commands
        │                          ▼ durable: then-callbacks
        │ AttemptSucceeded /      Dispatcher ── task ──▶ transport ──▶ where steps run:
        │ AttemptFailed(kind)      (one core: tasks,      process pool (pipes; large
        │                          deadlines, cancels,    values in shared-memory segments
        │                          drains, requests)      and blob files, blobs/), inline
        │                          ▲                      threads, Dask, Ray (callback link)
        └──────────────────────────┴──── result / crash / timeout ────┘
                               Scheduler ── TimerFired (sleeps, retry backoff, deadlines)

    approvals, events, signals ─▶ EngineHost (_external.py) ─▶ the run's Shard
    (recorded as waits: an approval's token, an event's key; answered once durable)

    other processes on the data_dir: a Follower forwards calls over a Unix socket to
    the leader's LeaderServer (actorflow.engine); only the leader runs these actors.

Every state change is a store op carried by one ``Write``; anything that acts on the world
(sending a task, arming a timer, killing a worker, waking a waiter) runs as a callback of that
write, i.e. only once it is durable. A run not in memory is loaded (``_loading.py``) with
the version and plan it started on, or held with a reason when the code lacks them.
"""

from __future__ import annotations

from actorflow.runtime.kernel._lifecycle import (
    LifecycleEvent,
    RunFinished,
    RunStarted,
    StepAttempted,
)

__all__ = ["LifecycleEvent", "RunFinished", "RunStarted", "StepAttempted"]
