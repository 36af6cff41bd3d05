"""The supervisor: one run's state machine.

A supervisor handles its run's events one at a time (on its shard's thread). It feeds them to
the graph evaluator, carries out the commands that come back (dispatch a step, evaluate a
predicate, arm a timer, start a child run...), and turns everything into :class:`Effects`:
store ops to commit, and actions to take only once they are durable. It never blocks and never
writes the store itself; the shard sends the effects to the store writer as one write.

Every event the evaluator applies is also appended to the run's history (one record per
write), so a run can be rebuilt exactly by replaying it (``_replay.py``): after a restart,
when a sleeping run is woken, or when a child run finishes.

The durability rules (docs/design.md) live here:

1. A step's dispatch record is in the same write as whatever made it ready (the previous
   step's result), and the task is sent only after that write is durable.
2. A completed step is never dispatched again: reports for an attempt that is not the step's
   current running attempt are ignored.
3. Recovery re-dispatches steps recorded as running, as new attempts, through the same path as
   new work.
"""

from __future__ import annotations

from typing import Any

from actorflow._types import RunStatus, StepStatus
from actorflow.definition._options import NO_RETRY
from actorflow.definition._spec import (
    CancelSpec,
    StepSpec,
)
from actorflow.graph._codes import (
    C_ABORT,
    C_CANCEL_RUN,
    C_CHILD,
    C_DECIDE,
    C_DONE,
    C_EXPAND,
    C_FRAME,
    C_FRAME_END,
    C_LOOP,
    C_NODE_FAILED,
    C_RUN,
    C_SKIP,
    C_SLEEP,
    E_CANCEL,
    E_SUCCEEDED,
    K_WAIT,
    R_CANCELLED,
    R_COMPLETED,
    R_FAILED,
)
from actorflow.runtime._core import Compiled, Core
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    AttemptSucceeded,
    ChildFinished,
    EventDelivered,
    ResumeApproval,
)
from actorflow.runtime.supervision import _graph_hooks, _replay, _step_cache, _waits
from actorflow.runtime.supervision._graph_nodes import GraphNodes
from actorflow.runtime.supervision._graph_state import _AWAITED
from actorflow.runtime.supervision._run import open_run
from actorflow.runtime.supervision._steps import (
    Leaf,
    attempt_record,
    attempt_summary,
    child_failure,
)
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._records import inline_output

__all__ = ["Supervisor"]


