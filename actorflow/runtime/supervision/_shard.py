"""Shard actors: each hosts the supervisors of the runs whose ids hash to it.

A fixed number of shards host any number of runs, so ten thousand live runs do not need ten
thousand threads. A shard feeds each message to its run's supervisor and sends the resulting
effects to the store writer as one :class:`Write`, whose callbacks carry out the effects once
durable. Runs that are not in memory (after a restart, or queued) are loaded from the store on
demand; a finished run stays in memory until its final write is durable, so that a late event
can never reload it from a store that does not show it finished yet.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actorflow import _faults
from actorflow._types import RunStatus
from actorflow.errors import WriteRejected
from actorflow.runtime._core import Compiled, Core
from actorflow.runtime.kernel._counts import Counts
from actorflow.runtime.kernel._inbox import Actor, tell
from actorflow.runtime.kernel._lifecycle import RunFinished, RunStarted, StepAttempted
from actorflow.runtime.kernel._messages import (
    ActivateRun,
    AttemptFailed,
    AttemptResults,
    AttemptSucceeded,
    CancelRun,
    ChildFinished,
    ErrorInfo,
    EventDelivered,
    Flush,
    QueryRun,
    RestartRun,
    ResumeApproval,
    SignalRun,
    StartRun,
    TaskSpec,
    TimerFired,
    UpdateRun,
    Write,
)
from actorflow.runtime.kernel._promise import Promise
from actorflow.runtime.supervision._code import CodeSupervisor, finished_for_query
from actorflow.runtime.supervision._graph import Supervisor
from actorflow.runtime.supervision._held import HeldRun
from actorflow.runtime.supervision._loading import load_run
from actorflow.runtime.supervision._run import Supervising
from actorflow.runtime.supervision._steps import attempt_summary
from actorflow.store import _keys as K
from actorflow.store._codec import set_thread_sink
from actorflow.store._protocol import Op, long_key
from actorflow.store._records import load_record

__all__ = ["Shard"]

log = logging.getLogger("actorflow.runtime")

#: Most messages whose effects one write carries (bounds the latency batching adds).
_MAX_PENDING = 256


class Shard(Actor):
    """Hosts supervisors and commits their effects.

    While more messages wait in its inbox, a shard keeps adding their effects to one pending
    :class:`Write` and sends it when the inbox is empty (or :data:`_MAX_PENDING` messages were
    folded in): under load, many runs' steps share one message to the writer and one to the
    dispatcher.

    Args:
        core: the engine core.
        index: this shard's number, for logs.
    """

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

    def on_receive(self, message: Any) -> Any:
        durable = self._durable
        while durable:
            self._passivate(durable.popleft())
        if self._sticky and self._sticky_ttl is not None:
            self._sticky_trim()
        t = type(message)
        if t is AttemptResults:
            for result in message.results:
                self._handle(result)
        else:
            self._handle(message)
        if self._touched:
            # Results of one batch fold into one commit per run: one history record, one
            # progress record, however many items finished.
            touched, self._touched = self._touched, {}
            for sup in touched.values():
                self._commit(sup)
        self._folded += 1
        if self._folded >= _MAX_PENDING or self.actor_inbox.empty():
            self._flush()
        return None

    def _handle_receive(self, message: Any) -> Any:
        # A pykka message (a proxy reading ``counts`` or ``live_runs`` for statistics and
        # metrics) does not go through on_receive: if it was what kept the inbox from being
        # empty there, the pending write would wait for the next ordinary message.
        result = super()._handle_receive(message)
        if (self._ops or self._then) and self.actor_inbox.empty():
            self._flush()
        return result

    def on_start(self) -> None:
        # Values supervisors encode here (items, step arguments, child inputs, results) put
        # their large buffers in shared memory.
        set_thread_sink(self._core.sink)

    def on_stop(self) -> None:
        self._flush()

    def _handle(self, message: Any) -> None:
        t = type(message)
        try:
            if t is AttemptSucceeded:
                if _faults.ACTIVE:
                    _faults.crash_point("shard.before_record")
                sup = self._runs.get(message.run_id)
                if sup is not None:
                    self.counts.step_ended(
                        sup.workflow_id,
                        message.step,
                        "succeeded",
                        message.started_at,
                        message.ended_at,
                    )
                    if self._core.lifecycle.active:
                        self._step_event(sup, message, "succeeded", None)
                    sup.on_succeeded(message)
                    self._touched[sup.run_id] = sup
            elif t is AttemptFailed:
                sup = self._runs.get(message.run_id)
                if sup is not None:
                    kind = message.error.kind
                    self.counts.step_ended(
                        sup.workflow_id, message.step, kind, message.started_at, message.ended_at
                    )
                    if self._core.lifecycle.active:
                        self._step_event(sup, message, kind, message.error)
                    sup.on_failed(message)
                    self._touched[sup.run_id] = sup
            elif t is TimerFired:
                sup = self._activate(message.run_id)
                if sup is not None:
                    sup.on_timer(message.name, message.due)
                    self._commit(sup)
            elif t is ChildFinished:
                sup = self._activate(message.run_id)
                if sup is not None:
                    sup.on_child_finished(message)
                    self._commit(sup)
            elif t is EventDelivered:
                sup = self._activate(message.run_id)
                if sup is not None:
                    sup.on_event(message)
                    self._commit(sup)
            elif t is ResumeApproval:
                self._resume_approval(message)
            elif t is StartRun:
                self._start(message)
            elif t is ActivateRun:
                self._activate(message.run_id, admit=True)
            elif t is CancelRun:
                self._cancel_run(message)
            elif t is Flush:
                self._then.append(functools.partial(message.done.set_result, None))
            elif t is SignalRun:
                self._signal(message)
            elif t is QueryRun:
                self._query(message)
            elif t is UpdateRun:
                self._update(message)
            elif t is RestartRun:
                self._restart(message)
            elif t is _Refused:
                self._fail_refused(message)
            else:
                super().on_receive(message)
        except Exception as exc:
            # A bug handling one run must neither stop this actor (and with it every run on
            # this shard) nor leave the run hanging: fail that run and go on.
            run_id = getattr(message, "run_id", None)
            log.exception("shard %d: error handling %s", self._index, t.__name__)
            sup = self._runs.get(run_id) if run_id else None
            if sup is not None:
                self._touched.pop(sup.run_id, None)
                try:
                    sup.fail_internal(exc)
                    self._commit(sup)
                except Exception:
                    log.exception("shard %d: could not fail run %s", self._index, run_id)
            reply = getattr(message, "reply", None)
            if reply is not None and not reply.done():
                reply.set_exception(exc)

    # -- handlers --------------------------------------------------------------------------

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

    def _emit(self, event: Any) -> None:
        """Deliver a lifecycle event once the write now being gathered is durable."""
        self._then.append(functools.partial(self._core.lifecycle.emit, event))

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

    def _start(self, msg: StartRun) -> None:
        if msg.run_id in self._runs or self._core.store.get(K.RUNS, K.run_key(msg.run_id)):
            # A child run started again after a restart: it exists, nothing to do.
            self._then.append(functools.partial(msg.reply.set_result, None))
            return
        compiled = self._core.workflows[msg.workflow_id]
        sup: Supervising
        if isinstance(compiled, Compiled):
            sup = Supervisor.new(
                self._core, compiled, msg.run_id, msg.payload, msg.idempotency_key,
                msg.parent, msg.depth,
            )  # fmt: skip
        else:
            sup = CodeSupervisor.new(
                self._core, compiled, msg.run_id, msg.payload, msg.idempotency_key,
                msg.parent, msg.depth,
            )  # fmt: skip
        self._runs[msg.run_id] = sup
        self.counts.run_started(msg.workflow_id)
        if self._core.lifecycle.active:
            parent = msg.parent[0] if msg.parent else None
            now = self._core.clock.now()
            self._emit(RunStarted(msg.run_id, msg.workflow_id, now, parent))
        reply = msg.reply
        self._commit(
            sup, after=functools.partial(reply.set_result, None), on_error=reply.set_exception
        )

    def _activate(self, run_id: str, admit: bool = False) -> Supervising | None:
        """Return the live supervisor of ``run_id``, loading and resuming it if needed.

        Args:
            run_id: the run.
            admit: the admission controller let this run start (it may be queued).
        """
        sup = self._runs.get(run_id)
        if sup is None:
            sup = load_run(self._core, run_id)
            if sup is None:
                return None
            if sup.status == RunStatus.QUEUED and not admit:
                return None  # only admission starts a queued run
            self._runs[run_id] = sup
        elif not (admit and sup.status == RunStatus.QUEUED):
            return sup  # already live: a duplicate activation is harmless
        sup.resume()
        self._commit(sup)
        return sup

    def _code_run(self, run_id: str, reply: Promise[Any], what: str) -> CodeSupervisor | None:
        """The live code workflow run ``run_id`` (loaded if needed), or None (reply failed)."""
        from actorflow.errors import ClientError, RunNotFound

        sup = self._activate(run_id)
        if sup is None:
            # Queued (not admitted yet): loaded without starting; signals wait in its history.
            sup = load_run(self._core, run_id)
            if sup is not None and sup.status == RunStatus.QUEUED:
                self._runs[run_id] = sup
            else:
                sup = None
        if sup is None:
            raw = self._core.store.get(K.RUNS, K.run_key(run_id))
            held = self._core.held.get(run_id)
            if raw is None:
                reply.set_exception(RunNotFound(run_id))
            elif held is not None:
                reply.set_exception(_held_error(run_id, held, f"{what} is refused meanwhile"))
            else:
                reply.set_exception(
                    ClientError(f"{what}: run {run_id} has finished (or is not defined here)")
                )
            return None
        if not isinstance(sup, CodeSupervisor):
            reply.set_exception(
                ClientError(
                    f"{what}: run {run_id} is a graph workflow's; signals, queries and updates "
                    "are for code workflows (@engine.workflow)"
                )
            )
            return None
        return sup

    def _signal(self, msg: SignalRun) -> None:
        sup = self._code_run(msg.run_id, msg.reply, f"signal {msg.name!r}")
        if sup is None:
            return
        fresh = sup.on_signal(msg.name, msg.payload, msg.idempotency_key)
        reply = msg.reply
        self._commit(
            sup, after=functools.partial(reply.set_result, fresh), on_error=reply.set_exception
        )

    def _query(self, msg: QueryRun) -> None:
        if msg.run_id not in self._runs:
            done = finished_for_query(self._core, msg.run_id)
            if done is not None:  # a finished run: its final state, rebuilt by replay
                try:
                    msg.reply.set_result(done.query(msg.name, msg.args))
                except Exception as exc:
                    msg.reply.set_exception(exc)
                finally:
                    done.evict()
                return
        sup = self._code_run(msg.run_id, msg.reply, f"query {msg.name!r}")
        if sup is None:
            return
        try:
            msg.reply.set_result(sup.query(msg.name, msg.args))
        except Exception as exc:
            msg.reply.set_exception(exc)
        self._commit(sup)

    def _update(self, msg: UpdateRun) -> None:
        sup = self._code_run(msg.run_id, msg.reply, f"update {msg.name!r}")
        if sup is None:
            return
        sup.on_update(msg.name, msg.payload, msg.update_id, msg.reply)
        self._commit(sup, on_error=msg.reply.set_exception)

    def _restart(self, msg: RestartRun) -> None:
        from actorflow.errors import ClientError

        if not msg.durable:
            # Replay reads the history from the store: wait until what this shard sent
            # before is durable, then handle the restart for real.
            again = RestartRun(msg.run_id, msg.reply, durable=True)
            self._then.append(functools.partial(tell, self.actor_ref, again))
            return
        sup = self._runs.get(msg.run_id)
        if sup is None:
            sup = load_run(self._core, msg.run_id)
            if sup is not None:
                self._runs[msg.run_id] = sup
        if not isinstance(sup, CodeSupervisor) or not sup.restart():
            status = getattr(sup, "status", "finished or unknown")
            msg.reply.set_exception(
                ClientError(
                    f"restart: run {msg.run_id} is not panicked ({status}); only a panicked "
                    "code workflow run can be restarted"
                )
            )
            return
        reply = msg.reply
        self._commit(
            sup, after=functools.partial(reply.set_result, True), on_error=reply.set_exception
        )

    def _cancel_run(self, msg: CancelRun) -> None:
        sup: Supervising | HeldRun | None = self._runs.get(msg.run_id)
        if sup is None:
            # Not live: queued, or never activated since a restart. Load without resuming.
            loaded = load_run(self._core, msg.run_id)
            if loaded is not None:
                self._runs[msg.run_id] = sup = loaded
        if sup is None:
            sup = self._held_run(msg.run_id)
        if sup is None or not sup.cancel(msg.reason):
            msg.reply.set_result(False)
            return
        reply = msg.reply
        self._commit(
            sup, after=functools.partial(reply.set_result, True), on_error=reply.set_exception
        )

    def _held_run(self, run_id: str) -> HeldRun | None:
        """A stand-in for a held run no supervisor can load (``_held.py``), or None."""
        if run_id not in self._core.held:
            return None
        raw = self._core.store.get(K.RUNS, K.run_key(run_id))
        return None if raw is None else HeldRun(self._core, load_record(raw, f"run {run_id}"))

    def _resume_approval(self, msg: ResumeApproval) -> None:
        from actorflow.errors import ApprovalAlreadyResolved

        sup = self._activate(msg.run_id)
        held = self._core.held.get(msg.run_id) if sup is None else None
        if held is not None:
            msg.reply.set_exception(_held_error(msg.run_id, held, "the approval stays open"))
            return
        problem = "resolved" if sup is None else sup.on_resume(msg)
        if sup is None or problem is not None:
            msg.reply.set_exception(
                ApprovalAlreadyResolved(
                    f"approval {msg.path!r} of run {msg.run_id} is no longer waiting "
                    "(already resumed, expired, or its run ended)"
                )
            )
            if sup is not None:
                self._commit(sup)
            return
        reply = msg.reply
        self._commit(
            sup, after=functools.partial(reply.set_result, True), on_error=reply.set_exception
        )

    # -- committing effects ----------------------------------------------------------------

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
            else:
                self._then.append(functools.partial(self._cancel_child, child[1]))
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

    def _cancel_child(self, child_run_id: str) -> None:
        tell(
            self._core.route(child_run_id),
            CancelRun(child_run_id, "its parent run stopped it", Promise()),
        )

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
