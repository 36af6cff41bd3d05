"""The one exception tree of actorflow.

Every error actorflow raises on purpose derives from :class:`ActorflowError`; errors from
third-party libraries (lmdb, pickle, pykka) are translated at the boundary::

    ActorflowError
    ├── ConfigError                  bad EngineConfig field or ACTORFLOW_* variable
    │   └── MissingExtra             a surface whose extra is not installed (also ImportError)
    ├── DefinitionError              a workflow definition is invalid (lists every problem)
    │   └── GraphError               the compiled graph is invalid
    ├── RunError                     a run did not produce a result
    │   ├── StepFailed               a step failed after its retries (step, attempt, traceback)
    │   │   ├── StepTimeout          ... because it ran past its timeout and was killed
    │   │   │   └── HeartbeatTimeout ... or went silent past its heartbeat_timeout
    │   │   ├── WorkerCrashed        ... because its worker process died (exit code / signal)
    │   │   └── RunDepthExceeded     ... because its child run would pass max_run_depth
    │   ├── RunCancelled             the run was cancelled (reason)
    │   ├── RunTimeout               the whole run ran past the workflow's timeout
    │   ├── WaitTimeout              a wait (event, signal, approval) ran past its timeout
    │   ├── WorkflowFailed           a code workflow's function raised (its error is the cause)
    │   └── NondeterminismError      a code workflow's replay diverged from its history
    ├── StoreError                   the store cannot be used (I/O, locked, newer format)
    │   ├── StoreInUse               another engine holds the store (this process, or role="leader")
    │   ├── StoreCorrupted           the store's files or records are not what was written
    │   ├── StoreFull                disk full or max_map_size reached: new work refused
    │   └── WriteRejected            one write refused for its content: only it failed
    ├── ClientError                  a client call was given something it cannot use
    │   ├── RunNotFound
    │   ├── WorkflowNotFound
    │   ├── ScheduleNotFound         pause/resume/trigger_schedule: no schedule has the name
    │   ├── InvalidPayload
    │   ├── EngineNotRunning
    │   │   ├── LeaderLost           the leader died with a call in flight that is not repeated
    │   │   └── EngineUnreachable    af.Client: nothing answers at the URL (also ConnectionError)
    │   ├── AccessDenied             af.Client: the API refused the token (401) or the action (403)
    │   └── ApprovalError            engine.resume(token): unknown, already used or expired
    │       ├── ApprovalNotFound
    │       ├── ApprovalAlreadyResolved
    │       └── ApprovalExpired
    ├── CircuitOpen                  a step's af.CircuitBreaker is open: the call failed fast
    ├── PoolUnavailable              the worker pool's restart breaker is open
    ├── ResultTimeout                RunHandle.result() waited past its timeout (also TimeoutError)
    ├── RemoteTraceback              traceback text from a worker, chained as a ``__cause__``
    └── RemoteError                  stands in for a step exception that could not be unpickled

Exceptions raised inside step functions are not wrapped in the worker: they come back to the
engine as the ``__cause__`` of :class:`StepFailed`, with the worker's traceback attached as
their own ``__cause__`` (a :class:`RemoteTraceback`), as ``concurrent.futures`` does.

No class here derives from ``BaseException`` alone: under pykka a ``BaseException`` escaping an
actor stops every actor, so none is used for control flow.
"""

from __future__ import annotations

from ._base import (
    ActorflowError,
    CircuitOpen,
    ConfigError,
    DefinitionError,
    GraphError,
    MaxIterationsExceeded,
    MissingExtra,
    PoolUnavailable,
    RemoteError,
    RemoteTraceback,
    ResultTimeout,
    StoreCorrupted,
    StoreError,
    StoreFull,
    StoreInUse,
    WriteRejected,
)
from ._client import (
    AccessDenied,
    ApprovalAlreadyResolved,
    ApprovalError,
    ApprovalExpired,
    ApprovalNotFound,
    ClientError,
    EngineNotRunning,
    EngineUnreachable,
    InvalidPayload,
    LeaderLost,
    RunNotFound,
    ScheduleNotFound,
    WorkflowNotFound,
)
from ._run import (
    HeartbeatTimeout,
    NondeterminismError,
    RunCancelled,
    RunDepthExceeded,
    RunError,
    RunTimeout,
    StepFailed,
    StepTimeout,
    WaitTimeout,
    WorkerCrashed,
    WorkflowFailed,
)

__all__ = [
    "AccessDenied",
    "ActorflowError",
    "ApprovalAlreadyResolved",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalNotFound",
    "CircuitOpen",
    "ClientError",
    "ConfigError",
    "DefinitionError",
    "EngineNotRunning",
    "EngineUnreachable",
    "GraphError",
    "HeartbeatTimeout",
    "InvalidPayload",
    "LeaderLost",
    "MaxIterationsExceeded",
    "MissingExtra",
    "NondeterminismError",
    "PoolUnavailable",
    "RemoteError",
    "RemoteTraceback",
    "ResultTimeout",
    "RunCancelled",
    "RunDepthExceeded",
    "RunError",
    "RunNotFound",
    "RunTimeout",
    "ScheduleNotFound",
    "StepFailed",
    "StepTimeout",
    "StoreCorrupted",
    "StoreError",
    "StoreFull",
    "StoreInUse",
    "WaitTimeout",
    "WorkerCrashed",
    "WorkflowFailed",
    "WorkflowNotFound",
    "WriteRejected",
]


# The classes live in three private modules but belong to this one. Stored error records and
# pickles name them "actorflow.errors.StepTimeout" (from ``__module__``), the docs link them
# there, and a class moving between the private modules must not change a name already on
# disk. trio fixes up its public names' module the same way.
def _belong_here() -> None:
    for name in __all__:
        cls = globals()[name]
        cls.__module__ = __name__
        for attr in vars(cls).values():  # StepFailed._rebuild is named in its pickles
            if isinstance(attr, staticmethod):
                attr.__func__.__module__ = __name__


_belong_here()
