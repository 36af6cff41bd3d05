"""Carrying out a code workflow's commands: each routed to its kind.

Data flow: the workflow function issues commands (``ctx.step``, ``ctx.map``, ``ctx.sleep``,
``ctx.wait_for_signal``, ``ctx.wait_for_event``, ``ctx.child``); once an activation of the
function completes, the code supervisor calls :func:`start` for each new one. A command's
outcome becomes a resolution (``_code_state``), recorded in the history and fed to the
function by ``CodeSupervisor.wake``. After a reload, :func:`resume` takes up each command
still pending from its records: a step recorded as running is dispatched again as a new
attempt (as the same attempt if the last stop recorded that it never started:
runtime/persistence/_unstarted.py), timers are armed again, events are looked for in the
inbox, children are looked up. :func:`drop` undoes a pending command when its run ends
first, and :func:`on_timer` routes a fired timer.

Each kind (``_code_steps``: step, map; ``_code_waits``: sleep, signal, event;
``_code_children``: child) is a :class:`~actorflow.runtime.supervision._code_state.CommandKind`
of four functions; this module only chooses which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus
from actorflow.code._driver import Command
from actorflow.runtime.supervision._code_children import CHILD, on_child_finished
from actorflow.runtime.supervision._code_external import EXTERNAL, on_external_done
from actorflow.runtime.supervision._code_state import (
    KIND_RECORDED,
    CommandKind,
    State,
    by_path,
    pack,
)
from actorflow.runtime.supervision._code_steps import (
    MAP,
    STEP,
    on_failed,
    on_retry_timer,
    on_succeeded,
)
from actorflow.runtime.supervision._code_waits import EVENT, SIGNAL, SLEEP, finish_wait, on_event
from actorflow.runtime.supervision._steps import Leaf
from actorflow.store import _keys as K
from actorflow.store._records import load_step
from actorflow.store._search import index_ops

if TYPE_CHECKING:
    from actorflow.runtime.supervision._code import CodeSupervisor

__all__ = [
    "State",
    "cancel_one",
    "drop",
    "finish_wait",
    "on_child_finished",
    "on_event",
    "on_external_done",
    "on_failed",
    "on_succeeded",
    "on_timer",
    "pack",
    "resume",
    "start",
]

#: Every kind of command but the markers: ``patch`` (nothing to carry out) and ``attrs``
#: (search attributes, set in the activation's own write).
KINDS: dict[str, CommandKind] = {
    "step": STEP,
    "map": MAP,
    "sleep": SLEEP,
    "signal": SIGNAL,
    "event": EVENT,
    "child": CHILD,
    "external": EXTERNAL,
}


def start(sup: CodeSupervisor, cmd: Command) -> None:
    """Carry out a command the function issued in an activation that completed."""
    if cmd.kind == "patch":
        return
    if cmd.kind == "attrs":
        _upsert(sup, cmd.opts["attrs"])
        return
    leaf = Leaf(sup.run_id, 0, cmd.seq, cmd.path, KIND_RECORDED[cmd.kind])
    st = State(cmd, leaf)
    sup.states[cmd.seq] = st
    KINDS[cmd.kind].start(sup, st)


def resume(sup: CodeSupervisor, cmd: Command) -> None:
    """Take up a command still pending after a replay, from its records."""
    if cmd.kind in ("patch", "attrs"):
        return
    raw = sup.core.store.get(K.STEPS, K.step_key(sup.run_id, cmd.path))
    if raw is None:
        start(sup, cmd)  # issued, but its start was not recorded (a signal taken at once)
        return
    rec = load_step(raw, cmd.path, f"step {cmd.path!r} of run {sup.run_id}")
    leaf = Leaf.from_record(sup.run_id, rec, 0, cmd.seq) if cmd.kind != "map" else None
    st = State(cmd, leaf or Leaf(sup.run_id, 0, cmd.seq, cmd.path, "map"))
    sup.states[cmd.seq] = st
    KINDS[cmd.kind].resume(sup, st, leaf, rec)


def drop(sup: CodeSupervisor, st: State, cancel_children: bool = True) -> None:
    """The run ended or panicked while this command was pending: undo its waits."""
    why = sup.cancel_reason or "its run ended first"
    KINDS[st.cmd.kind].drop(sup, st, why, cancel_children)


def cancel_one(sup: CodeSupervisor, st: State) -> None:
    """The function cancelled this command while it was pending: stop it, record it cancelled.

    A step's worker is stopped (killed, if it runs), a map's items too, a wait's timer and
    registration dropped, a child asked to cancel. Its results, if they come, are ignored.
    """
    why = (
        f"cancelled with its run ({sup.cancel_reason})"
        if sup.cancel_reason
        else "cancelled by the workflow"
    )
    sup.states.pop(st.cmd.seq, None)
    KINDS[st.cmd.kind].drop(sup, st, why, True)
    sup.leaves.pop(st.leaf.path, None)


def on_timer(sup: CodeSupervisor, name: str, due: float) -> None:
    """A timer of the run fired: ``retry:``, ``sleep:`` or ``wait:`` and a command's path."""
    if sup.status != RunStatus.RUNNING:
        return
    kind, _, path = name.partition(":")
    if kind == "retry":
        on_retry_timer(sup, path, name, due)
        return
    st = by_path(sup, path)
    if st is None or st.leaf.wake_at is None or abs(st.leaf.wake_at - due) > 1e-3:
        return
    sup._drop_timer(due, name)
    KINDS[st.cmd.kind].timer(sup, st, kind)


def _upsert(sup: CodeSupervisor, attrs: dict[str, Any]) -> None:
    """``ctx.upsert_search_attributes``: the run record and index, in the activation's write."""
    old = sup.search_attributes
    new = {**old, **attrs}
    new = {k: v for k, v in new.items() if v is not None}
    sup.fx.ops.extend(index_ops(sup.run_id, old, new))
    sup.search_attributes = new
    sup._put_run()
