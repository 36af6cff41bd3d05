"""What every run has, graph or code: its effects, its status in the index, its opening.

The two supervisors (``_supervisor.Supervisor`` for graph workflows,
``_code_supervisor.CodeSupervisor`` for code workflows) are two ways of choosing a run's
next commands; what a run does to the store around them is the same and lives here:

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
from typing import Any

from actorflow._types import RunStatus
from actorflow.runtime._messages import TaskSpec
from actorflow.store import _keys as K
from actorflow.store._protocol import Op

__all__ = ["Effects", "HasEffects", "move_status", "open_run", "unhold"]

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
) -> None:
    """Record a new run (graph or code) as running or queued, and begin it if admitted."""
    core, run_id = sup.core, sup.run_id
    now = core.clock.now()
    sup.payload = payload
    sup.created_at = now
    sup.idempotency_key = idempotency_key
    sup.parent = parent
    sup.depth = depth
    admitted = core.admission.try_acquire(sup.workflow_id, run_id)
    sup.status = RunStatus.RUNNING if admitted else RunStatus.QUEUED
    ops = sup.fx.ops
    ops.append((K.VALUES, K.payload_key(run_id), payload))
    ops.append((K.INDEX, K.status_index_key(sup.status, run_id), b""))
    ops.append((K.INDEX, K.workflow_index_key(sup.workflow_id, run_id), b""))
    if idempotency_key is not None:
        key = K.idempotency_key(sup.workflow_id, idempotency_key)
        ops.append((K.IDEMPOTENCY, key, run_id.encode()))
    if admitted:
        sup._begin(now)
    else:
        sup._put_run()
