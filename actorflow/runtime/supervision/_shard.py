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
from typing import Any

from actorflow import _faults
from actorflow._types import RunStatus
from actorflow.errors import NondeterminismError
from actorflow.runtime._core import Compiled
from actorflow.runtime.kernel._inbox import tell
from actorflow.runtime.kernel._lifecycle import RunStarted
from actorflow.runtime.kernel._messages import (
    ActivateRun,
    AttemptFailed,
    AttemptResults,
    AttemptSucceeded,
    CancelRun,
    ChildFinished,
    EventDelivered,
    ExternalDone,
    Flush,
    QueryRun,
    RestartRun,
    ResumeApproval,
    SignalRun,
    StartRun,
    TimerFired,
    UpdateRun,
)
from actorflow.runtime.kernel._promise import Promise
from actorflow.runtime.supervision._code import CodeSupervisor, finished_for_query
from actorflow.runtime.supervision._graph import Supervisor
from actorflow.runtime.supervision._held import HeldRun
from actorflow.runtime.supervision._loading import load_run
from actorflow.runtime.supervision._run import Supervising
from actorflow.runtime.supervision._shard_writes import (
    _MAX_PENDING,
    ShardWrites,
    _held_error,
    _Refused,
    log,
)
from actorflow.store import _keys as K
from actorflow.store._codec import set_thread_sink
from actorflow.store._records import load_record

__all__ = ["Shard"]


class Shard(ShardWrites):
    """Hosts supervisors and commits their effects.

    While more messages wait in its inbox, a shard keeps adding their effects to one pending
    :class:`Write` and sends it when the inbox is empty (or :data:`_MAX_PENDING` messages were
    folded in): under load, many runs' steps share one message to the writer and one to the
    dispatcher.

    Args:
        core: the engine core.
        index: this shard's number, for logs.
    """

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
            elif t is ExternalDone:
                sup = self._activate(message.run_id)
                if isinstance(sup, CodeSupervisor):
                    sup.on_external_done(message)
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
                self._activate(message.run_id, admit=True, at=message.admitted_at)
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
                msg.parent, msg.depth, msg.priority, msg.mocks, msg.attrs, msg.memo,
            )  # fmt: skip
        else:
            sup = CodeSupervisor.new(
                self._core, compiled, msg.run_id, msg.payload, msg.idempotency_key,
                msg.parent, msg.depth, msg.priority, msg.mocks, msg.attrs, msg.memo,
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

    def _activate(
        self, run_id: str, admit: bool = False, at: float | None = None
    ) -> Supervising | None:
        """Return the live supervisor of ``run_id``, loading and resuming it if needed.

        Args:
            run_id: the run.
            admit: the admission controller let this run start (it may be queued).
            at: when admission let it start (its ``started_at`` if it was queued).
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
        sup.resume(at)
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
        reply = msg.reply
        try:
            fresh = sup.on_signal(msg.name, msg.payload, msg.idempotency_key, msg.spread)
        except NondeterminismError as exc:
            reply.set_exception(exc)
            self._commit(sup)  # what loading it found (its panic) is recorded all the same
            return
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
            if (
                isinstance(loaded, CodeSupervisor)
                and loaded.status == RunStatus.RUNNING
                and not msg.terminate
            ):
                # Its function is told of the cancel and may run clean-up steps: it must be
                # live, with what it had in flight taken up (and then stopped by the cancel).
                sup = self._activate(msg.run_id)
            elif loaded is not None:
                self._runs[msg.run_id] = sup = loaded
        if sup is None:
            sup = self._held_run(msg.run_id)
        if sup is None or not sup.cancel(msg.reason, msg.terminate):
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
