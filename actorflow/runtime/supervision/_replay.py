"""Rebuilding a run from the store: replay its history, then resume what was in flight.

A run's history is the list of events its evaluator applied, written with the state changes
they caused. Replaying them into a fresh evaluator state gives the same frames and node states
as before, without running anything (commands are only noted). What is left pending at the end
is what was in flight: steps recorded as running are dispatched again as new attempts (or,
if the last stop recorded that they never started, as the same attempts: ``_unstarted.py``),
timers are re-armed, decisions that were not recorded are taken again, children are looked up.
"""

from __future__ import annotations

import base64
import logging
import struct
from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus, StepStatus
from actorflow.definition._spec import StepSpec, SubflowSpec
from actorflow.graph import _codes as G
from actorflow.runtime.kernel._messages import ErrorInfo
from actorflow.runtime.persistence import _unstarted
from actorflow.runtime.supervision import _waits
from actorflow.runtime.supervision._run import move_status, unhold
from actorflow.runtime.supervision._steps import too_interrupted
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._records import load_step, output_of

if TYPE_CHECKING:  # the supervisor imports this module to replay and resume itself
    from actorflow.runtime.supervision._graph import Supervisor

__all__ = ["replay", "resume"]

log = logging.getLogger("actorflow.engine")


def replay(sup: Supervisor, rec: dict[str, Any]) -> None:
    """Fill a new supervisor from its run record and replay its history (not if queued)."""
    core, run_id = sup.core, sup.run_id
    sup.load_header(rec, b"Jnull")
    if sup.status == RunStatus.QUEUED:
        return  # not started yet: resume() starts it
    sup.held_reason = rec.get("held")
    sup.replaying = True
    try:
        sup._commands(sup.ev.start(sup.pp, sup.state))
        for key, value in core.store.scan(K.HISTORY, K.history_prefix(run_id)):
            events = struct.unpack(f"<{len(value) // 4}i", value)
            for i in range(0, len(events), 4):
                sup._apply(events[i], events[i + 1], events[i + 2], events[i + 3])
            sup.seq = K.decode_history_seq(key) + 1
    finally:
        sup.replaying = False
    unhold(sup)


def resume(sup: Supervisor, admitted_at: float | None = None) -> None:
    """Drive a loaded run: start a queued one, take up again what was in flight.

    A queued run begins at ``admitted_at`` when admission gave the time (see ``_admission``).
    """
    now = sup.core.clock.now()
    if sup.status == RunStatus.QUEUED:
        move_status(sup, RunStatus.RUNNING)
        sup._begin(now if admitted_at is None else admitted_at)
        return
    sup.unstarted = _unstarted.take(sup.core.store, sup.run_id, sup.fx.ops)
    ev, state = sup.ev, sup.state
    for (frame, node), op in list(sup.pending.items()):
        if ev.status(sup.pp, state, frame, node) != G.S_RUNNING:
            del sup.pending[(frame, node)]
            continue
        if op == G.C_RUN:
            _resume_leaf(sup, frame, node, now)
        elif op == G.C_SLEEP and sup.plan.kind[node] == G.K_WAIT:
            _waits.resume_wait(sup, frame, node)
        elif op == G.C_SLEEP:
            leaf = sup.load_leaf(frame, node)
            if leaf.wake_at is None:
                sup._sleep(frame, node)
            else:
                sup.fx.timers.append((leaf.wake_at, sup.run_id, "sleep:" + leaf.path))
        elif op == G.C_CHILD:
            leaf = sup.load_leaf(frame, node)
            if leaf.child is None:
                sup._child(frame, node)
            elif not sup._child_outcome(leaf):
                spec = sup.plan.specs[node]
                assert isinstance(spec, SubflowSpec)
                key = f"{sup.run_id}/{leaf.path}"
                # Start it (again): a child that exists already ignores the duplicate. Its
                # input is computed as it was the first time (it used to be the parent's
                # payload here, which a crash before the child's record would have given it).
                payload, err = sup.child_input(frame, node)
                if err is not None:
                    sup._leaf_failed_for_good(leaf, err)
                    continue
                sup.fx.children.append(
                    (
                        "start",
                        leaf.child,
                        spec.workflow_id,
                        payload,
                        key,
                        (sup.run_id, leaf.path),
                        sup.depth + 1,
                    )
                )
        elif op == G.C_DECIDE:
            sup._decide(frame, node)
        elif op == G.C_EXPAND:
            sup._expand(frame, node)
        elif op == G.C_LOOP:
            sup._loop(frame, node, sup.loop_iter.pop((frame, node), 0))
    if sup.deadline is not None and not sup.finished:
        sup.fx.timers.append((sup.deadline, sup.run_id, "deadline"))
    sup._check_outcome()


def _resume_leaf(sup: Supervisor, frame: int, node: int, now: float) -> None:
    leaf = sup.load_leaf(frame, node)
    sup.pending[(frame, node)] = G.C_RUN
    if leaf.attempt == 0 and sup.compiled.chunkable[node]:
        sent = sup.chunked_before(frame, node)
        if sent is None:
            sup._run(frame, node)  # never sent: it may go in a chunk again
            return
        # Sent in a chunk whose outcome is lost: this item's attempt was interrupted.
        leaf.attempt, leaf.dispatched_at = sent
        leaf.status = StepStatus.RUNNING
    if leaf.status == StepStatus.RETRYING and leaf.next_retry_at is not None:
        sup.fx.timers.append((leaf.next_retry_at, sup.run_id, "retry:" + leaf.path))
        return
    if leaf.status == StepStatus.SUCCEEDED:  # the result is recorded; only its event was not
        out = output_of(load_step(leaf.record(), leaf.path, "step"), sup.core.store, sup.run_id)
        sup._succeed(leaf, out if out is not None else b"Jnull")
        return
    if leaf.status == StepStatus.RUNNING and sup.unstarted.get(leaf.path) == leaf.attempt:
        # The last stop recorded that this attempt never started: it is no attempt. It goes
        # out again under the same number, and no interruption is counted.
        leaf.attempt -= 1
    elif leaf.status == StepStatus.RUNNING:
        leaf.attempts.append(
            {
                "attempt": leaf.attempt,
                "status": "interrupted",
                "kind": "interrupted",
                "started_at": leaf.started_at,
                "ended_at": now,
                "error": "the engine stopped while this attempt was in flight",
                "pid": None,
            }
        )
        poisoned = too_interrupted(leaf.attempts, sup.core.config.max_interruptions)
        if poisoned is not None:
            sup._leaf_failed_for_good(leaf, poisoned)
            return
    spec = sup.plan.specs[node]
    if leaf.handling:  # its error handler was running: run it again
        handler = getattr(spec, "on_error", None) or sup.compiled.spec.on_error
        err = leaf.error or {}
        blob = base64.b64decode(err["exc"]) if err.get("exc") else None
        error = b"P" + blob if blob else _remote(err)
        leaf.handling = False
        sup._dispatch(leaf, handler, error)
        return
    if isinstance(spec, StepSpec):
        sup._dispatch(leaf)


def _remote(err: dict[str, object]) -> bytes:
    from actorflow.errors import RemoteError

    info = ErrorInfo("error", str(err.get("type", "")), (), str(err.get("message", "")))
    return encode_value(RemoteError(info.type, info.message), "error")
