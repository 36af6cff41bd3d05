"""What a running step asks its dispatcher, and the messages remote transports tell it.

``StepRequests`` is the dispatcher's part that answers on the caller's thread (a link's
connection thread, a remote worker's request): the start gate, heartbeats, log records,
``ctx.state`` and what :func:`~._core.answer_request` answers; what changes the
dispatcher's state goes to its inbox as :class:`Started`, :class:`Beat`, :class:`Logged` or
:class:`Finished`. ``Dispatcher`` (``_dispatcher.py``) <- this module.

Steps' log records are re-emitted on the ``actorflow.step`` logger and kept with their run
(``store/_logs.py``): on the dispatcher's thread, gathered into one write per wake-up
(:meth:`StepRequests.flush_logs`, called before the wake-up's reports are sent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actorflow.errors import EngineNotRunning
from actorflow.runtime.dispatch._core import answer_request
from actorflow.runtime.dispatch._transport import Task
from actorflow.runtime.kernel._inbox import tell
from actorflow.runtime.kernel._messages import Write
from actorflow.runtime.kernel._promise import Promise
from actorflow.runtime.persistence._unstarted import StartGate
from actorflow.store._logs import LogTally, close_tally, keep_record
from actorflow.store._protocol import Op, Store

if TYPE_CHECKING:
    from actorflow.runtime._core import Core

__all__ = ["STATE_TIMEOUT", "Beat", "Finished", "Logged", "Started", "StepRequests"]

step_log = logging.getLogger("actorflow.step")

#: How long a remote step waits for its ``ctx.state`` call to be durable.
STATE_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Finished:
    """A task sent away ended (told from another thread).

    ``outcome`` is what :func:`~actorflow.workers._task.execute` returned, the exception
    that stopped it, or None: it was refused the start and did not run.
    """

    key: int
    outcome: Any


@dataclass(frozen=True, slots=True)
class Started:
    """A task sent away began to run (its timeout counts from now)."""

    key: int
    worker: str
    pid: int


@dataclass(frozen=True, slots=True)
class Beat:
    """A step running elsewhere sent a heartbeat."""

    key: int
    details: bytes | None


@dataclass(frozen=True, slots=True)
class Logged:
    """A step running elsewhere logged a record (``at``: when, where it ran)."""

    key: int
    run_id: str
    workflow_id: str
    step: str
    level: int
    message: str
    at: float


class StepRequests:
    """Answers what running steps ask (mixed into the dispatcher; see the module docstring)."""

    # (the dispatcher's; ``actor_ref`` is the actor's own)
    host: Core | None
    store: Store
    _gate: StartGate
    #: The least level of the records kept with their run (``store/_logs.keep_level``).
    keep_level: int
    _log_ops: list[Op]  # records to keep, written at the end of this wake-up

    def log_level(self) -> int:
        """The level steps log at: what the ``actorflow.step`` logger or the store takes."""
        return min(step_log.getEffectiveLevel(), self.keep_level)

    def step_log(
        self, task: Task, level: int, message: str, step: str, at: float | None = None
    ) -> None:
        """Emit a step's ``ctx.log`` record here, with its run's fields, and keep it."""
        spec = task.spec
        step_log.log(
            level,
            message,
            extra={
                "run_id": spec.run_id,
                "step": step,
                "attempt": spec.attempt,
                "workflow_id": spec.workflow_id,
            },
        )
        if level >= self.keep_level:
            tally = task.logs
            if tally is None:
                tally = task.logs = LogTally()
            when = time.time() if at is None else at
            keep_record(self._log_ops, tally, spec.run_id, step, spec.attempt, when, level, message)

    def logged(self, msg: Logged) -> None:
        """A remote step's record (on the dispatcher's thread)."""
        task = self.tasks.get(msg.key)  # type: ignore[attr-defined]
        if task is not None:
            self.step_log(task, msg.level, msg.message, msg.step, msg.at)
            return
        # Its attempt is over (timed out, cancelled): emitted, not kept.
        step_log.log(
            msg.level,
            msg.message,
            extra={"run_id": msg.run_id, "step": msg.step, "workflow_id": msg.workflow_id},
        )

    def end_logs(self, task: Task) -> None:
        """``task`` is over: its final dropped counts are kept with its records."""
        tally = task.logs
        if tally is None:
            return
        if tally.dropped:
            close_tally(self._log_ops, tally, task.spec.run_id, task.spec.attempt)
        task.logs = None

    def stop_logs(self, tasks: Iterable[Task]) -> None:
        """The engine stops with ``tasks`` unfinished: keep what they logged now."""
        for task in tasks:
            self.end_logs(task)
        self.flush_logs()

    def flush_logs(self) -> None:
        """Hand the records kept since the last flush to the store writer, in one write.

        Called at the end of each of the dispatcher's messages, before the reports of the
        results that came with it are sent: a step's records are told to the writer before
        its result's write can be, so they share its group commit or go in an earlier one.
        """
        ops = self._log_ops
        if not ops:
            return
        self._log_ops = []
        writer = getattr(self.host, "writer", None)
        if writer is not None:  # (none for a bare dispatcher: its own tests)
            tell(writer, Write(ops))

    def state_call(self, arg: Any, done: Callable[[bool, Any], None]) -> None:
        """A step's ``ctx.state`` call; ``done(ok, value)`` once durable (another thread)."""
        state_op, scope, args = arg
        if self.host is None:  # a bare dispatcher (its own tests): no engine keeps state
            done(False, EngineNotRunning("ctx.state needs a running engine"))
            return
        self.host.state.call(state_op, str(scope), tuple(args), done)

    def answer(self, op: str, key: int, run_id: str, workflow_id: str, step: str, arg: Any) -> Any:
        """Answer a request of a step running elsewhere (on the caller's thread; blocking).

        ``op`` is ``start`` (``arg``: pid, worker; answered False if the step must not
        start: the engine drains or stops), ``beat`` (details), ``log`` (level,
        message, and the time it was logged), ``state`` (op, scope, args), or one
        :func:`~._core.answer_request` answers (``output``, ``ref``, ``service``,
        ``breaker``).
        """
        ref = self.actor_ref  # type: ignore[attr-defined]
        if op == "start":
            if not self._gate.begin(key):
                return False
            tell(ref, Started(key, str(arg[1]), int(arg[0])))
            return True
        if op == "beat":
            tell(ref, Beat(key, arg))
            return None
        if op == "log":
            at = float(arg[2]) if len(arg) > 2 else time.time()  # (a worker of before)
            tell(ref, Logged(key, run_id, workflow_id, step, int(arg[0]), str(arg[1]), at))
            return None
        if op == "state":
            reply: Promise[Any] = Promise()

            def done(ok: bool, value: Any) -> None:
                if ok:
                    reply.set_result(value)
                else:
                    reply.set_exception(value)

            self.state_call(arg, done)
            return reply.result(STATE_TIMEOUT)
        return answer_request(op, arg, self.store, self.host, run_id, workflow_id, step)

    def tell_started(self, key: int, worker: str, pid: int) -> None:
        """Thread-safe: task ``key`` started on ``worker`` (process ``pid``)."""
        tell(self.actor_ref, Started(key, worker, pid))  # type: ignore[attr-defined]

    def tell_finished(self, key: int, outcome: Any) -> None:
        """Thread-safe: task ``key`` ended with ``outcome`` (see :class:`Finished`)."""
        tell(self.actor_ref, Finished(key, outcome))  # type: ignore[attr-defined]
