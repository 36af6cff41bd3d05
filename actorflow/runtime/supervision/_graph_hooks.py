"""A graph workflow's hooks: ``on_cancel``, ``on_success`` and ``on_failure``, run as steps.

Data flow: once a run's outcome is decided (the evaluator completed or failed it, or a
cancel stopped its steps, their workers killed), the supervisor's ``_finish(status)`` comes
here instead of ending the run when the workflow has the hook for that outcome. The hook's
attempt is recorded like a step's (its record at path ``on_cancel``, ``on_success`` or
``on_failure``, node -1: it is not a node of the plan) and sent to the pool with ``ctx`` as
any step gets it (``on_failure``'s ``ctx.error`` is the run's error); its report comes back
through ``on_succeeded`` / ``on_failed``, which hand it to :func:`reported`. Then the run
ends with the outcome it had, whether the hook succeeded or failed (a hook's failure is in
its step record, as for any step; it does not change the run's status).

The run stays ``running`` meanwhile (a cancelled one with its ``cancel_reason`` recorded).
After a crash, the replayed history decides the same outcome, so ``_finish`` comes back
here: a hook whose record says it ended is not run again; one that was in flight runs again
(at least once, like any step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus, StepStatus
from actorflow.definition._spec import HOOKS
from actorflow.errors import RemoteError
from actorflow.runtime.kernel._messages import AttemptFailed, AttemptSucceeded, TaskSpec
from actorflow.runtime.supervision._steps import Leaf, error_record
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._records import inline_output, load_step
from actorflow.workers._protocol import CALL_CTX

if TYPE_CHECKING:
    from actorflow.runtime.supervision._graph import Supervisor

__all__ = ["begin", "handler", "reported"]


def handler(sup: Supervisor, status: RunStatus) -> Any:
    """The hook the workflow runs when a run ends ``status``, or None."""
    name = HOOKS.get(status.value)
    return getattr(sup.compiled.spec, name) if name is not None else None


def begin(sup: Supervisor, status: RunStatus) -> bool:
    """Run the hook for ``status`` unless it has ended; False if it has (the run ends now).

    True: the hook runs (or already ran this call's predecessor), so the run is not over.
    """
    if sup.hook is not None:
        return True  # in flight
    fn = handler(sup, status)
    assert fn is not None
    path = HOOKS[status.value]
    leaf = _load(sup, path)
    if leaf.status in (StepStatus.SUCCEEDED, StepStatus.FAILED):
        return False  # it ended before a restart
    now = sup.core.clock.now()
    leaf.attempt += 1
    leaf.status = StepStatus.RUNNING
    leaf.dispatched_at = now
    sup.hook = leaf
    sup.hook_status = status
    if status == RunStatus.FAILED:
        # The run failed: what still runs of it (another arm) is stopped before the hook.
        for other in sup.leaves.values():
            if other.status == StepStatus.RUNNING:
                sup.fx.stop.append((sup.run_id, other.path))
    sup.fx.ops.append(leaf.put())
    sup._put_run()  # (a cancelled run's reason: a restart knows it is being cancelled)
    error = None
    if status == RunStatus.FAILED and sup.error is not None:
        err = sup.error
        error = encode_value(
            RemoteError(str(err.get("type", "")), str(err.get("message", ""))), "error"
        )
    sup.fx.tasks.append(
        TaskSpec(
            sup.run_id, leaf.path, leaf.attempt, sup.workflow_id, fn,
            sup._task_payload(), None, None, None, None, CALL_CTX, error, None, None, None,
        )
    )  # fmt: skip
    return True


def reported(sup: Supervisor, msg: AttemptSucceeded | AttemptFailed) -> None:
    """The hook's attempt ended: record it, then end the run with its outcome."""
    leaf = sup.hook
    assert leaf is not None
    if msg.attempt != leaf.attempt:
        return  # a stale report
    leaf.started_at = msg.started_at
    leaf.ended_at = msg.ended_at
    if isinstance(msg, AttemptSucceeded):
        leaf.status = StepStatus.SUCCEEDED
        leaf.attempts.append(
            {
                "attempt": msg.attempt, "status": "succeeded", "kind": None,
                "started_at": msg.started_at, "ended_at": msg.ended_at, "error": None,
                "pid": msg.pid,
            }
        )  # fmt: skip
        leaf.inline = inline_output(msg.output)
        if leaf.inline is None:
            sup.fx.ops.append((K.VALUES, leaf.key, msg.output))
    else:
        sup.record_attempt(leaf, msg)
        leaf.status = StepStatus.FAILED
        leaf.error = error_record(msg.error, leaf.path, leaf.attempt)
    sup.fx.ops.append(leaf.put())
    stop(sup)


def stop(sup: Supervisor) -> RunStatus:
    """The hook is over (it ended, or a terminate stopped it): end the run; its outcome."""
    status = sup.hook_status
    assert status is not None
    sup.hook_done = True
    sup.hook = None
    sup._finish(status)
    return status


def _load(sup: Supervisor, path: str) -> Leaf:
    raw = sup.core.store.get(K.STEPS, K.step_key(sup.run_id, path))
    if raw is None:
        return Leaf(sup.run_id, 0, -1, path, "step")
    rec: dict[str, Any] = load_step(raw, path, f"step {path!r} of run {sup.run_id}")
    return Leaf.from_record(sup.run_id, rec, 0, -1)
