"""Cancelling a run held before it could load (its workflow or version is not defined).

Why: a run whose workflow (or the version it started on) a deploy removed waits with status
``waiting_for_definition`` (``_plans.unavailable``). No supervisor can rebuild it: its code
is gone. An operator who decides it will never come back cancels it, and that must end it
as a cancel of a loaded run would: the run record, its status index entry and its end-time
entry (which retention reads), its open step records and approvals, its children, and the
callers and parent waiting on it.

Data flow: the shard's cancel (``Shard._cancel_run``) finds no supervisor and a held run;
it makes a :class:`HeldRun` from the run record and commits it like any supervisor
(``Shard._commit``): its effects are the store writes below plus the cancel of each child
run, and its ``finished`` makes the shard tell waiters, lifecycle subscribers and the
parent, once the write is durable.
"""

from __future__ import annotations

from typing import Any

from actorflow._types import RunStatus
from actorflow.runtime.supervision._run import HasEffects, move_status
from actorflow.store import _keys as K
from actorflow.store._records import dump_record, load_record, load_step

__all__ = ["HeldRun"]

#: Step statuses of work not ended: a cancel ends them as cancelled.
_OPEN = frozenset({"pending", "running", "retrying"})


class HeldRun(HasEffects):
    """Stands in for the supervisor of a held run that cannot load, to cancel it."""

    __slots__ = (
        "cancel_reason",
        "commits",
        "core",
        "ended_at",
        "error",
        "finished",
        "parent",
        "rec",
        "run_id",
        "status",
        "workflow_id",
    )

    def __init__(self, core: Any, rec: dict[str, Any]) -> None:
        self._fx = None
        self.core = core
        self.rec = rec
        self.run_id: str = rec["id"]
        self.workflow_id: str = rec["workflow"]
        self.status = RunStatus(rec["status"])
        parent = rec.get("parent")
        self.parent = (parent[0], parent[1]) if parent else None
        self.commits = 0
        self.finished = False
        self.error: Any = None
        self.cancel_reason: str | None = None
        self.ended_at: float | None = None

    def cancel(self, reason: str, terminate: bool = False) -> bool:
        """End the run as cancelled (False: it had already finished)."""
        if self.finished or self.status.terminal:
            return False
        store, run_id = self.core.store, self.run_id
        now = self.core.clock.now()
        self.cancel_reason = reason
        self.ended_at = now
        move_status(self, RunStatus.CANCELLED)
        ops = self.fx.ops
        rec = {**self.rec, "status": RunStatus.CANCELLED.value, "ended_at": now}
        rec["cancel_reason"] = reason
        rec.pop("held", None)
        ops.append((K.RUNS, K.run_key(run_id), dump_record(rec)))
        if rec.get("deadline") is not None:
            ops.append((K.TIMERS, K.timer_key(rec["deadline"], run_id, "deadline"), None))
        steps = K.step_prefix(run_id)
        for key, raw in store.scan(K.STEPS, steps):
            step = load_step(raw, key[len(steps) :].decode(), f"step of run {run_id}")
            if step.get("status") not in _OPEN:
                continue
            if step.get("child_run_id"):
                self.fx.children.append(("cancel", step["child_run_id"]))
            closed = {**step, "status": "cancelled", "ended_at": now}
            ops.append((K.STEPS, key, dump_record(closed)))
        prefix = K.approval_index_prefix(run_id)
        for key, _ in store.scan(K.INDEX, prefix):
            approval_key = key[len(prefix) :]
            raw = store.get(K.APPROVALS, approval_key)
            if raw is None:
                continue
            approval = load_record(raw, f"approval of run {run_id}")
            if approval.get("status") == "waiting":
                approval = {**approval, "status": "cancelled", "resolved_at": now}
                ops.append((K.APPROVALS, approval_key, dump_record(approval)))
        self.core.held.pop(run_id, None)
        self.finished = True
        self.fx.finished = True
        return True

    # -- what Shard._commit asks of a supervisor ---------------------------------------------

    def take_history(self) -> None:
        """No history: nothing of the run was replayed or run."""

    def fail_internal(self, exc: BaseException) -> None:
        """Its records cannot be stored: the cancel is not recorded (the run stays held)."""
        self._fx = None
        self.finished = False

    def passive(self) -> bool:
        """Never kept in memory after the write."""
        return False
