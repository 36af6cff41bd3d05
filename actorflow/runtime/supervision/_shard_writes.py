"""A shard's runs in memory, and the one write their effects are folded into.

``Shard`` is built of two parts: ``ShardWrites`` (this module: the runs in memory and the
sticky cache of waiting code runs, folding each run's effects into the pending write,
sending it, and passivating runs once their last write is durable) <- ``Shard``
(``_shard.py``: routing each message to its run's supervisor).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actorflow._types import RunStatus
from actorflow.errors import WriteRejected
from actorflow.runtime._core import Core
from actorflow.runtime.kernel._counts import Counts
from actorflow.runtime.kernel._inbox import Actor, tell
from actorflow.runtime.kernel._lifecycle import RunFinished, StepAttempted
from actorflow.runtime.kernel._messages import (
    ActivateRun,
    AttemptFailed,
    AttemptSucceeded,
    CancelRun,
    ChildFinished,
    ErrorInfo,
    ExternalDone,
    SignalRun,
    TaskSpec,
    Write,
)
from actorflow.runtime.kernel._promise import Promise
from actorflow.runtime.supervision._code import CodeSupervisor
from actorflow.runtime.supervision._held import HeldRun
from actorflow.runtime.supervision._run import Supervising
from actorflow.runtime.supervision._steps import attempt_summary
from actorflow.store._protocol import Op, long_key

__all__ = ["ShardWrites"]

log = logging.getLogger("actorflow.runtime")

#: Most messages whose effects one write carries (bounds the latency batching adds).
_MAX_PENDING = 256


@dataclass(frozen=True)
class _Refused:
    """The store refused a write carrying these runs' effects (see ``Shard._refused``)."""

    runs: tuple[str, ...]
    error: str


def _answer(core: Core, run_id: str, update_id: str, value: Any, error: Any) -> None:
    reply = core.replies.pop((run_id, update_id), None)
    if reply is None or reply.done():
        return
    if error is not None:
        reply.set_exception(error)
    else:
        reply.set_result(value)


def _continued(core: Core, run_id: str, workflow: str) -> None:
    """A run continued as ``run_id``, whose record is durable: start it."""
    core.admission.adopt(workflow, run_id)
    tell(core.route(run_id), ActivateRun(run_id))


def _fail_all(callbacks: list[Callable[[BaseException], Any]], exc: BaseException) -> None:
    for callback in callbacks:
        callback(exc)


def _finished_event(sup: Supervising | HeldRun, now: float) -> RunFinished:
    status = RunStatus(sup.status)
    error: str | None = None
    if status == RunStatus.CANCELLED:
        error = getattr(sup, "cancel_reason", None)
    elif isinstance(sup.error, dict):
        error = str(sup.error.get("message") or "") or None
    return RunFinished(sup.run_id, sup.workflow_id, status, now, error)


def _held_error(run_id: str, reason: str, meanwhile: str) -> Exception:
    """What a caller addressing a run that waits for its definition is told."""
    from actorflow.errors import ClientError

    return ClientError(f"run {run_id} is waiting for its definition ({reason}); {meanwhile}")


