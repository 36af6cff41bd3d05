"""Messages between the engine's actors: commands are imperative, events past tense.

All are immutable: frozen dataclasses, except the three made once per task (``TaskSpec``,
``AttemptSucceeded``, ``AttemptFailed``), which are NamedTuples because they are built several times
faster and a fan-out of 100,000 items makes 100,000 of each. A promise carried in a message
(see :mod:`._promise`) is completed by the receiver only after the effect is durable; no actor
ever blocks on another's reply (no pykka ``ask`` on the hot path).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from actorflow.definition._spec import FunctionRef
from actorflow.runtime.kernel._promise import Countdown, Promise
from actorflow.store._protocol import Op

__all__ = [
    "ActivateRun",
    "AddTimers",
    "AttemptFailed",
    "AttemptResults",
    "AttemptSucceeded",
    "CancelRun",
    "CancelTasks",
    "ChildFinished",
    "ChunkItem",
    "Dispatch",
    "Drain",
    "ErrorInfo",
    "EventDelivered",
    "ExternalDone",
    "FailureKind",
    "Flush",
    "QueryRun",
    "RestartRun",
    "ResumeApproval",
    "SignalRun",
    "StartRun",
    "TaskSpec",
    "TimerFired",
    "Unmapped",
    "UpdateRun",
    "Write",
]

FailureKind = Literal["error", "timeout", "crash", "pool", "cancelled", "interrupted"]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A step failure as reported to its supervisor and recorded in the store.

    Attributes:
        kind: ``error`` (the step raised), ``timeout``, ``crash`` (worker died), ``pool``
            (no worker could run it: restart breaker open).
        type: qualified name of the exception type.
        types: qualified names of the exception's MRO, for ``non_retryable`` matching.
        message: the exception's message.
        traceback: traceback text from the worker.
        user_traceback: the same without the engine's frames (``actorflow/_tracebacks.py``);
            empty: the same as ``traceback``.
        pickled: the pickled exception, when it survived a round trip.
        exitcode: for crashes, the worker's exit code (negative: signal number).
        timeout: for timeouts, the step's timeout in seconds.
        details: the encoded details of the attempt's last heartbeat, if it sent any.
    """

    kind: FailureKind
    type: str
    types: tuple[str, ...]
    message: str
    traceback: str = ""
    pickled: bytes | None = None
    exitcode: int | None = None
    timeout: float | None = None
    details: bytes | None = None  # the attempt's last heartbeat details (encoded)
    user_traceback: str = ""


#: One item of a chunk task: (step path, encoded ctx.last, encoded item, index).
ChunkItem = tuple[str, bytes | None, bytes | None, int | None]


class TaskSpec(NamedTuple):
    """One step attempt to run in the pool; its dispatch is already recorded.

    Attributes:
        run_id: the run.
        step: the step's path (``name``, or ``lines[3]/name`` inside a loop body).
        attempt: this attempt's number.
        workflow_id: the workflow.
        fn: the function to call.
        payload: the run's encoded payload.
        last: the encoded ``ctx.last``, or None.
        timeout: seconds before the worker is killed, or None.
        item: the encoded current item (chunk) inside a for_each (batch) body, or None.
        position: the item's index or the while iteration, or None (``ctx.index``).
        call: 1 to call ``fn(item, ctx)``, 0 for ``fn(ctx)``, 4 for ``fn(*item)`` (a code
            workflow's step: ``item`` is the encoded argument list).
        error: for an error handler, the encoded exception the step failed with.
        chunk: for a chunk of tiny item steps run as one task: per item, its step path, its
            ``ctx.last``, its item and its index (``step`` is then the chunk's id, and
            ``last``, ``item`` and ``position`` are unused). See ``Supervisor.flush``.
        heartbeat_timeout: kill the worker if the step sends no heartbeat for this long.
        details: the previous attempt's last heartbeat details (``heartbeat_details``).
        queue: the :class:`~actorflow.Queue` the step waits for in the dispatcher, or None.
        rank: its run's priority, on a queue that orders by it.
    """

    run_id: str
    step: str
    attempt: int
    workflow_id: str
    fn: FunctionRef
    payload: bytes
    last: bytes | None
    timeout: float | None
    item: bytes | None = None
    position: int | None = None
    call: int = 0
    error: bytes | None = None
    chunk: tuple[ChunkItem, ...] | None = None
    heartbeat_timeout: float | None = None
    details: bytes | None = None
    queue: Any = None
    rank: int = 0


# -- to the dispatcher -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Run these tasks (their dispatch records are durable)."""

    tasks: tuple[TaskSpec, ...]


@dataclass(frozen=True, slots=True)
class CancelTasks:
    """Drop queued tasks and stop running ones, reporting nothing.

    Targets: every task of ``run_ids``, and the tasks ``(run_id, step path)`` in ``tasks``.
    """

    run_ids: tuple[str, ...] = ()
    tasks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Drain:
    """Start no new task; complete ``done`` once no task is in flight."""

    done: Promise[None]


@dataclass(frozen=True, slots=True)
class Unmapped:
    """Shared-memory segments were unlinked: tell the workers to drop their mappings."""


