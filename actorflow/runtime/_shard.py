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
from collections.abc import Callable
from typing import Any

from actorflow import _faults
from actorflow._types import RunStatus
from actorflow.runtime._core import Core
from actorflow.runtime._inbox import Actor
from actorflow.runtime._messages import (
    ActivateRun,
    AddTimers,
    CancelRun,
    CancelTasks,
    Dispatch,
    Flush,
    Passivate,
    StartRun,
    StepFailed,
    StepSucceeded,
    TimerFired,
    Write,
)
from actorflow.runtime._supervisor import Effects, Supervisor

__all__ = ["Shard"]

log = logging.getLogger("actorflow.runtime")


class Shard(Actor):
    """Hosts supervisors and commits their effects.

    Args:
        core: the engine core.
        index: this shard's number, for logs.
    """

    def __init__(self, core: Core, index: int) -> None:
        super().__init__()
        self._core = core
        self._index = index
        self._runs: dict[str, Supervisor] = {}

    @property
    def live_runs(self) -> int:
        """Runs in memory."""
        return len(self._runs)

    def on_receive(self, message: Any) -> Any:
        t = type(message)
        try:
            if t is StepSucceeded:
                if _faults.ACTIVE:
                    _faults.crash_point("shard.before_record")
                sup = self._runs.get(message.run_id)
                if sup is not None:
                    sup.on_succeeded(message)
                    self._commit(sup)
            elif t is StepFailed:
                sup = self._runs.get(message.run_id)
                if sup is not None:
                    sup.on_failed(message)
                    self._commit(sup)
            elif t is TimerFired:
                sup = self._activate(message.run_id)
                if sup is not None:
                    sup.on_timer(message.name, message.due)
                    self._commit(sup)
            elif t is StartRun:
                self._start(message)
            elif t is ActivateRun:
                self._activate(message.run_id, admit=True)
            elif t is CancelRun:
                self._cancel(message)
            elif t is Passivate:
                sup = self._runs.get(message.run_id)
                if sup is not None and (sup.finished or sup.status == RunStatus.QUEUED):
                    del self._runs[message.run_id]
            elif t is Flush:
                self._write(Write((), (functools.partial(message.done.set_result, None),)))
            else:
                return super().on_receive(message)
        except Exception as exc:
            # A bug handling one run must neither stop this actor (and with it every run on
            # this shard) nor leave the run hanging: fail that run and go on.
            run_id = getattr(message, "run_id", None)
            log.exception("shard %d: error handling %s", self._index, t.__name__)
            sup = self._runs.get(run_id) if run_id else None
            if sup is not None:
                try:
                    sup.fail_internal(exc)
                    self._commit(sup)
                except Exception:
                    log.exception("shard %d: could not fail run %s", self._index, run_id)
            reply = getattr(message, "reply", None)
            if reply is not None and not reply.done():
                reply.set_exception(exc)
        return None

    # -- handlers --------------------------------------------------------------------------

    def _start(self, msg: StartRun) -> None:
        compiled = self._core.workflows[msg.workflow_id]
        sup = Supervisor.new(self._core, compiled, msg.run_id, msg.payload, msg.idempotency_key)
        self._runs[msg.run_id] = sup
        reply = msg.reply
        self._commit(
            sup, after=(functools.partial(reply.set_result, None),), on_error=reply.set_exception
        )

    def _activate(self, run_id: str, admit: bool = False) -> Supervisor | None:
        """Return the live supervisor of ``run_id``, loading and resuming it if needed.

        Args:
            run_id: the run.
            admit: the admission controller let this run start (it may be queued).
        """
        sup = self._runs.get(run_id)
        if sup is None:
            sup = Supervisor.load(self._core, run_id)
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

    def _cancel(self, msg: CancelRun) -> None:
        sup = self._runs.get(msg.run_id)
        if sup is None:
            # Not live: queued, or never activated since a restart. Load without resuming.
            sup = Supervisor.load(self._core, msg.run_id)
            if sup is not None:
                self._runs[msg.run_id] = sup
        if sup is None or not sup.cancel(msg.reason):
            msg.reply.set_result(False)
            return
        reply = msg.reply
        self._commit(
            sup, after=(functools.partial(reply.set_result, True),), on_error=reply.set_exception
        )

    # -- committing effects ----------------------------------------------------------------

    def _commit(
        self,
        sup: Supervisor,
        after: tuple[Callable[[], Any], ...] = (),
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> None:
        fx, sup.fx = sup.fx, Effects()
        if not fx.ops and not after:
            return
        core = self._core
        then: list[Callable[[], Any]] = []
        if fx.tasks:
            assert core.dispatcher is not None
            then.append(functools.partial(core.dispatcher.tell, Dispatch(tuple(fx.tasks))))
        if fx.timers:
            assert core.scheduler is not None
            then.append(functools.partial(core.scheduler.tell, AddTimers(tuple(fx.timers))))
        if fx.cancel_tasks:
            assert core.dispatcher is not None
            then.append(functools.partial(core.dispatcher.tell, CancelTasks(sup.run_id)))
        then.extend(after)
        if fx.finished:
            then.append(functools.partial(core.on_run_finished, sup.run_id, sup.workflow_id))
        if fx.finished or sup.status == RunStatus.QUEUED:
            # Out of memory once durable: finished for good, or queued until admitted.
            then.append(functools.partial(self.actor_ref.tell, Passivate(sup.run_id)))
        self._write(Write(fx.ops, tuple(then), on_error))

    def _write(self, write: Write) -> None:
        assert self._core.writer is not None
        self._core.writer.tell(write)