class ShardWrites(Actor):
    """Runs in memory and the pending write (see the module docstring)."""

    def __init__(self, core: Core, index: int) -> None:
        super().__init__()
        self._core = core
        self._index = index
        # Graph supervisors and code supervisors alike.
        self._runs: dict[str, Supervising] = {}
        # Runs whose final (or queued) record is durable: the writer appends, this actor
        # drops them from memory at its next message (no extra wake-up per finished run).
        # (run id, its commit count then): the run may leave memory only if no later commit
        # is still on its way to the store (see ``_passivate``).
        self._durable: deque[tuple[str, int]] = deque()
        self._touched: dict[str, Supervising] = {}  # runs with effects not yet folded
        # Code workflows waiting (nothing in a worker), kept alive as suspended coroutines:
        # least recently used first. Past the size or the TTL they are evicted and rebuilt
        # by replay at their next event (see ``_sticky_trim``).
        self._sticky: OrderedDict[str, float] = OrderedDict()
        per_shard = -(-core.config.sticky_cache_size // max(1, core.config.shards))
        self._sticky_max = per_shard
        self._sticky_ttl = core.config.sticky_cache_ttl or None
        #: Runs and steps counted for the metrics (only this actor's thread writes it).
        self.counts = Counts()
        self._reset()

    def _reset(self) -> None:
        self._ops: list[Op] = []
        self._dispatch: list[TaskSpec] = []
        self._timers: list[tuple[float, str, str]] = []
        self._cancel: list[str] = []
        self._stops: list[tuple[str, str]] = []
        self._then: list[Callable[[], Any]] = []
        self._on_error: list[Callable[[BaseException], Any]] = []
        self._written: list[str] = []  # runs whose effects the pending write carries
        self._folded = 0

    @property
    def live_runs(self) -> int:
        """Runs in memory."""
        while self._durable:
            self._passivate(self._durable.popleft())
        return len(self._runs)

    @property
    def sticky_runs(self) -> int:
        """Code workflow runs kept in memory while they wait (the sticky cache)."""
        return len(self._sticky)

    def _commit(
        self,
        sup: Supervising | HeldRun,
        after: Callable[[], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> None:
        """Fold the supervisor's effects into the pending write."""
        sup.take_history()
        problem = long_key(sup.fx.ops)
        if problem is not None:
            # The store would refuse this run's records (and with them the whole group
            # commit): fail this run alone, before its effects join the others'.
            log.error("shard %d: run %s fails: %s", self._index, sup.run_id, problem)
            sup.fail_internal(WriteRejected(problem))
            sup.take_history()
        fx = sup.take_effects()
        self._written.append(sup.run_id)
        sup.commits += 1
        commit = sup.commits
        self._ops.extend(fx.ops)
        if fx.tasks:
            self._dispatch.extend(fx.tasks)
        if fx.timers:
            self._timers.extend(fx.timers)
        if fx.cancel_tasks:
            self._cancel.append(sup.run_id)
        if fx.stop:
            self._stops.extend(fx.stop)
        core = self._core
        for child in fx.children:
            if child[0] == "start":
                self._then.append(functools.partial(core.start_child, *child[1:]))
            elif child[0] in ("cancel", "terminate"):
                stop = functools.partial(self._cancel_child, child[1], child[0] == "terminate")
                self._then.append(stop)
            else:  # a code workflow's ctx.external(...): a signal or a cancel
                self._then.append(functools.partial(self._external, *child))
        for call in fx.after:  # user callbacks (on_pause): never on the writer's thread
            self._then.append(functools.partial(core.background, *call))
        for answer in fx.replies:
            self._then.append(functools.partial(_answer, core, *answer))
        if fx.continued is not None:
            self._then.append(functools.partial(_continued, core, *fx.continued))
        if after is not None:
            self._then.append(after)
        if on_error is not None:
            self._on_error.append(on_error)
        if fx.finished:
            self.counts.run_finished(sup.workflow_id, str(sup.status))
            if core.lifecycle.active:
                self._emit(_finished_event(sup, core.clock.now()))
            self._then.append(functools.partial(core.on_run_finished, sup.run_id, sup.workflow_id))
            if sup.parent is not None and sup.status != RunStatus.CONTINUED:
                # (a run that continued as new: its parent hears from the last of the chain)
                parent, path = sup.parent
                message = ChildFinished(parent, path, sup.run_id)
                self._then.append(functools.partial(tell, core.route(parent), message))
        if sup.finished or sup.status == RunStatus.QUEUED or (not fx.tasks and sup.passive()):
            # Out of memory once durable: finished for good, queued until admitted, or only
            # waiting on timers and children (reloaded from its history when woken).
            self._then.append(functools.partial(self._durable.append, (sup.run_id, commit)))

    def _external(self, op: str, target: str, *rest: Any) -> None:
        """Send what ``ctx.external(target)`` asked, now that the command is durable.

        The target's reply goes back to the sender as :class:`ExternalDone`.
        """
        reply_to: tuple[str, str] = rest[-1]
        sent: Promise[Any] = Promise()
        if op == "external_signal":
            name, data, key, spread = rest[:4]
            message: Any = SignalRun(target, name, data, sent, key, spread)
        else:
            message = CancelRun(target, str(rest[0]) or f"cancelled by run {reply_to[0]}", sent)
        core = self._core

        def answered(done: Promise[Any]) -> None:
            error = done.exception()
            value = error if error is not None else done.result()
            tell(core.route(reply_to[0]), ExternalDone(*reply_to, error is None, value))

        sent.add_done_callback(answered)
        try:
            tell(core.route(target), message)
        except Exception as exc:  # no such run id (it cannot be routed)
            sent.set_exception(exc)

    def _cancel_child(self, child_run_id: str, terminate: bool = False) -> None:
        why = (
            "its parent run closed (parent_close_policy: terminate)"
            if terminate
            else ("its parent run stopped it")
        )
        tell(self._core.route(child_run_id), CancelRun(child_run_id, why, Promise(), terminate))

    def _flush(self) -> None:
        if not (self._ops or self._then):
            self._folded = 0
            return
        write = Write(
            self._ops,
            self._dispatch,
            self._timers,
            self._cancel,
            self._stops,
            self._then,
            functools.partial(self._refused, self._on_error, self._written),
        )
        self._reset()
        assert self._core.writer is not None
        self._core.writer.tell(write)

    def _refused(
        self, callbacks: list[Callable[[BaseException], Any]], runs: list[str], exc: BaseException
    ) -> None:
        """A write of this shard was not committed (called on the writer's thread)."""
        _fail_all(callbacks, exc)
        if isinstance(exc, WriteRejected) and runs:
            # Refused for its content although each run's keys were checked: which run
            # carried it is unknown, and their state in memory is ahead of the store. They
            # fail (an internal error) rather than go on from records the store lacks.
            tell(self.actor_ref, _Refused(tuple(runs), str(exc)))

    def _fail_refused(self, msg: _Refused) -> None:
        for run_id in msg.runs:
            sup = self._runs.get(run_id)
            if sup is not None and not sup.finished:
                sup.fail_internal(
                    WriteRejected(f"the store refused a write of this run: {msg.error}")
                )
                self._commit(sup)

    def _passivate(self, entry: tuple[str, int]) -> None:
        run_id, commit = entry
        sup = self._runs.get(run_id)
        if sup is None or sup.commits != commit:
            # A later commit of this run is not durable yet (its own entry follows): dropping
            # the run now would let the next message reload it from an older state and run
            # again what it has in flight (found as a step re-run under load).
            return
        if sup.finished or sup.status == RunStatus.QUEUED:
            del self._runs[run_id]
            self._sticky.pop(run_id, None)
        elif sup.passive():
            if isinstance(sup, CodeSupervisor) and sup.driver is not None:
                # A waiting code run stays alive (its coroutine holds no thread) until
                # the sticky cache needs its place.
                sup.quiet = True
                self._sticky[run_id] = time.monotonic()
                self._sticky.move_to_end(run_id)
                self._sticky_trim()
            else:
                del self._runs[run_id]

    def _sticky_trim(self) -> None:
        """Evict the least recently used waiting code runs past the cache's size or TTL."""
        sticky = self._sticky
        cutoff = None if self._sticky_ttl is None else time.monotonic() - self._sticky_ttl
        while sticky:
            run_id, since = next(iter(sticky.items()))
            if len(sticky) <= self._sticky_max and (cutoff is None or since > cutoff):
                return
            del sticky[run_id]
            sup = self._runs.get(run_id)
            if isinstance(sup, CodeSupervisor) and sup.quiet and sup.passive() and not sup.finished:
                sup.evict()
                del self._runs[run_id]

    def _emit(self, event: Any) -> None:
        """Deliver a lifecycle event once the write now being gathered is durable."""
        self._then.append(functools.partial(self._core.lifecycle.emit, event))

    def _step_event(
        self,
        sup: Supervising,
        message: AttemptSucceeded | AttemptFailed,
        outcome: str,
        error: ErrorInfo | None,
    ) -> None:
        """Tell lifecycle subscribers a step attempt ended (once it is durable)."""
        self._emit(
            StepAttempted(
                message.run_id,
                sup.workflow_id,
                message.step,
                message.attempt,
                outcome,
                message.started_at,
                message.ended_at,
                None if error is None else attempt_summary(error),
            )
        )
