"""What every run has, graph or code: its effects, its status in the index, its opening.

The two supervisors (``_graph.Supervisor`` for graph workflows, ``_code.CodeSupervisor``
for code workflows) are two ways of choosing a run's
next commands; what a run does to the store around them is the same and lives here:

- :class:`RunMachine`: the base of both supervisors: the run header and its record, timers,
  a failed attempt (its record, failure count, breaker and retry delay) and a retry
  armed for later, an internal failure, and the common part of finishing;
- :class:`Effects`: what handling one event produced (ops to commit, then the actions to
  take once they are durable: tasks, timers, child messages, user callbacks);
- :class:`HasEffects`: a supervisor's ``fx``, made on first use;
- :func:`open_run`: a new run's records (payload, indexes, idempotency key), queued or
  begun by admission;
- :func:`move_status`: a status change and its index entries, in the same write;
- :func:`unhold`: a run that waited for its definition goes on.

Data flow: a supervisor appends to ``fx`` while it handles an event; its shard takes the
effects (``take_effects``) and sends the ops to the writer, then acts on the rest in the
write's callback (record before dispatch).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from actorflow._types import RunStatus, StepStatus
from actorflow.runtime._core import CodeCompiled, Compiled, Core
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    AttemptSucceeded,
    ChildFinished,
    EventDelivered,
    ResumeApproval,
    TaskSpec,
)
from actorflow.runtime.supervision._steps import (
    Leaf,
    attempt_record,
    attempt_summary,
    circuit_error,
    error_record,
    retry_delay,
)
from actorflow.store import _keys as K
from actorflow.store._protocol import Op
from actorflow.store._records import dump_record
from actorflow.store._search import index_ops
from actorflow.views import run_depth

__all__ = [
    "Effects",
    "HasEffects",
    "RunMachine",
    "Supervising",
    "move_status",
    "open_run",
    "unhold",
]

log = logging.getLogger("actorflow.engine")


class Effects:
    """What handling one event produced: ops to commit, then actions once they are durable.

    A plain slotted class: one is made per event, and a dataclass with default factories
    costs several times more to build.
    """

    __slots__ = (
        "after",
        "cancel_tasks",
        "children",
        "continued",
        "finished",
        "ops",
        "replies",
        "stop",
        "tasks",
        "timers",
    )

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.tasks: list[TaskSpec] = []
        self.timers: list[tuple[float, str, str]] = []
        self.cancel_tasks = False  # every task of the run
        self.stop: list[tuple[str, str]] = []  # (run id, step path) tasks to stop
        self.children: list[Any] = []  # messages to child runs' shards: ("start"|"cancel", ...)
        self.finished = False
        self.after: list[tuple[Any, ...]] = []  # (user callback, *args) to call once durable
        # Code workflows: (run id, update id, result, error) of updates to answer once
        # durable, and the (run id, workflow) a run continued as.
        self.replies: list[tuple[str, str, Any, BaseException | None]] = []
        self.continued: tuple[str, str] | None = None


class HasEffects:
    """The ``fx`` of a run's supervisor: its :class:`Effects`, made when first used.

    A run waiting on a step holds none: its shard took the last one (:meth:`take_effects`)
    and the next event makes the next. Seven empty lists per idle run would be seventy
    thousand objects for ten thousand runs in flight, each walked by every full collection
    of the cyclic garbage collector, which holds the GIL (and any event loop) meanwhile.
    """

    __slots__ = ("_fx",)
    _fx: Effects | None

    @property
    def fx(self) -> Effects:
        """This event's effects (a fresh :class:`Effects` if none yet)."""
        fx: Effects | None = self._fx
        if fx is None:
            fx = self._fx = Effects()
        return fx

    @fx.setter
    def fx(self, value: Effects) -> None:
        self._fx = value

    def take_effects(self) -> Effects:
        """Hand over the effects gathered so far; the next use of ``fx`` starts anew."""
        fx = self.fx
        self._fx = None
        return fx


