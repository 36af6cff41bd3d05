"""actorflow: an embeddable, durable workflow engine built as an actor-model runtime.

Layers, top to bottom (each imports only those below it; ``make lint`` checks it)::

    cli                                 the ``actorflow`` command
    client | testing | executors        af.Client; the test harness; where steps run
    engine                              the Engine facade and RunHandle
    triggers                            webhooks, schedules, events, the HTTP API
    observability                       logging (JSON), metrics, tracing (loaded on first use)
    runtime                             supervisors, the dispatcher and its transports, writer
    code                                code workflows: context, history, deterministic replay
    workers                             worker processes and their wire protocol
    graph | config                      the compiled plan and its evaluator; EngineConfig
    definition | views                  builder -> immutable spec; the read side of records
    store                               durable state (LMDB, in-memory twin), codecs, keys
    errors, _types, _clock, ...         shared vocabulary

Quick start::

    import actorflow as af

    engine = af.Engine(data_dir=".actorflow")
    (engine.define("greet")
        .step("hello", lambda ctx: f"hello {ctx.payload['name']}")
        .step("shout", lambda ctx: ctx.last.upper()))
    with engine:
        print(engine.trigger("greet", {"name": "ada"}).result(timeout=30))
"""

from __future__ import annotations

import logging as _logging
from typing import TYPE_CHECKING, Any

from actorflow._clock import Clock, ManualClock, SystemClock
from actorflow._types import ParentClosePolicy, RunStatus, StepStatus
from actorflow._version import __version__
from actorflow.code import CodeWorkflow, PanicPolicy, WorkflowContext, WorkflowInfo
from actorflow.config import EngineConfig
from actorflow.definition import Flow, Retry, Secret, Service, Workflow, _builder, define_service
from actorflow.definition._breaker import CircuitBreaker
from actorflow.definition._cache import Cache
from actorflow.definition._queue import Queue
from actorflow.engine import Engine, RunHandle
from actorflow.errors import (
    AccessDenied,
    ActorflowError,
    ApprovalAlreadyResolved,
    ApprovalError,
    ApprovalExpired,
    ApprovalNotFound,
    CircuitOpen,
    ClientError,
    ConfigError,
    DefinitionError,
    EngineNotRunning,
    EngineUnreachable,
    GraphError,
    HeartbeatTimeout,
    InvalidPayload,
    LeaderLost,
    MaxIterationsExceeded,
    MissingExtra,
    NondeterminismError,
    PoolUnavailable,
    RemoteError,
    RemoteTraceback,
    ResultTimeout,
    RunCancelled,
    RunDepthExceeded,
    RunError,
    RunNotFound,
    RunTimeout,
    ScheduleNotFound,
    StepFailed,
    StepTimeout,
    StoreCorrupted,
    StoreError,
    StoreFull,
    StoreInUse,
    WaitTimeout,
    WorkerCrashed,
    WorkflowFailed,
    WorkflowNotFound,
    WriteRejected,
)
from actorflow.runtime import LifecycleEvent, RunFinished, RunStarted, StepAttempted
from actorflow.store._prune import PruneReport
from actorflow.views import (
    AttemptDetails,
    ErrorDetails,
    RunDetails,
    RunSummary,
    StepDetails,
    WorkflowVersion,
)
from actorflow.workers._context import RunInfo, StepContext, StepOutput, step_context
from actorflow.workers._interceptors import (
    Interceptor,
    QueryCall,
    SignalCall,
    StartCall,
    StepCall,
    UpdateCall,
)
from actorflow.workers._state import State

if TYPE_CHECKING:
    from actorflow import executors, observability, testing
    from actorflow.client import AsyncClient, Client, RemoteRunHandle
    from actorflow.executors import (
        DaskExecutor,
        Executor,
        InlineExecutor,
        ProcessExecutor,
        RayExecutor,
    )

# A library's logger: silent unless the embedding application configures logging.
_logging.getLogger("actorflow").addHandler(_logging.NullHandler())

__all__ = [
    "AccessDenied",
    "ActorflowError",
    "ApprovalAlreadyResolved",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalNotFound",
    "AsyncClient",
    "AttemptDetails",
    "Cache",
    "CircuitBreaker",
    "CircuitOpen",
    "Client",
    "ClientError",
    "Clock",
    "CodeWorkflow",
    "ConfigError",
    "DaskExecutor",
    "DefinitionError",
    "Engine",
    "EngineConfig",
    "EngineNotRunning",
    "EngineUnreachable",
    "ErrorDetails",
    "Executor",
    "Flow",
    "GraphError",
    "HeartbeatTimeout",
    "InlineExecutor",
    "Interceptor",
    "InvalidPayload",
    "LeaderLost",
    "LifecycleEvent",
    "ManualClock",
    "MaxIterationsExceeded",
    "MissingExtra",
    "NondeterminismError",
    "PanicPolicy",
    "ParentClosePolicy",
    "PoolUnavailable",
    "ProcessExecutor",
    "PruneReport",
    "QueryCall",
    "Queue",
    "RayExecutor",
    "RemoteError",
    "RemoteRunHandle",
    "RemoteTraceback",
    "ResultTimeout",
    "Retry",
    "RunCancelled",
    "RunDepthExceeded",
    "RunDetails",
    "RunError",
    "RunFinished",
    "RunHandle",
    "RunInfo",
    "RunNotFound",
    "RunStarted",
    "RunStatus",
    "RunSummary",
    "RunTimeout",
    "ScheduleNotFound",
    "Secret",
    "Service",
    "SignalCall",
    "StartCall",
    "State",
    "StepAttempted",
    "StepCall",
    "StepContext",
    "StepDetails",
    "StepFailed",
    "StepOutput",
    "StepStatus",
    "StepTimeout",
    "StoreCorrupted",
    "StoreError",
    "StoreFull",
    "StoreInUse",
    "SystemClock",
    "UpdateCall",
    "WaitTimeout",
    "WorkerCrashed",
    "Workflow",
    "WorkflowContext",
    "WorkflowFailed",
    "WorkflowInfo",
    "WorkflowNotFound",
    "WorkflowVersion",
    "WriteRejected",
    "__version__",
    "define_service",
    "executors",
    "observability",
    "step_context",
    "testing",
]

#: Subpackages loaded on first use (PEP 562): ``import actorflow`` stays lean (no test
#: harness, no tracing code, no transports until an engine is made) while ``af.testing``,
#: ``af.observability`` and ``af.executors`` still work.
_LAZY = frozenset({"executors", "observability", "testing"})

#: Names loaded from a subpackage on first use: the client (``af.Client``) loads httpx only
#: when one is made, and its package only when it is named.
_LAZY_NAMES = {
    "AsyncClient": "actorflow.client",
    "Client": "actorflow.client",
    "RemoteRunHandle": "actorflow.client",
    **dict.fromkeys(
        ("DaskExecutor", "Executor", "InlineExecutor", "ProcessExecutor", "RayExecutor"),
        "actorflow.executors",
    ),
}


def _workflow_test(wf: Any, **options: Any) -> Any:
    """``wf.test()``'s harness (installed below: definitions do not import the layers above)."""
    from actorflow.testing import WorkflowTest

    return WorkflowTest(wf, **options)


_builder.HARNESS.factory = _workflow_test


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        module = importlib.import_module(f"actorflow.{name}")
        globals()[name] = module  # later lookups skip this hook
        return module
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'actorflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_LAZY_NAMES})
