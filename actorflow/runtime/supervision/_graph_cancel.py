"""A graph workflow's ``on_cancel`` handler: run as the step ``on_cancel`` of a cancelled run.

Data flow: ``cancel()`` applies the evaluator's cancel event, which stops every running step
(their workers killed) and records them cancelled; the supervisor's ``_finish(CANCELLED)``
then comes here instead of ending the run. The handler's attempt is recorded like a step's
(its record at path ``on_cancel``, node -1: it is not a node of the plan) and sent to the
pool with ``ctx`` as any step gets it; its report comes back through ``on_succeeded`` /
``on_failed``, which hand it to :func:`reported`. Then the run ends cancelled, whether the
handler succeeded or failed (its failure is in its step record, as for any step).

The run stays ``running`` meanwhile, with its ``cancel_reason`` recorded. After a crash, the
replayed history holds the cancel event, so the evaluator's outcome is cancelled again and
``_finish`` comes back here: a handler whose record says it ended is not run again; one that
was in flight runs again (at least once, like any step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus, StepStatus
from actorflow.definition._spec import ON_CANCEL
from actorflow.runtime.kernel._messages import AttemptFailed, AttemptSucceeded, TaskSpec
from actorflow.runtime.supervision._steps import Leaf, error_record
from actorflow.store import _keys as K
from actorflow.store._records import inline_output, load_step
from actorflow.workers._protocol import CALL_CTX

if TYPE_CHECKING:
    from actorflow.runtime.supervision._graph import Supervisor

__all__ = ["begin", "reported"]


def begin(sup: Supervisor) -> bool:
    """Run the workflow's ``on_cancel`` handler unless it has ended; False if it has.

    True: the handler runs (or already ran this call's predecessor), so the run is not over.
    """
    if sup.on_cancel is not None:
        return True  # in flight
    leaf = _load(sup)
    if leaf.status in (StepStatus.SUCCEEDED, StepStatus.FAILED):
        return False  # it ended before a restart: the run ends now
    handler = sup.compiled.spec.on_cancel
    assert handler is not None
    now = sup.core.clock.now()
    leaf.attempt += 1
    leaf.status = StepStatus.RUNNING
    leaf.dispatched_at = now
    sup.on_cancel = leaf
    sup.fx.ops.append(leaf.put())
    sup._put_run()  # its cancel reason: a restart knows the run is being cancelled
    sup.fx.tasks.append(
        TaskSpec(
            sup.run_id, leaf.path, leaf.attempt, sup.workflow_id, handler,
            sup._task_payload(), None, None, None, None, CALL_CTX, None, None, None, None,
        )
    )  # fmt: skip
    return True


def reported(sup: Supervisor, msg: AttemptSucceeded | AttemptFailed) -> None:
    """The handler's attempt ended: record it, then end the run cancelled."""
    leaf = sup.on_cancel
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
    sup.on_cancel_done = True
    sup.on_cancel = None
    sup._finish(RunStatus.CANCELLED)


def _load(sup: Supervisor) -> Leaf:
    raw = sup.core.store.get(K.STEPS, K.step_key(sup.run_id, ON_CANCEL))
    if raw is None:
        return Leaf(sup.run_id, 0, -1, ON_CANCEL, "step")
    rec: dict[str, Any] = load_step(raw, ON_CANCEL, f"step {ON_CANCEL!r} of run {sup.run_id}")
    return Leaf.from_record(sup.run_id, rec, 0, -1)