class Supervising(Protocol):
    """What a shard calls on a run it holds: either supervisor, or a held run's stand-in.

    The shard routes each message for a run to one of these, then takes the run's effects
    (``take_history``, ``take_effects``) and commits them; ``passive`` says whether the run
    may leave memory. Code-workflow operations (signals, queries, updates, restarts) are
    the code supervisor's alone: the shard narrows to it first.
    """

    run_id: str
    workflow_id: str
    status: RunStatus
    finished: bool
    commits: int
    parent: tuple[str, str] | None
    error: dict[str, Any] | None

    @property
    def fx(self) -> Effects: ...
    def resume(self, admitted_at: float | None = None) -> None: ...
    def on_succeeded(self, msg: AttemptSucceeded) -> None: ...
    def on_failed(self, msg: AttemptFailed) -> None: ...
    def on_timer(self, name: str, due: float) -> None: ...
    def on_event(self, msg: EventDelivered) -> None: ...
    def on_resume(self, msg: ResumeApproval) -> str | None: ...
    def on_child_finished(self, msg: ChildFinished) -> None: ...
    def cancel(self, reason: str, terminate: bool = False) -> bool: ...
    def fail_internal(self, exc: BaseException) -> None: ...
    def take_history(self) -> None: ...
    def take_effects(self) -> Effects: ...
    def passive(self) -> bool: ...


