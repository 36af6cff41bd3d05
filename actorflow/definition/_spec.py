"""Immutable workflow specs: what a builder compiles to, and how functions travel.

A workflow is a *block*: a sequence of nodes. Leaves (steps, actions, subflows, sleeps,
cancels) do one thing; composites hold blocks of their own: a branch has arms, parallel and
race have arms, while / for_each / batch have a body that runs once per iteration, item or
chunk.

A step function travels to workers by reference (``module:qualname``) when the worker can
import it, else as cloudpickle bytes (keeping its code's file names, so that tracebacks name
them: ``actorflow/_tracebacks.py``); either way it is identified by a ``key`` so that a
worker unpickles or imports it once and caches it. Predicates and item selectors never travel: they
run in the engine.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from actorflow._tracebacks import dumps_by_value
from actorflow.definition._options import Retry

__all__ = [
    "HOOKS",
    "ON_CANCEL",
    "ArmSpec",
    "BranchSpec",
    "CancelSpec",
    "ForEachSpec",
    "FunctionRef",
    "NodeSpec",
    "ParallelSpec",
    "SleepSpec",
    "StepSpec",
    "SubflowSpec",
    "WaitSpec",
    "WhileSpec",
    "WorkflowSpec",
    "describe_block",
    "describe_common",
    "fingerprint",
    "function_ref",
    "shape_of",
    "walk",
]

StepKind = Literal["step", "action"]
CallMode = Literal["ctx", "item"]
Predicate = Callable[[Any], Any]

#: The path of the step a workflow's ``on_cancel`` handler runs as.
ON_CANCEL = "on_cancel"

#: A run's final status -> the hook (a WorkflowSpec field, and the path of the step it
#: runs as) that runs once a run's outcome is that (``runtime/supervision/_graph_hooks``).
HOOKS = {"cancelled": ON_CANCEL, "completed": "on_success", "failed": "on_failure"}


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """How a worker finds a function.

    Attributes:
        key: cache key, unique per function (``r:module:qualname`` or ``p:<sha1>``).
        ref: ``module:qualname`` when importable, else None.
        blob: cloudpickle bytes when not importable, else None.
        display: a readable name for logs and the CLI.
        is_async: the function is ``async def``.
    """

    key: str
    ref: str | None
    blob: bytes | None
    display: str
    is_async: bool


def function_ref(fn: Callable[..., Any]) -> FunctionRef:
    """Describe ``fn`` for transport to a worker (by reference when importable)."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    display = f"{module}:{qualname}" if module and qualname else repr(fn)
    is_async = inspect.iscoroutinefunction(fn)
    if module and qualname and module != "__main__" and "<" not in qualname:
        target: Any = sys.modules.get(module)
        for part in qualname.split("."):
            target = getattr(target, part, None)
        if target is fn:
            ref = f"{module}:{qualname}"
            return FunctionRef("r:" + ref, ref, None, display, is_async)
    blob = dumps_by_value(fn)
    digest = hashlib.sha1(blob, usedforsecurity=False).hexdigest()
    return FunctionRef("p:" + digest, None, blob, display, is_async)


@dataclass(frozen=True, slots=True)
class StepSpec:
    """A step (or action): a function run in a worker.

    Attributes:
        name: unique within the workflow.
        kind: ``"step"`` (its output becomes ``ctx.last``) or ``"action"`` (a side effect:
            recorded, but ``ctx.last`` passes over it).
        fn: how workers find the function.
        timeout: seconds before the worker is killed, or None for no limit.
        retry: the retry policy.
        on_error: a handler run (in a worker) when the step has failed for good: it returns a
            fallback output or raises.
        call: ``"ctx"`` calls ``fn(ctx)``; ``"item"`` calls ``fn(ctx.item, ctx)`` (a for_each
            or batch body given as a plain function).
        heartbeat_timeout: seconds a step may go without ``ctx.heartbeat``, or None.
        breaker: its circuit breaker, or None.
        cache: its :class:`~actorflow.Cache`, or None.
        queue: the :class:`~actorflow.Queue` it waits for before it starts, or None.
    """

    name: str
    kind: StepKind
    fn: FunctionRef
    timeout: float | None
    retry: Retry
    on_error: FunctionRef | None = None
    call: CallMode = "ctx"
    heartbeat_timeout: float | None = None
    breaker: Any = None
    cache: Any = None  # an af.Cache, or None
    queue: Any = None  # an af.Queue, or None


@dataclass(frozen=True, slots=True)
class ArmSpec:
    """One arm of a branch, parallel or race.

    Attributes:
        name: the arm's name (the key of its output in a parallel's dict).
        block: its nodes (may be empty).
        pred: for a branch arm, the predicate (None for ``else_``).
    """

    name: str
    block: tuple[NodeSpec, ...]
    pred: Predicate | None = None


@dataclass(frozen=True, slots=True)
class BranchSpec:
    """``if_`` / ``elif_`` / ``else_`` / ``endif``: the first arm whose predicate holds runs."""

    name: str
    arms: tuple[ArmSpec, ...]


