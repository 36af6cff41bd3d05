"""A run's event history, as Temporal's UI lists one: what happened to it, in time order.

Data flow. Nothing new is recorded for it: the events are read back from what the engine
already keeps, so every run has a history, including runs written by older releases.

- the run record: triggered, started, and how it ended (completed, failed, cancelled,
  continued as new), with its error or cancel reason;
- each step record's attempts: started (with the worker's pid), then succeeded, failed,
  cancelled, interrupted (the engine stopped) or mocked; a retry's due time; the arm a
  branch took, the winner of a race, the child run a subflow started;
- the run's approvals (through the ``a`` index, not a scan of every approval):
  requested, then resumed, expired or cancelled;
- for a code workflow, its activations (``code/_history.py``): the commands the function
  issued (a step, a timer, a child, a wait...) and what woke it (a signal, an update, a
  cancel request, a wait that timed out).

Each event is a dict ``{"time", "type", "step", "attempt", "detail"}``; ``detail`` is a
short text, and events of the same instant keep the order they happened in. The reader never
unpickles a value and never needs the user's code.
"""

from __future__ import annotations

from typing import Any

from actorflow.code._history import read_history
from actorflow.store import _keys as K
from actorflow.store._protocol import Store, get_many
from actorflow.store._records import load_record
from actorflow.views import RunDetails, StepDetails, inspect_run, read_run

__all__ = ["run_history"]

#: Event types of an attempt's outcome, by the attempt's status.
_OUTCOMES = {
    "succeeded": "step_succeeded",
    "failed": "step_failed",
    "cancelled": "step_cancelled",
    "interrupted": "step_interrupted",
}

#: Event types of a run's end, by its status.
_ENDS = {
    "completed": "run_completed",
    "failed": "run_failed",
    "cancelled": "run_cancelled",
    "continued": "run_continued",
}

#: Resolutions of a code workflow's history (see ``code/_history.py``) worth an event.
_WOKEN = {"sig": "signal_received", "upd": "update_received", "cxl": "cancel_requested"}


class _Events:
    """Events as they are read, each with its rank so that sorting keeps same-time order."""

    def __init__(self) -> None:
        self.items: list[tuple[float, int, dict[str, Any]]] = []

    def add(
        self,
        time: float | None,
        type_: str,
        step: str | None = None,
        attempt: int | None = None,
        detail: str = "",
    ) -> None:
        if time is None:
            return  # not known (a record from before the field existed): no event
        event = {"time": time, "type": type_, "step": step, "attempt": attempt, "detail": detail}
        self.items.append((time, len(self.items), event))

    def sorted(self) -> list[dict[str, Any]]:
        return [event for _, _, event in sorted(self.items, key=lambda t: (t[0], t[1]))]


def run_history(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The events of ``run_id``, oldest first (see the module docstring).

    Raises:
        RunNotFound: no such run.
    """
    rec = read_run(store, run_id)
    details = inspect_run(store, run_id)
    out = _Events()
    _run_started(out, details)
    for step in details.steps:
        _step(out, step)
    _approvals(out, store, run_id)
    if rec.get("kind") == "code":
        _activations(out, store, run_id)
    _run_ended(out, details)
    return out.sorted()


def _run_started(out: _Events, d: RunDetails) -> None:
    detail = f"input {d.payload}"
    if d.idempotency_key is not None:
        detail += f", idempotency key {d.idempotency_key!r}"
    if d.parent_run_id is not None:
        detail += f", child of run {d.parent_run_id}"
    out.add(d.created_at, "run_triggered", detail=detail)
    if d.started_at is not None and d.started_at > d.created_at:
        out.add(d.started_at, "run_started", detail="admitted (it was queued)")
    elif d.started_at is not None:
        out.add(d.started_at, "run_started")


def _step(out: _Events, s: StepDetails) -> None:
    path = s.path or s.name
    if not s.attempts and s.dispatched_at is not None and s.kind in ("step", "action"):
        out.add(s.dispatched_at, "step_scheduled", path, s.attempt or 1)
    for a in s.attempts:
        if a.kind == "mocked":
            out.add(a.ended_at or a.started_at, "step_mocked", path, a.attempt, "not run")
            continue
        where = f"worker pid {a.pid}" if a.pid else ""
        out.add(a.started_at, "step_started", path, a.attempt, where)
        kind = f"{a.kind}: " if a.kind and a.status == "failed" else ""
        detail = f"{kind}{a.error}" if a.error else ""
        out.add(a.ended_at, _OUTCOMES.get(a.status, f"step_{a.status}"), path, a.attempt, detail)
    if s.next_retry_at is not None:
        out.add(s.ended_at, "retry_scheduled", path, s.attempt, f"at {s.next_retry_at:.3f}")
    if s.branch is not None:
        out.add(s.started_at or s.ended_at, "branch_taken", path, None, f"arm {s.branch!r}")
    if s.winner is not None:
        out.add(s.ended_at, "race_won", path, None, f"by {s.winner!r}")
    if s.child_run_id is not None:
        out.add(s.started_at or s.dispatched_at, "child_started", path, None, s.child_run_id)
    if s.recovered:
        out.add(s.ended_at, "step_recovered", path, None, "its on_error handler gave the output")


def _approvals(out: _Events, store: Store, run_id: str) -> None:
    prefix = K.approval_index_prefix(run_id)
    keys = [key[len(prefix) :] for key, _ in store.scan(K.INDEX, prefix)]
    for raw in get_many(store, K.APPROVALS, keys):
        if raw is None:
            continue  # pruned, or resolved and swept meanwhile
        a = load_record(raw, f"approval of run {run_id}")
        step = a.get("step")
        detail = a.get("description") or ""
        if a.get("expires_at"):
            detail = f"{detail}; expires at {a['expires_at']:.3f}".lstrip("; ")
        out.add(a.get("created_at"), "approval_requested", step, None, detail)
        status = a.get("status")
        if status and status != "waiting":
            shown = f"payload {a['payload']}" if a.get("payload") is not None else ""
            out.add(a.get("resolved_at"), f"approval_{status}", step, None, shown)


def _activations(out: _Events, store: Store, run_id: str) -> None:
    entries, _ = read_history(store, run_id)
    for entry in entries:
        for res in entry.r:
            tag = res[0] if res else None
            if tag in ("sig", "upd"):
                name = res[1] if tag == "sig" else res[2]
                out.add(entry.t, _WOKEN[tag], None, None, str(name))
            elif tag == "cxl":
                out.add(
                    entry.t, "cancel_requested", None, None, str(res[1] if len(res) > 1 else "")
                )
            elif tag == "tmo":
                out.add(entry.t, "wait_timed_out", None, None, f"command {res[1]}")
        for seq, kind, name in entry.c or ():
            out.add(entry.t, "command", str(name), None, f"{kind} (#{seq})")


def _run_ended(out: _Events, d: RunDetails) -> None:
    end = _ENDS.get(d.status.value)
    if end is None or d.ended_at is None:
        return
    detail = ""
    if d.error is not None:
        detail = f"{d.error.type}: {d.error.message}"
    elif d.cancel_reason:
        detail = d.cancel_reason
    elif d.result is not None:
        detail = f"result {d.result}"
    out.add(d.ended_at, end, None, None, detail)
