"""The supervisor: one run's state machine.

A supervisor handles its run's events one at a time (on its shard's thread) and turns each
into :class:`Effects`: store ops to commit, and actions to take only once they are durable
(dispatch tasks, arm timers, kill work, wake waiters). It never blocks and never touches the
store for writing; the shard sends the effects to the store writer as one :class:`Write`.

The durability rules (docs/design.md) live here:

1. A step's dispatch record is in the same write as whatever made it ready (the previous
   step's result), and the task is sent only after that write is durable.
2. A completed step is never dispatched again: events for an attempt that is no longer the
   step's current running attempt are ignored.
3. Recovery (:meth:`Supervisor.resume`) re-dispatches steps recorded as running, as new
   attempts, through the same path as new work.
"""

from __future__ import annotations

import base64
import signal
from typing import Any

import orjson

from actorflow._types import RunStatus, StepStatus
from actorflow.graph._codes import (
    EV_FAILED,
    EV_SUCCEEDED,
    NODE_CANCELLED,
    NODE_FAILED,
    NODE_PENDING,
    NODE_RUNNING,
    NODE_SKIPPED,
    NODE_SUCCEEDED,
    RUN_COMPLETED,
)
from actorflow.graph._plan import RunState
from actorflow.runtime._core import Compiled, Core
from actorflow.runtime._messages import ErrorInfo, StepFailed, StepSucceeded, TaskSpec
from actorflow.store import _keys as K
from actorflow.store._protocol import Op
from actorflow.store._records import dump_record, inline_output, load_record, output_of

__all__ = ["Effects", "Supervisor"]

_MAX_ATTEMPT_MESSAGE = 300

_NODE_OF_STATUS = {
    StepStatus.PENDING: NODE_PENDING,
    StepStatus.RUNNING: NODE_RUNNING,
    StepStatus.RETRYING: NODE_RUNNING,
    StepStatus.SUCCEEDED: NODE_SUCCEEDED,
    StepStatus.FAILED: NODE_FAILED,
    StepStatus.SKIPPED: NODE_SKIPPED,
    StepStatus.CANCELLED: NODE_CANCELLED,
}


class Effects:
    """What one event produced: ops to commit, then actions once they are durable.

    A plain slotted class: one is made per event, and a dataclass with default factories
    costs several times more to build.
    """

    __slots__ = ("cancel_tasks", "finished", "ops", "tasks", "timers")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.tasks: list[TaskSpec] = []
        self.timers: list[tuple[float, str, str]] = []
        self.cancel_tasks = False
        self.finished = False


class _Step:
    """A step's state in a live run (mirrors its step record)."""

    __slots__ = (
        "_key",
        "attempt",
        "attempts",
        "dispatched_at",
        "ended_at",
        "error",
        "failures",
        "inline",
        "kind",
        "name",
        "next_retry_at",
        "node",
        "started_at",
        "status",
    )

    def __init__(self, node: int, name: str, kind: str) -> None:
        self.node = node
        self.name = name
        self.kind = kind
        self.status = StepStatus.PENDING
        self.attempt = 0
        self.failures = 0
        self.dispatched_at: float | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.next_retry_at: float | None = None
        self.error: dict[str, Any] | None = None
        self.attempts: list[dict[str, Any]] = []
        self.inline: orjson.Fragment | None = None  # a small JSON output, kept in the record
        self._key: bytes | None = None

    def key(self, run_id: str) -> bytes:
        """This step's key in ``steps`` (and its output's in ``values``), built once."""
        key = self._key
        if key is None:
            key = self._key = K.step_key(run_id, self.name)
        return key

    def record(self) -> bytes:
        rec = {
            "name": self.name,
            "node": self.node,
            "kind": self.kind,
            "status": self.status,  # a StrEnum: orjson writes it as its string
            "attempt": self.attempt,
            "failures": self.failures,
            "dispatched_at": self.dispatched_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "next_retry_at": self.next_retry_at,
            "error": self.error,
            "attempts": self.attempts,
        }
        if self.inline is not None:
            rec["output"] = self.inline
        return dump_record(rec)

    @classmethod
    def from_record(cls, rec: dict[str, Any], node: int, kind: str) -> _Step:
        st = cls(node, rec["name"], kind)
        st.status = StepStatus(rec["status"])
        st.attempt = int(rec.get("attempt", 0))
        st.failures = int(rec.get("failures", 0))
        st.dispatched_at = rec.get("dispatched_at")
        st.started_at = rec.get("started_at")
        st.ended_at = rec.get("ended_at")
        st.next_retry_at = rec.get("next_retry_at")
        st.error = rec.get("error")
        st.attempts = list(rec.get("attempts", []))
        if "output" in rec:
            st.inline = orjson.Fragment(orjson.dumps(rec["output"]))
        return st


