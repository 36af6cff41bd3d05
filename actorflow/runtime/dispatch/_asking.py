"""What a running step asks its dispatcher, and the messages remote transports tell it.

``StepRequests`` is the dispatcher's part that answers on the caller's thread (a link's
connection thread, a remote worker's request): the start gate, heartbeats, log records,
``ctx.state`` and what :func:`~._core.answer_request` answers; what changes the
dispatcher's state goes to its inbox as :class:`Started`, :class:`Beat` or
:class:`Finished`. ``Dispatcher`` (``_dispatcher.py``) <- this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actorflow.errors import EngineNotRunning
from actorflow.runtime.dispatch._core import answer_request
from actorflow.runtime.dispatch._transport import Task
from actorflow.runtime.kernel._inbox import tell
from actorflow.runtime.kernel._promise import Promise
from actorflow.runtime.persistence._unstarted import StartGate
from actorflow.store._protocol import Store

if TYPE_CHECKING:
    from actorflow.runtime._core import Core

__all__ = ["STATE_TIMEOUT", "Beat", "Finished", "Started", "StepRequests"]

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


class StepRequests:
    """Answers what running steps ask (mixed into the dispatcher; see the module docstring)."""

    # (the dispatcher's; ``actor_ref`` is the actor's own)
    host: Core | None
    store: Store
    _gate: StartGate

    def step_log(self, task: Task, level: int, message: str, step: str) -> None:
        """Emit a step's ``ctx.log`` record here, with its run's fields."""
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
        message), ``state`` (op, scope, args), or one :func:`~._core.answer_request`
        answers (``output``, ``ref``, ``service``, ``breaker``).
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
            level, message = arg
            step_log.log(
                level,
                message,
                extra={"run_id": run_id, "step": step, "workflow_id": workflow_id},
            )
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