class Supervisor(GraphNodes):
    """Owns one run: its record, its live frames and leaves, and the evaluator state.

    Build with :meth:`new` (a trigger) or ``_replay.load`` (from the store), then feed events.
    After each call the owner takes :attr:`fx` and commits it.
    """

    @classmethod
    def new(
        cls,
        core: Core,
        compiled: Compiled,
        run_id: str,
        payload: bytes,
        idempotency_key: str | None,
        parent: tuple[str, str] | None = None,
        depth: int = 0,
        priority: int = 0,
        mocks: dict[str, Any] | None = None,
        attrs: dict[str, Any] | None = None,
        memo: dict[str, Any] | None = None,
    ) -> Supervisor:
        """A new run: record it (queued or running) and start its first nodes."""
        sup = cls(core, compiled, run_id)
        open_run(sup, payload, idempotency_key, parent, depth, priority, mocks, attrs, memo)
        return sup

    @classmethod
    def load(cls, core: Core, compiled: Compiled, rec: dict[str, Any]) -> Supervisor:
        """Rebuild a run from its records by replaying its history (see ``_replay.py``)."""
        sup = cls(core, compiled, rec["id"])
        _replay.replay(sup, rec)
        return sup

    def resume(self, admitted_at: float | None = None) -> None:
        """Start a queued run (begun at ``admitted_at``), or take up what a loaded run had."""
        _replay.resume(self, admitted_at)

    def _begin(self, now: float) -> None:
        self.started_at = now
        timeout = self.compiled.spec.timeout
        if timeout is not None:
            self.deadline = now + timeout
            self._timer(self.deadline, "deadline")
        self._put_run()
        self._commands(self.ev.start(self.pp, self.state))
        self._check_outcome()

    def _apply(self, event: int, frame: int, node: int, arg: int = 0) -> None:
        """Apply an event (and, in order, any it leads to) and carry out the commands."""
        self._queue.append((event, frame, node, arg))
        if self._applying:
            return
        self._applying = True
        try:
            while self._queue:
                e = self._queue.popleft()
                if not self.replaying:
                    self.hist.extend(e)
                if e[0] != E_CANCEL:  # its (frame, node) is (0, 0) and names no node
                    self.pending.pop((e[1], e[2]), None)
                self._commands(self.ev.advance(self.pp, self.state, *e))
        finally:
            self._applying = False
        if not self.replaying:
            self._check_outcome()

    def _commands(self, cmds: Any) -> None:
        for i in range(0, len(cmds), 4):
            op, frame, node, arg = cmds[i], cmds[i + 1], cmds[i + 2], cmds[i + 3]
            # The three commands of every finished item come first.
            if op == C_RUN:
                if self.replaying:
                    self.pending[(frame, node)] = op
                else:
                    self._run(frame, node)
            elif op == C_FRAME_END:
                self._frame_ended(frame, node, arg)
            elif op == C_FRAME:
                self._frame_started(frame, node, arg)
            elif op == C_ABORT:
                self._abort(frame, node)
            elif self.replaying:
                if op in _AWAITED:
                    self.pending[(frame, node)] = op
                    if op == C_LOOP:
                        self.loop_iter[(frame, node)] = arg
            elif op == C_DECIDE:
                self._decide(frame, node)
            elif op == C_EXPAND:
                self._expand(frame, node)
            elif op == C_LOOP:
                self._loop(frame, node, arg)
            elif op == C_SLEEP:
                if self.plan.kind[node] == K_WAIT:
                    _waits.start_wait(self, frame, node)
                else:
                    self._sleep(frame, node)
            elif op == C_CHILD:
                self._child(frame, node)
            elif op == C_CANCEL_RUN:
                spec = self.plan.specs[node]
                assert isinstance(spec, CancelSpec)
                self.cancel(spec.reason)
            elif op == C_DONE:
                self._done(frame, node, arg)
            elif op == C_NODE_FAILED:
                self._composite_failed(frame, node)
            elif op == C_SKIP:
                self._skipped(frame, node)

    def _check_outcome(self) -> None:
        if self.finished:
            return
        outcome = self.ev.outcome(self.state)
        if outcome == R_COMPLETED:
            self._finish(RunStatus.COMPLETED)
        elif outcome == R_FAILED:
            self.error = self.error or self.last_error
            self._finish(RunStatus.FAILED)
        elif outcome == R_CANCELLED and self.status != RunStatus.CANCELLED:
            self._finish(RunStatus.CANCELLED)

    def on_succeeded(self, msg: AttemptSucceeded) -> None:
        if self.hook is not None and msg.step == self.hook.path:
            _graph_hooks.reported(self, msg)
            return
        leaf = self._reported(msg.step, msg.attempt)
        if leaf is None:
            return
        spec = self.plan.specs[leaf.node]
        if isinstance(spec, StepSpec) and spec.breaker is not None and not leaf.handling:
            spec.breaker.succeeded()
        leaf.status = StepStatus.SUCCEEDED
        leaf.started_at = msg.started_at
        leaf.ended_at = msg.ended_at
        leaf.error = None if not leaf.handling else leaf.error
        leaf.recovered = leaf.handling
        leaf.handling = False
        leaf.attempts.append(
            {
                "attempt": msg.attempt,
                "status": "recovered" if leaf.recovered else "succeeded",
                "kind": "handler" if leaf.recovered else None,
                "started_at": msg.started_at,
                "ended_at": msg.ended_at,
                "error": None,
                "pid": msg.pid,
            }
        )
        self._succeed(leaf, msg.output)

    def _succeed(self, leaf: Leaf, output: bytes) -> None:
        if not self.replaying:
            _step_cache.remember(self, leaf, output)
        key = (leaf.frame, leaf.node)
        self.outputs[key] = output
        leaf.inline = inline_output(output)
        if leaf.inline is None:  # large or pickled: in its own record
            self.fx.ops.append((K.VALUES, leaf.key, output))
        self.fx.ops.append(leaf.put())
        self._apply(E_SUCCEEDED, leaf.frame, leaf.node)

    def on_failed(self, msg: AttemptFailed) -> None:
        if self.hook is not None and msg.step == self.hook.path:
            _graph_hooks.reported(self, msg)
            return
        if self.chunks:
            chunk = self.chunks.get(msg.step)
            if chunk is not None:
                if not self.finished:
                    self._chunk_failed(chunk, msg)
                return
        leaf = self._reported(msg.step, msg.attempt)
        if leaf is None:
            return
        if leaf.handling:  # the error handler itself failed: the step fails with its error
            self.record_attempt(leaf, msg, "handler")
            self._leaf_failed_for_good(leaf, msg.error)
            return
        spec = self.plan.specs[leaf.node]
        step = spec if isinstance(spec, StepSpec) else None
        retry = step.retry if step is not None else NO_RETRY
        delay = self.attempt_failed(leaf, msg, retry, step.breaker if step is not None else None)
        if delay is None:
            self._leaf_failed_for_good(leaf, msg.error)
        elif delay <= 0:
            self._dispatch(leaf)
        else:
            self.retry_later(leaf, delay)

    def _reported(self, path: str, attempt: int) -> Leaf | None:
        """The leaf a worker's report is about, if that attempt is still the current one."""
        if self.finished:
            return None
        key = self.by_path.get(path)
        if key is None or self.pending.get(key) != C_RUN:
            return None
        leaf = self.leaves[key]
        if leaf.status != StepStatus.RUNNING or leaf.attempt != attempt:
            return None  # a late report for an attempt that already ended: never record twice
        if leaf.chunk is not None:
            self._left_chunk(leaf, True)
        elif leaf.window:
            self._window_back(leaf)
        return leaf

    def on_timer(self, name: str, due: float) -> None:
        if self.finished:
            return
        if name == "deadline":
            if self.run_timed_out(due):
                self._apply(E_CANCEL, 0, 0)  # its running steps are killed
                self._finish(RunStatus.FAILED)
            return
        kind, _, path = name.partition(":")
        key = self.by_path.get(path)
        leaf = self.leaves.get(key) if key is not None else None
        if leaf is None:
            return
        if kind == "retry":
            if leaf.status != StepStatus.RETRYING or leaf.next_retry_at is None:
                return
            if abs(leaf.next_retry_at - due) > 1e-3:
                return  # a stale timer from an earlier retry
            self.fx.ops.append((K.TIMERS, K.timer_key(due, self.run_id, name), None))
            self._dispatch(leaf)
        elif kind == "wait":
            _waits.on_wait_timer(self, leaf, due)
        elif kind == "sleep":
            if self.pending.get(key) != C_SLEEP or leaf.wake_at is None:  # type: ignore[arg-type]
                return
            if abs(leaf.wake_at - due) > 1e-3:
                return
            self.fx.ops.append((K.TIMERS, K.timer_key(due, self.run_id, name), None))
            leaf.status = StepStatus.SUCCEEDED
            leaf.ended_at = self.core.clock.now()
            leaf.attempts.append(
                attempt_record(1, "succeeded", None, leaf.dispatched_at, leaf.ended_at)
            )
            self.fx.ops.append(leaf.put())
            self._apply(E_SUCCEEDED, leaf.frame, leaf.node)

    def on_event(self, msg: EventDelivered) -> None:
        _waits.on_event(self, msg)

    def on_resume(self, msg: ResumeApproval) -> str | None:
        return _waits.on_resume(self, msg)

    def on_child_finished(self, msg: ChildFinished) -> None:
        if self.finished:
            return
        key = self.by_path.get(msg.path)
        if key is None or self.pending.get(key) != C_CHILD:
            return
        self._child_outcome(self.leaves[key])  # its child, or the run it continued as

    def _child_outcome(self, leaf: Leaf) -> bool:
        """Apply the child's final state, if it has one; False while it still runs."""
        from actorflow.views import final_run, run_outcome

        found = final_run(self.core.store, leaf.child or "")
        if found is None:
            return False
        child_id, rec = found
        status = RunStatus(rec["status"])
        if not status.terminal:
            return False
        now = self.core.clock.now()
        leaf.ended_at = now
        if status == RunStatus.COMPLETED:
            _, result, _ = run_outcome(self.core.store, child_id)
            leaf.status = StepStatus.SUCCEEDED
            leaf.attempts.append(
                attempt_record(leaf.attempt, "succeeded", None, leaf.dispatched_at, now)
            )
            self._succeed(leaf, encode_value(result, f"result of child run {leaf.child}"))
            return True
        info = child_failure(child_id, rec)
        leaf.attempts.append(
            attempt_record(
                leaf.attempt, "failed", "child", leaf.dispatched_at, now, attempt_summary(info)
            )
        )
        leaf.failures += 1
        self._leaf_failed_for_good(leaf, info)
        return True

    def cancel(self, reason: str, terminate: bool = False) -> bool:
        """Cancel the run; False if it had already finished.

        ``terminate``: no ``on_cancel`` hook runs (a running hook is stopped, and the run
        ends with the outcome it runs for). A run whose outcome is decided and whose
        ``on_success`` / ``on_failure`` hook runs is not cancelled (False).
        """
        if self.finished:
            return False
        if terminate:
            self.hook_done = True
            if self.hook is not None:
                self.fx.stop.append((self.run_id, self.hook.path))
                return _graph_hooks.stop(self) == RunStatus.CANCELLED
        if self.hook is not None:
            # Being cancelled (its on_cancel hook runs), or finishing (too late to cancel).
            return self.hook_status == RunStatus.CANCELLED
        self.cancel_reason = reason
        self._apply(E_CANCEL, 0, 0)
        if not self.finished:
            self._finish(RunStatus.CANCELLED)
        return True

    def _on_internal_failure(self) -> None:
        self.fx.cancel_tasks = True

    def _finish(self, status: RunStatus) -> None:
        if (
            not self.hook_done
            and _graph_hooks.handler(self, status) is not None
            and _graph_hooks.begin(self, status)
        ):
            return  # ends once its hook has (for a cancel: the evaluator stopped the rest)
        self._close_run(status)
        for leaf in self.leaves.values():
            if leaf.next_retry_at is not None:
                self._drop_timer(leaf.next_retry_at, "retry:" + leaf.path)
                leaf.next_retry_at = None
        self._put_run()
        self.fx.finished = True
        self.fx.cancel_tasks = self.fx.cancel_tasks or status != RunStatus.COMPLETED