class RunMachine(HasEffects):
    """One run, graph or code: what the two supervisors share.

    A subclass chooses the run's next commands (the graph evaluator, or the workflow
    function on its deterministic loop); this base keeps the run's header, writes its
    record, arms and drops its timers, handles a failed attempt up to the retry decision,
    and does the common part of ending a run. Slots: ten thousand waiting runs each keep
    one in memory.

    Each supervisor defines ``_put_run`` (the run record: :meth:`run_header` plus its own
    fields), ``_finish`` (calling :meth:`_close_run` first) and ``_on_internal_failure``;
    they are declared here for the type checker only, so nothing stands in for them.
    """

    __slots__ = (
        "cancel_reason",
        "commits",
        "compiled",
        "core",
        "created_at",
        "deadline",
        "depth",
        "ended_at",
        "error",
        "finished",
        "idempotency_key",
        "memo",
        "mocks",
        "parent",
        "payload",
        "priority",
        "run_id",
        "search_attributes",
        "started_at",
        "status",
        "unstarted",
        "workflow_id",
    )

    def __init__(
        self, core: Core, compiled: Compiled | CodeCompiled, run_id: str, payload: bytes
    ) -> None:
        self.core = core
        self.compiled = compiled
        self.run_id = run_id
        self.workflow_id: str = compiled.spec.id
        self.commits = 0  # effects folded into shard writes (see Shard._passivate)
        self.payload = payload
        self.status = RunStatus.RUNNING
        self.created_at = 0.0
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.idempotency_key: str | None = None
        self.deadline: float | None = None
        self.error: dict[str, Any] | None = None
        self.cancel_reason: str | None = None
        self.parent: tuple[str, str] | None = None
        self.depth = 0  # below the top-level run (see runtime/supervision/_depth.py)
        self.priority = 0  # among queued runs (kept so that recovery queues it the same)
        #: Steps answered without running: name or path -> JSON output (``engine.retry``).
        self.mocks: dict[str, Any] | None = None
        #: Indexed attributes (``store/_search.py``) and a memo, shown with the run.
        self.search_attributes: dict[str, Any] = {}
        self.memo: dict[str, Any] | None = None
        self.finished = False
        self._fx = None
        # After a reload: the attempts the last stop recorded as never started, by task step.
        self.unstarted: dict[str, int] = {}

    # -- the run record ----------------------------------------------------------------------

    def run_header(self) -> dict[str, Any]:
        """The fields of the run record every run has (the subclass adds its own)."""
        rec: dict[str, Any] = {
            "id": self.run_id,
            "workflow": self.workflow_id,
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "idempotency_key": self.idempotency_key,
            "deadline": self.deadline,
            "error": self.error,
            "cancel_reason": self.cancel_reason,
            "parent": list(self.parent) if self.parent else None,
        }
        version = self.compiled.spec.version
        if version != 1:
            rec["version"] = version  # (absent: version 1, see run_version)
        if self.depth:
            rec["depth"] = self.depth
        if self.priority:
            rec["priority"] = self.priority  # (absent: 0)
        if self.mocks:
            rec["mocks"] = self.mocks
        if self.search_attributes:
            rec["search_attributes"] = self.search_attributes
        if self.memo is not None:
            rec["memo"] = self.memo
        return rec

    def load_header(self, rec: dict[str, Any], no_payload: bytes) -> None:
        """Take up a live run's header from its record ``rec`` (at a reload).

        Args:
            rec: the run record :meth:`run_header` wrote.
            no_payload: the payload to assume when none is stored (``null`` for a graph
                run, no arguments for a code run).
        """
        store = self.core.store
        self.status = RunStatus(rec["status"])
        self.created_at = rec["created_at"]
        self.started_at = rec.get("started_at")
        self.idempotency_key = rec.get("idempotency_key")
        self.deadline = rec.get("deadline")
        # A live run with a reason is being cancelled (its clean-up runs): it keeps the reason.
        self.cancel_reason = rec.get("cancel_reason")
        parent = rec.get("parent")
        self.parent = (parent[0], parent[1]) if parent else None
        self.depth = run_depth(store, rec)
        self.priority = rec.get("priority", 0)
        self.mocks = rec.get("mocks")
        self.search_attributes = rec.get("search_attributes") or {}
        self.memo = rec.get("memo")
        self.payload = store.get(K.VALUES, K.payload_key(self.run_id)) or no_payload

    # -- timers ------------------------------------------------------------------------------

    def _timer(self, due: float, name: str) -> None:
        """Arm the durable timer ``name`` (``kind`` or ``kind:step``) of this run at ``due``."""
        kind, _, step = name.partition(":")
        record = {"kind": kind, "step": step} if step else {"kind": kind}
        self.fx.ops.append((K.TIMERS, K.timer_key(due, self.run_id, name), dump_record(record)))
        self.fx.timers.append((due, self.run_id, name))

    def _drop_timer(self, due: float, name: str) -> None:
        self.fx.ops.append((K.TIMERS, K.timer_key(due, self.run_id, name), None))

    # -- a failed attempt --------------------------------------------------------------------

    def record_attempt(self, leaf: Leaf, msg: AttemptFailed, kind: str | None = None) -> None:
        """Add the failed attempt ``msg`` reports to ``leaf``'s attempts, and count it.

        ``kind`` overrides the attempt's kind (a graph step's error handler: ``handler``).
        """
        err = msg.error
        leaf.started_at = msg.started_at
        leaf.ended_at = msg.ended_at
        leaf.attempts.append(
            attempt_record(
                msg.attempt, "failed", kind or err.kind, msg.started_at, msg.ended_at,
                attempt_summary(err), msg.pid,
            )
        )  # fmt: skip
        leaf.failures += 1

    def attempt_failed(
        self, leaf: Leaf, msg: AttemptFailed, retry: Any, breaker: Any
    ) -> float | None:
        """Record a failed attempt of ``leaf``; the delay before the next one, or None.

        Both kinds of run do the same here: the attempt's entry, the failure count, the
        error record, the breaker told (not of a failure an open circuit made), and the
        retry policy's delay (an open circuit's own delay for a circuit failure). The caller
        then dispatches again at once (a delay <= 0), arms :meth:`retry_later`, or fails the
        step for good (None).
        """
        self.record_attempt(leaf, msg)
        err = msg.error
        if err.details is not None:
            leaf.details = err.details
        leaf.error = error_record(err, leaf.path, msg.attempt)
        if breaker is not None and not circuit_error(err):
            breaker.failed()
        delay = retry_delay(retry, leaf, err, self.core.clock.now(), self.core.rng.random())
        if delay is not None and breaker is not None and circuit_error(err):
            delay = float(breaker.retry_after(delay))
        return delay

    def retry_later(self, leaf: Leaf, delay: float) -> None:
        """Record ``leaf`` as retrying and arm its retry timer ``delay`` seconds from now."""
        leaf.status = StepStatus.RETRYING
        leaf.next_retry_at = self.core.clock.now() + delay
        self.fx.ops.append(leaf.put())
        self._timer(leaf.next_retry_at, "retry:" + leaf.path)

    # -- ending ------------------------------------------------------------------------------

    def run_timed_out(self, due: float) -> bool:
        """The run's ``deadline`` timer fired at ``due``: record its :class:`RunTimeout`.

        Returns:
            True when the run must now end as failed (the supervisor stops its work and
            calls ``_finish``); False for a stale timer (the deadline moved since).
        """
        if self.deadline is None or abs(self.deadline - due) > 1e-3:
            return False
        timeout = self.compiled.spec.timeout or 0.0
        self.error = {
            "kind": "run_timeout",
            "type": "actorflow.errors.RunTimeout",
            "types": ["actorflow.errors.RunTimeout"],
            "message": f"the run exceeded the workflow timeout of {timeout:g}s",
            "timeout": timeout,
        }
        self.cancel_reason = "the run exceeded its timeout"
        return True

    def fail_internal(self, exc: BaseException) -> None:
        """An engine bug while handling this run: fail it rather than leave it hanging."""
        if self.finished:
            return
        self.fx = Effects()
        self._on_internal_failure()
        self.error = {
            "kind": "internal",
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "types": [],
            "message": f"internal engine error: {exc}",
        }
        self._finish(RunStatus.FAILED)

    if TYPE_CHECKING:  # what each supervisor defines (declared for the type checker only)

        def _put_run(self) -> None:
            """Write the run record: :meth:`run_header` and the supervisor's own fields."""

        def _on_internal_failure(self) -> None:
            """Drop what the failed handling had gathered (the supervisor's own state)."""

        def _finish(self, status: RunStatus) -> None:
            """End the run: :meth:`_close_run`, the supervisor's own clean-up, the record."""

    def _close_run(self, status: RunStatus) -> None:
        """The common start of finishing: the end time, the status, the deadline dropped."""
        self.ended_at = self.core.clock.now()
        move_status(self, status)
        self.finished = True
        if self.deadline is not None:
            self._drop_timer(self.deadline, "deadline")