@dataclass(frozen=True, slots=True)
class ParallelSpec:
    """``parallel`` or ``race``: arms running at once.

    A parallel's output is a dict of its arms' outputs by name; a race's, the output of the
    first arm to succeed (the others are cancelled).
    """

    name: str
    arms: tuple[ArmSpec, ...]
    race: bool = False


@dataclass(frozen=True, slots=True)
class WhileSpec:
    """``while_``: run ``body`` while ``pred(ctx)`` holds, at most ``max_iterations`` times."""

    name: str
    pred: Predicate
    body: tuple[NodeSpec, ...]
    max_iterations: int


@dataclass(frozen=True, slots=True)
class ForEachSpec:
    """``for_each`` or ``batch``: a body run per item or chunk.

    A for_each runs ``concurrency`` items at a time and outputs their results in item order;
    a batch runs chunks of ``size`` items one after another.
    """

    name: str
    items: Predicate
    body: tuple[NodeSpec, ...]
    concurrency: int
    size: int | None = None  # set: a batch of chunks of this size


@dataclass(frozen=True, slots=True)
class SubflowSpec:
    """``subflow``: a child run of another workflow; its result is this node's output."""

    name: str
    workflow_id: str
    input: Predicate | None
    on_error: FunctionRef | None = None


@dataclass(frozen=True, slots=True)
class SleepSpec:
    """``sleep``: a durable timer; the run is out of memory while it waits."""

    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class WaitSpec:
    """``wait_for_event`` / ``human_in_the_loop``: the run waits, out of memory, for the world.

    Attributes:
        name: the node's name.
        kind: ``event`` (a published event) or ``approval`` (``engine.resume(token, ...)``).
        event: the event's name (``event`` waits).
        key: the event key this wait takes: a string, ``fn(ctx) -> str`` (run in the engine),
            or None for any key.
        match: ``fn(ctx, payload) -> bool``: only matching events are taken.
        timeout: seconds to wait, or None for ever.
        on_timeout: ``fail`` the node, or ``continue`` with ``default`` as its output.
        default: the output when continuing after a timeout.
        description: shown with a pending approval.
        on_pause: ``fn(token, ctx)`` called once the approval's pause is durable.
        metadata: JSON-compatible data stored with a pending approval.
    """

    name: str
    kind: Literal["event", "approval"]
    event: str | None = None
    key: Any = None
    match: Callable[[Any, Any], Any] | None = None
    timeout: float | None = None
    on_timeout: Literal["fail", "continue"] = "fail"
    default: Any = None
    description: str = ""
    on_pause: Callable[[str, Any], Any] | None = None
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class CancelSpec:
    """``cancel``: ends the run as cancelled, with ``reason``."""

    name: str
    reason: str


NodeSpec = (
    StepSpec | BranchSpec | ParallelSpec | WhileSpec | ForEachSpec | SubflowSpec | SleepSpec
    | WaitSpec | CancelSpec
)  # fmt: skip


def walk(block: tuple[NodeSpec, ...]) -> Iterator[NodeSpec]:
    """Every node of ``block``, depth first, in definition order."""
    for node in block:
        yield node
        if isinstance(node, BranchSpec | ParallelSpec):
            for arm in node.arms:
                yield from walk(arm.block)
        elif isinstance(node, WhileSpec | ForEachSpec):
            yield from walk(node.body)


def _describe(node: NodeSpec) -> dict[str, Any]:
    """A JSON-compatible description (no code), for the stored definition and fingerprints."""
    if isinstance(node, StepSpec):
        return {
            "name": node.name,
            "kind": node.kind,
            "fn": node.fn.display,
            "timeout": node.timeout,
            "retry": node.retry.to_dict(),
            "on_error": node.on_error.display if node.on_error else None,
            "call": node.call,
            **({"breaker": node.breaker.describe()} if node.breaker is not None else {}),
            **({"cache": node.cache.describe()} if node.cache is not None else {}),
            **({"queue": node.queue.describe()} if node.queue is not None else {}),
        }
    if isinstance(node, BranchSpec):
        arms = [
            {"name": a.name, "else": a.pred is None, "block": _block(a.block)} for a in node.arms
        ]
        return {"name": node.name, "kind": "branch", "arms": arms}
    if isinstance(node, ParallelSpec):
        arms = [{"name": a.name, "block": _block(a.block)} for a in node.arms]
        return {"name": node.name, "kind": "race" if node.race else "parallel", "arms": arms}
    if isinstance(node, WhileSpec):
        return {
            "name": node.name,
            "kind": "while",
            "max_iterations": node.max_iterations,
            "body": _block(node.body),
        }
    if isinstance(node, ForEachSpec):
        return {
            "name": node.name,
            "kind": "batch" if node.size is not None else "for_each",
            "concurrency": node.concurrency,
            "size": node.size,
            "body": _block(node.body),
        }
    if isinstance(node, SubflowSpec):
        return {"name": node.name, "kind": "subflow", "workflow": node.workflow_id}
    if isinstance(node, SleepSpec):
        return {"name": node.name, "kind": "sleep", "seconds": node.seconds}
    if isinstance(node, WaitSpec):
        desc: dict[str, Any] = {
            "name": node.name,
            "kind": "wait_for_event" if node.kind == "event" else "approval",
            "timeout": node.timeout,
            "on_timeout": node.on_timeout,
        }
        if node.kind == "event":
            desc["event"] = node.event
        else:
            desc["description"] = node.description
        return desc
    return {"name": node.name, "kind": "cancel", "reason": node.reason}