# -- to shards (supervisors) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartRun:
    """Create a run; ``reply`` completes once it is durably recorded."""

    run_id: str
    workflow_id: str
    payload: bytes
    idempotency_key: str | None
    reply: Promise[None] | Countdown
    parent: tuple[str, str] | None = None  # (parent run id, path of its subflow node)
    depth: int = 0  # 0 for a top-level run, the parent's + 1 for a child
    priority: int = 0  # its place among queued runs, on a queue that orders by priority
    #: Steps answered without running (step name or path -> JSON output): engine.retry's.
    mocks: dict[str, Any] | None = None
    #: Its search attributes (checked) and memo, from the trigger.
    attrs: dict[str, Any] | None = None
    memo: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ActivateRun:
    """Load a run from the store and drive it (recovery, or admission of a queued run).

    ``admitted_at`` is when admission let a queued run start: it becomes the run's
    ``started_at`` (None: now, as the shard takes the message up).
    """

    run_id: str
    admitted_at: float | None = None


class AttemptSucceeded(NamedTuple):
    """A step attempt returned; ``output`` is its encoded value."""

    run_id: str
    step: str
    attempt: int
    output: bytes
    started_at: float
    ended_at: float
    pid: int


class AttemptFailed(NamedTuple):
    """A step attempt failed (raised, timed out, crashed, or could not be run)."""

    run_id: str
    step: str
    attempt: int
    error: ErrorInfo
    started_at: float | None
    ended_at: float
    pid: int | None


@dataclass(frozen=True, slots=True)
class AttemptResults:
    """Several step outcomes at once (the dispatcher sends one per shard per wake-up)."""

    results: tuple[AttemptSucceeded | AttemptFailed, ...]


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A durable timer is due."""

    run_id: str
    name: str
    due: float


@dataclass(frozen=True, slots=True)
class ChildFinished:
    """A child run's final state is durable; tells the parent's subflow node."""

    run_id: str  # the parent
    path: str  # the parent's subflow node
    child_run_id: str


@dataclass(frozen=True, slots=True)
class ExternalDone:
    """What a code workflow sent another run (a signal, a cancel) is durable there.

    ``ok``: ``value`` is the target's answer (True, or False for a duplicate or a finished
    run); else ``value`` is the exception it was refused with.
    """

    run_id: str  # the sender
    path: str  # the sender's command
    ok: bool
    value: Any


@dataclass(frozen=True, slots=True)
class CancelRun:
    """Cancel a run; ``reply`` gets True if it was active, once the cancel is durable.

    ``terminate``: end it at once, as Temporal's terminate: its code is not told and no
    ``on_cancel`` handler runs (a parent's close policy ``terminate``).
    """

    run_id: str
    reason: str
    reply: Promise[bool]
    terminate: bool = False


@dataclass(frozen=True, slots=True)
class EventDelivered:
    """A published event was recorded in a waiting step's inbox (``events`` db)."""

    run_id: str
    path: str
    event_id: str


@dataclass(frozen=True, slots=True)
class ResumeApproval:
    """``engine.resume(token, payload)``: ``reply`` gets True once the resume is durable."""

    run_id: str
    path: str
    token: str
    payload: bytes
    reply: Promise[bool]


@dataclass(frozen=True, slots=True)
class SignalRun:
    """``handle.signal(name, payload)``: ``reply`` gets True once the signal is durable.

    With an idempotency key, a second signal with the same key is dropped (``reply`` gets
    False). ``spread``: ``payload`` is the encoded list of the handler's arguments
    (``handle.signal(name, args=[...])``), not its one argument.
    """

    run_id: str
    name: str
    payload: bytes
    reply: Promise[bool]
    idempotency_key: str | None = None
    spread: bool = False


@dataclass(frozen=True, slots=True)
class QueryRun:
    """``handle.query(name, *args)``: ``reply`` gets the query handler's answer."""

    run_id: str
    name: str
    args: tuple[Any, ...]
    reply: Promise[Any]


@dataclass(frozen=True, slots=True)
class UpdateRun:
    """``handle.update(name, payload)``: ``reply`` gets the handler's result once durable."""

    run_id: str
    name: str
    payload: bytes
    update_id: str
    reply: Promise[Any]


@dataclass(frozen=True, slots=True)
class RestartRun:
    """``engine.restart(run_id)``: restart a panicked code workflow run from its history.

    The shard sends it to itself again (``durable=True``) once its earlier writes are
    durable, so that the replay reads the whole history.
    """

    run_id: str
    reply: Promise[bool]
    durable: bool = False


@dataclass(frozen=True, slots=True)
class Flush:
    """Complete ``done`` after every write this shard sent before it is durable."""

    done: Promise[None]


# -- to the scheduler and the writer ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddTimers:
    """Fire ``TimerFired`` for each (due, run id, name) when due (records already durable)."""

    timers: tuple[tuple[float, str, str], ...]


@dataclass(frozen=True, slots=True)
class Write:
    """Ops to commit in the next group, and what to do once they are durable.

    The writer merges the effects of a whole group: one ``Dispatch`` for every task in it, one
    ``AddTimers``, one ``CancelTasks``, so the other actors get one message per commit instead
    of one per run. ``then`` callbacks run on the writer's thread and must be quick and
    non-blocking (``tell``, ``Promise.set_result``); ``on_error`` gets the error if the commit
    fails.
    """

    ops: tuple[Op, ...] | list[Op]
    dispatch: tuple[TaskSpec, ...] | list[TaskSpec] = ()
    timers: tuple[tuple[float, str, str], ...] | list[tuple[float, str, str]] = ()
    cancel: tuple[str, ...] | list[str] = ()
    cancel_tasks: tuple[tuple[str, str], ...] | list[tuple[str, str]] = ()
    then: tuple[Callable[[], Any], ...] | list[Callable[[], Any]] = ()
    on_error: Callable[[BaseException], Any] | None = field(default=None)