def unhold(sup: Any) -> None:
    """A run that waited for its definition is loaded again: it is running, from its next write.

    (If it reaches a step still undefined, ``Supervisor.hold_missing`` holds it again.)
    """
    if sup.status == RunStatus.WAITING_FOR_DEFINITION:
        move_status(sup, RunStatus.RUNNING)
        if hasattr(sup, "held_reason"):
            sup.held_reason = None
        sup.core.held.pop(sup.run_id, None)
        sup._put_run()
        log.info("run %s goes on: its definition is back", sup.run_id)


def move_status(sup: Any, status: RunStatus) -> None:
    """Set a run's status and move it in the status index (in the same write).

    A run that finishes also enters the end-time index, which retention reads: its
    ``ended_at`` is set before this call. Finished is final, so that entry never moves.
    """
    old = sup.status
    sup.status = status
    if old != status:
        ops = sup.fx.ops
        ops.append((K.INDEX, K.status_index_key(old, sup.run_id), None))
        ops.append((K.INDEX, K.status_index_key(status, sup.run_id), b""))
        if status.terminal and sup.ended_at is not None:
            ops.append((K.INDEX, K.end_index_key(sup.workflow_id, sup.ended_at, sup.run_id), b""))


def open_run(
    sup: Any,
    payload: bytes,
    idempotency_key: str | None,
    parent: tuple[str, str] | None,
    depth: int = 0,
    priority: int = 0,
    mocks: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
    memo: dict[str, Any] | None = None,
) -> None:
    """Record a new run (graph or code) as running or queued, and begin it if admitted."""
    core, run_id = sup.core, sup.run_id
    now = core.clock.now()
    sup.payload = payload
    sup.created_at = now
    sup.idempotency_key = idempotency_key
    sup.parent = parent
    sup.depth = depth
    sup.priority = priority
    sup.mocks = mocks
    sup.search_attributes = attrs or {}
    sup.memo = memo
    admitted = core.admission.try_acquire(sup.workflow_id, run_id, priority)
    sup.status = RunStatus.RUNNING if admitted else RunStatus.QUEUED
    ops = sup.fx.ops
    ops.append((K.VALUES, K.payload_key(run_id), payload))
    ops.append((K.INDEX, K.status_index_key(sup.status, run_id), b""))
    ops.append((K.INDEX, K.workflow_index_key(sup.workflow_id, run_id), b""))
    if attrs:
        ops.extend(index_ops(run_id, {}, attrs))
    if idempotency_key is not None:
        key = K.idempotency_key(sup.workflow_id, idempotency_key)
        ops.append((K.IDEMPOTENCY, key, run_id.encode()))
    if admitted:
        sup._begin(now)
    else:
        sup._put_run()