def _block(block: tuple[NodeSpec, ...]) -> list[dict[str, Any]]:
    return [_describe(n) for n in block]


def describe_block(spec: WorkflowSpec) -> list[dict[str, Any]]:
    """The described nodes of a graph workflow: its stored structure (no code)."""
    return _block(spec.block)


def shape_of(nodes: list[dict[str, Any]]) -> str:
    """The shape (a short hash of the structure alone) of described nodes.

    A run's history replays only onto a plan of the same shape; code, timeouts and retry
    policies may change between restarts.
    """
    text = json.dumps(_shape(nodes), sort_keys=True)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]


def _shape(desc: Any) -> Any:
    """Only what replaying a run's history depends on: kinds, names, nesting, fan-out sizes."""
    if isinstance(desc, list):
        return [_shape(d) for d in desc]
    if isinstance(desc, dict):
        keep = ("name", "kind", "arms", "else", "block", "body", "concurrency", "size")
        return {k: _shape(v) for k, v in desc.items() if k in keep}
    return desc


def describe_common(spec: Any) -> dict[str, Any]:
    """The stored description of the options graph and code workflows share."""
    return {
        "services": [s.describe() for s in spec.services],
        "rate_limit": list(spec.rate_limit) if spec.rate_limit else None,
        "webhooks": [
            {"path": w.path, "method": w.method, "signature": w.signature} for w in spec.webhooks
        ],
        "schedules": [s.describe() for s in spec.schedules],
        "retention": spec.retention,
        "version": spec.version,
        # Only when set: a definition without a queue keeps the fingerprint it had.
        **({"queue": spec.queue.describe()} if spec.queue is not None else {}),
        **({"events": [e.describe() for e in spec.events]} if spec.events else {}),
        **({"polls": [p.describe() for p in spec.polls]} if spec.polls else {}),
    }


def fingerprint(description: dict[str, Any]) -> str:
    """A short hash of a stored definition."""
    text = json.dumps(description, sort_keys=True)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A validated, immutable workflow definition.

    Attributes:
        id: the workflow id.
        block: the top-level nodes in order.
        timeout: seconds the whole run may take, or None.
        concurrency: most runs of this workflow active at once, or None for no limit.
        description: free text.
        on_error: the workflow's default error handler for steps without their own.
        on_cancel: run as the step ``on_cancel`` when a run is cancelled, or None.
        on_success: run as the step ``on_success`` when a run has completed, or None.
        on_failure: run as the step ``on_failure`` when a run has failed, or None.
        retention: seconds its finished runs are kept (0: forever; None: the engine's).
        version: its version (several may be defined at once; runs keep theirs).
    """

    id: str
    block: tuple[NodeSpec, ...]
    timeout: float | None
    concurrency: int | None
    description: str
    on_error: FunctionRef | None = None
    on_cancel: FunctionRef | None = None
    on_success: FunctionRef | None = None
    on_failure: FunctionRef | None = None
    #: Configured services (``ctx.services.<id>``).
    services: tuple[Any, ...] = ()
    #: (runs, per seconds): most runs started per window; later ones queue.
    rate_limit: tuple[int, float] | None = None
    webhooks: tuple[Any, ...] = ()
    schedules: tuple[Any, ...] = ()
    retention: float | None = None
    version: int = 1
    #: The :class:`~actorflow.Queue` whose limits it shares, or None.
    queue: Any = None
    #: Published events that start its runs (``on_event``).
    events: tuple[Any, ...] = ()
    #: Functions polled for new values that start its runs (``on_poll``).
    polls: tuple[Any, ...] = ()

    @property
    def steps(self) -> tuple[StepSpec, ...]:
        """Every step and action, at any depth, in definition order."""
        return tuple(n for n in walk(self.block) if isinstance(n, StepSpec))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible description (no code), for the stored definition."""
        return {
            "id": self.id,
            "description": self.description,
            "timeout": self.timeout,
            "concurrency": self.concurrency,
            "on_error": self.on_error.display if self.on_error else None,
            **({"on_cancel": self.on_cancel.display} if self.on_cancel else {}),
            **({"on_success": self.on_success.display} if self.on_success else {}),
            **({"on_failure": self.on_failure.display} if self.on_failure else {}),
            "nodes": _block(self.block),
            **describe_common(self),
        }

    @property
    def fingerprint(self) -> str:
        """A short hash of the whole definition, stored with the definition record."""
        return fingerprint(self.to_dict())

    @property
    def shape(self) -> str:
        """A short hash of the structure alone (see :func:`shape_of`)."""
        return shape_of(_block(self.block))