def error_record(err: ErrorInfo, step: str, attempt: int) -> dict[str, Any]:
    """The stored form of a step failure."""
    sig = None
    if err.exitcode is not None and err.exitcode < 0:
        try:
            sig = signal.Signals(-err.exitcode).name
        except ValueError:
            sig = str(-err.exitcode)
    return {
        "kind": err.kind,
        "type": err.type,
        "types": list(err.types),
        "message": err.message,
        "traceback": err.traceback,
        "exc": base64.b64encode(err.pickled).decode() if err.pickled else None,
        "exitcode": err.exitcode,
        "signal": sig,
        "timeout": err.timeout,
        "step": step,
        "attempt": attempt,
    }


class Supervisor:
    """Owns one run: its record, its steps' states, and the evaluator state.

    Build with :meth:`new` (a trigger) or :meth:`load` (from the store), then feed events.
    After each call the owner takes :attr:`fx` and commits it.
    """

    def __init__(self, core: Core, compiled: Compiled, run_id: str) -> None:
        self.core = core
        self.compiled = compiled
        self.plan = compiled.plan
        self.run_id = run_id
        self.workflow_id = compiled.spec.id
        self.state = RunState(self.plan)
        self.steps = [
            _Step(i, name, "action" if s.kind == "action" else "step")
            for i, (name, s) in enumerate(zip(self.plan.names, compiled.spec.steps, strict=True))
        ]
        self.outputs: dict[int, bytes] = {}
        self.payload = b"Jnull"
        self.status = RunStatus.RUNNING
        self.created_at = 0.0
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.idempotency_key: str | None = None
        self.deadline: float | None = None
        self.error: dict[str, Any] | None = None
        self.cancel_reason: str | None = None
        self.finished = False
        self.fx = Effects()

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def new(
        cls,
        core: Core,
        compiled: Compiled,
        run_id: str,
        payload: bytes,
        idempotency_key: str | None,
    ) -> Supervisor:
        """A new run: record it (queued or running) and choose its first steps."""
        sup = cls(core, compiled, run_id)
        now = core.clock.now()
        sup.payload = payload
        sup.created_at = now
        sup.idempotency_key = idempotency_key
        admitted = core.admission.try_acquire(sup.workflow_id, run_id)
        sup.status = RunStatus.RUNNING if admitted else RunStatus.QUEUED
        ops = sup.fx.ops
        ops.append((K.VALUES, K.payload_key(run_id), payload))
        ops.append((K.INDEX, K.status_index_key(sup.status, run_id), b""))
        ops.append((K.INDEX, K.workflow_index_key(sup.workflow_id, run_id), b""))
        if idempotency_key is not None:
            ops.append(
                (
                    K.IDEMPOTENCY,
                    K.idempotency_key(sup.workflow_id, idempotency_key),
                    run_id.encode(),
                )
            )
        if admitted:
            sup._begin(now)
        else:
            sup._put_run()
        return sup

    @classmethod
    def load(cls, core: Core, run_id: str) -> Supervisor | None:
        """Rebuild a run from the store; None if it is unknown, finished, or undefined here."""
        raw = core.store.get(K.RUNS, K.run_key(run_id))
        if raw is None:
            return None
        rec = load_record(raw, f"run {run_id}")
        status = RunStatus(rec["status"])
        if status.terminal:
            return None
        compiled = core.workflows.get(rec["workflow"])
        if compiled is None:
            return None
        sup = cls(core, compiled, run_id)
        sup.status = status
        sup.created_at = rec["created_at"]
        sup.started_at = rec.get("started_at")
        sup.idempotency_key = rec.get("idempotency_key")
        sup.deadline = rec.get("deadline")
        sup.payload = core.store.get(K.VALUES, K.payload_key(run_id)) or b"Jnull"
        index = sup.plan.index
        for _, value in core.store.scan(K.STEPS, K.step_prefix(run_id)):
            srec = load_record(value, f"step of run {run_id}")
            node = index.get(srec.get("name", ""))
            if node is None:
                continue  # a step the current definition no longer has
            sup.steps[node] = _Step.from_record(srec, node, sup.steps[node].kind)
            sup.state.status[node] = _NODE_OF_STATUS[sup.steps[node].status]
            if sup.steps[node].status == StepStatus.SUCCEEDED:
                out = output_of(srec, core.store, run_id)
                if out is not None:
                    sup.outputs[node] = out
        return sup

    # -- events ----------------------------------------------------------------------------

    def resume(self) -> None:
        """Drive a loaded run: start a queued one, re-dispatch what was running."""
        now = self.core.clock.now()
        if self.status == RunStatus.QUEUED:
            self.status = RunStatus.RUNNING
            self.fx.ops.append((K.INDEX, K.status_index_key(RunStatus.QUEUED, self.run_id), None))
            self.fx.ops.append((K.INDEX, K.status_index_key(RunStatus.RUNNING, self.run_id), b""))
            self._begin(now)
            return
        ev = self.core.evaluator
        plan = self.plan
        state = self.state
        ready = ev.rebuild(
            plan.succ_start, plan.succ, plan.pred_count, state.status, state.waiting, state.counters
        )
        interrupted = [st.node for st in self.steps if st.status == StepStatus.RUNNING]
        for node in interrupted:
            st = self.steps[node]
            st.attempts.append(
                {
                    "attempt": st.attempt,
                    "status": "interrupted",
                    "kind": "interrupted",
                    "started_at": st.started_at,
                    "ended_at": now,
                    "error": "the engine stopped while this attempt was in flight",
                    "pid": None,
                }
            )
        for st in self.steps:
            if st.status == StepStatus.RETRYING and st.next_retry_at is not None:
                self.fx.timers.append((st.next_retry_at, self.run_id, "retry:" + st.name))
        if self.deadline is not None:
            self.fx.timers.append((self.deadline, self.run_id, "deadline"))
        failed = [st for st in self.steps if st.status == StepStatus.FAILED]
        if failed:  # the failure was recorded but not the run's end: finish it now
            self.error = failed[0].error
            self._cancel_steps(now, "the run failed")
            self._finish(RunStatus.FAILED, now)
            return
        self._dispatch(sorted([*interrupted, *ready]), now)
        if state.counters[0] == 0:
            self._finish(RunStatus.COMPLETED, now)

    def on_succeeded(self, msg: StepSucceeded) -> None:
        node = self.plan.index.get(msg.step)
        if node is None or self.finished:
            return
        st = self.steps[node]
        if st.status != StepStatus.RUNNING or st.attempt != msg.attempt:
            return  # a late report for an attempt that already ended: never record twice
        now = self.core.clock.now()
        st.status = StepStatus.SUCCEEDED
        st.started_at = msg.started_at
        st.ended_at = msg.ended_at
        st.error = None
        st.attempts.append(
            {
                "attempt": msg.attempt,
                "status": "succeeded",
                "kind": None,
                "started_at": msg.started_at,
                "ended_at": msg.ended_at,
                "error": None,
                "pid": msg.pid,
            }
        )
        self.outputs[node] = msg.output
        ops = self.fx.ops
        key = st.key(self.run_id)
        st.inline = inline_output(msg.output)
        if st.inline is None:  # large or pickled: in its own record
            ops.append((K.VALUES, key, msg.output))
        ops.append((K.STEPS, key, st.record()))
        plan, state = self.plan, self.state
        ready, outcome = self.core.evaluator.advance(
            plan.succ_start,
            plan.succ,
            state.status,
            state.waiting,
            state.counters,
            node,
            EV_SUCCEEDED,
        )
        if ready:
            self._dispatch(ready, now)
        if outcome == RUN_COMPLETED:
            self._finish(RunStatus.COMPLETED, now)

    def on_failed(self, msg: StepFailed) -> None:
        node = self.plan.index.get(msg.step)
        if node is None or self.finished:
            return
        st = self.steps[node]
        if st.status != StepStatus.RUNNING or st.attempt != msg.attempt:
            return
        now = self.core.clock.now()
        err = msg.error
        st.started_at = msg.started_at
        st.ended_at = msg.ended_at
        st.failures += 1
        st.error = error_record(err, st.name, msg.attempt)
        summary = f"{err.type.rpartition('.')[2]}: {err.message}"
        st.attempts.append(
            {
                "attempt": msg.attempt,
                "status": "failed",
                "kind": err.kind,
                "started_at": msg.started_at,
                "ended_at": msg.ended_at,
                "error": summary[:_MAX_ATTEMPT_MESSAGE],
                "pid": msg.pid,
            }
        )
        retry = self.compiled.spec.steps[node].retry
        if st.failures < retry.attempts and retry.is_retryable(err.types):
            delay = retry.delay_for(st.failures, self.core.rng.random())
            if delay <= 0:
                self._dispatch([node], now)
                return
            st.status = StepStatus.RETRYING
            st.next_retry_at = now + delay
            name = "retry:" + st.name
            self.fx.ops.append((K.STEPS, st.key(self.run_id), st.record()))
            self.fx.ops.append(
                (
                    K.TIMERS,
                    K.timer_key(st.next_retry_at, self.run_id, name),
                    dump_record({"kind": "retry", "step": st.name}),
                )
            )
            self.fx.timers.append((st.next_retry_at, self.run_id, name))
            return
        st.status = StepStatus.FAILED
        self.fx.ops.append((K.STEPS, st.key(self.run_id), st.record()))
        plan, state = self.plan, self.state
        self.core.evaluator.advance(
            plan.succ_start, plan.succ, state.status, state.waiting, state.counters, node, EV_FAILED
        )
        self.error = st.error
        self._finish(RunStatus.FAILED, now)

    def on_timer(self, name: str, due: float) -> None:
        if self.finished:
            return
        now = self.core.clock.now()
        if name == "deadline":
            if self.deadline is None or abs(self.deadline - due) > 1e-3:
                return
            timeout = self.compiled.spec.timeout or 0.0
            self._cancel_steps(now, "the run exceeded its timeout")
            self.error = {
                "kind": "run_timeout",
                "type": "actorflow.errors.RunTimeout",
                "types": ["actorflow.errors.RunTimeout"],
                "message": f"the run exceeded the workflow timeout of {timeout:g}s",
                "timeout": timeout,
            }
            self._finish(RunStatus.FAILED, now)
            return
        if name.startswith("retry:"):
            node = self.plan.index.get(name[6:])
            if node is None:
                return
            st = self.steps[node]
            if st.status != StepStatus.RETRYING or st.next_retry_at is None:
                return
            if abs(st.next_retry_at - due) > 1e-3:
                return  # a stale timer from an earlier retry
            self.fx.ops.append((K.TIMERS, K.timer_key(due, self.run_id, name), None))
            st.next_retry_at = None
            self._dispatch([node], now)

    def cancel(self, reason: str) -> bool:
        """Cancel the run; False if it had already finished."""
        if self.finished:
            return False
        now = self.core.clock.now()
        self._cancel_steps(now, "the run was cancelled" + (f": {reason}" if reason else ""))
        self.cancel_reason = reason
        self._finish(RunStatus.CANCELLED, now)
        return True

    def fail_internal(self, exc: BaseException) -> None:
        """An engine bug while handling this run: fail it rather than leave it hanging."""
        if self.finished:
            return
        self.fx = Effects()
        now = self.core.clock.now()
        self._cancel_steps(now, "internal engine error")
        self.error = {
            "kind": "internal",
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "types": [],
            "message": f"internal engine error: {exc}",
        }
        self._finish(RunStatus.FAILED, now)

    # -- helpers ---------------------------------------------------------------------------

    def _begin(self, now: float) -> None:
        self.started_at = now
        timeout = self.compiled.spec.timeout
        if timeout is not None:
            self.deadline = now + timeout
            self.fx.ops.append(
                (
                    K.TIMERS,
                    K.timer_key(self.deadline, self.run_id, "deadline"),
                    dump_record({"kind": "deadline"}),
                )
            )
            self.fx.timers.append((self.deadline, self.run_id, "deadline"))
        ready = self.core.evaluator.start(self.plan.roots, self.state.status, self.state.counters)
        self._put_run()
        self._dispatch(ready, now)

    def _dispatch(self, nodes: list[int], now: float) -> None:
        specs = self.compiled.spec.steps
        last_source = self.plan.last_source
        ops = self.fx.ops
        tasks = self.fx.tasks
        for node in nodes:
            st = self.steps[node]
            st.attempt += 1
            st.status = StepStatus.RUNNING
            st.dispatched_at = now
            st.next_retry_at = None
            ops.append((K.STEPS, st.key(self.run_id), st.record()))
            src = last_source[node]
            spec = specs[node]
            tasks.append(
                TaskSpec(
                    self.run_id,
                    st.name,
                    st.attempt,
                    self.workflow_id,
                    spec.fn,
                    self.payload,
                    self.outputs.get(src) if src >= 0 else None,
                    spec.timeout,
                )
            )

    def _cancel_steps(self, now: float, why: str) -> None:
        for st in self.steps:
            if st.status in (StepStatus.RUNNING, StepStatus.RETRYING):
                if st.status == StepStatus.RUNNING:
                    self.fx.cancel_tasks = True
                if st.next_retry_at is not None:
                    name = "retry:" + st.name
                    self.fx.ops.append(
                        (K.TIMERS, K.timer_key(st.next_retry_at, self.run_id, name), None)
                    )
                    st.next_retry_at = None
                st.attempts.append(
                    {
                        "attempt": st.attempt,
                        "status": "cancelled",
                        "kind": "cancelled",
                        "started_at": st.started_at,
                        "ended_at": now,
                        "error": why,
                        "pid": None,
                    }
                )
                st.status = StepStatus.CANCELLED
                self.state.status[st.node] = NODE_CANCELLED
                self.fx.ops.append((K.STEPS, st.key(self.run_id), st.record()))

    def _finish(self, status: RunStatus, now: float) -> None:
        old = self.status
        self.status = status
        self.ended_at = now
        self.finished = True
        ops = self.fx.ops
        if old != status:
            ops.append((K.INDEX, K.status_index_key(old, self.run_id), None))
            ops.append((K.INDEX, K.status_index_key(status, self.run_id), b""))
        if self.deadline is not None:
            ops.append((K.TIMERS, K.timer_key(self.deadline, self.run_id, "deadline"), None))
        for st in self.steps:
            if st.next_retry_at is not None:
                ops.append(
                    (K.TIMERS, K.timer_key(st.next_retry_at, self.run_id, "retry:" + st.name), None)
                )
                st.next_retry_at = None
        self._put_run()
        self.fx.finished = True

    def _put_run(self) -> None:
        result_node = self.plan.result_node
        rec: dict[str, Any] = {
            "id": self.run_id,
            "workflow": self.workflow_id,
            "status": self.status.value,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "idempotency_key": self.idempotency_key,
            "plan": self.plan.fingerprint,
            "deadline": self.deadline,
            "result_step": self.plan.names[result_node] if result_node >= 0 else None,
            "error": self.error,
            "cancel_reason": self.cancel_reason,
        }
        if self.status == RunStatus.COMPLETED and result_node >= 0:
            inline = self.steps[result_node].inline
            if inline is not None:  # small JSON: RunHandle.result() reads one record
                rec["result"] = inline
        self.fx.ops.append((K.RUNS, K.run_key(self.run_id), dump_record(rec)))
