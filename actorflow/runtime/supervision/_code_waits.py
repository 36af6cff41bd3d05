"""Code-workflow sleeps and waits: ``ctx.sleep``, ``ctx.wait_for_signal``, ``ctx.wait_for_event``.

A sleep arms a durable timer and resolves when it fires. A signal wait is satisfied inside
the function (the signal handler sets its future); here it only needs its timeout timer and
its record. An event wait registers with the engine's event hub (``core.events``), first
taking a matching event already in the run's inbox; it resolves with the event's payload,
or at its timeout with the default (or a ``WaitTimeout``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus, StepStatus
from actorflow.runtime.kernel._messages import ErrorInfo, EventDelivered
from actorflow.runtime.supervision._code_state import (
    CommandKind,
    State,
    by_path,
    mark_cancelled,
    now,
    pack,
    resolve_ok,
)
from actorflow.runtime.supervision._steps import Leaf, attempt_record, error_record
from actorflow.store import _keys as K
from actorflow.store._codec import decode_value

if TYPE_CHECKING:
    from actorflow.runtime.supervision._code import CodeSupervisor

__all__ = ["EVENT", "SIGNAL", "SLEEP", "finish_wait", "on_event"]

_WAIT_TIMEOUT = ("actorflow.errors.WaitTimeout", "actorflow.errors.RunError")


def _begin_wait(sup: CodeSupervisor, leaf: Leaf) -> None:
    at = now(sup)
    leaf.status = StepStatus.RUNNING
    leaf.attempt = 1
    leaf.dispatched_at = at
    leaf.started_at = at


def _succeed_wait(sup: CodeSupervisor, st: State, how: str | None) -> None:
    leaf = st.leaf
    at = now(sup)
    if leaf.wake_at is not None and st.cmd.kind != "sleep":
        sup._drop_timer(leaf.wake_at, "wait:" + leaf.path)
    leaf.status = StepStatus.SUCCEEDED
    leaf.ended_at = at
    leaf.wait = None
    leaf.attempts.append(attempt_record(1, "succeeded", how, leaf.dispatched_at, at))
    sup.fx.ops.append(leaf.put())


# -- sleeps ---------------------------------------------------------------------------------


def _start_sleep(sup: CodeSupervisor, st: State) -> None:
    leaf = st.leaf
    _begin_wait(sup, leaf)
    leaf.wake_at = now(sup) + st.cmd.opts["seconds"]
    sup.fx.ops.append(leaf.put())
    sup._timer(leaf.wake_at, "sleep:" + leaf.path)


def _resume_sleep(sup: CodeSupervisor, st: State, leaf: Leaf | None, rec: dict[str, Any]) -> None:
    assert leaf is not None
    if leaf.wake_at is None:
        leaf.wake_at = now(sup) + st.cmd.opts["seconds"]
        sup._timer(leaf.wake_at, "sleep:" + leaf.path)
    else:
        sup.fx.timers.append((leaf.wake_at, sup.run_id, "sleep:" + leaf.path))


def _sleep_timer(sup: CodeSupervisor, st: State, kind: str) -> None:
    if kind == "sleep":
        _succeed_wait(sup, st, None)
        resolve_ok(sup, st, b"Jnull")


# -- waits for a signal or an event ---------------------------------------------------------


def _arm_wait_timer(sup: CodeSupervisor, st: State) -> None:
    timeout = st.cmd.opts.get("timeout")
    if timeout is not None and st.leaf.wake_at is None:
        st.leaf.wake_at = (st.leaf.dispatched_at or now(sup)) + timeout
        sup._timer(st.leaf.wake_at, "wait:" + st.leaf.path)


def _start_signal(sup: CodeSupervisor, st: State) -> None:
    leaf = st.leaf
    _begin_wait(sup, leaf)
    assert st.cmd.fut is not None
    if st.cmd.fut.done():  # a signal that had arrived before: taken at once
        finish_wait(sup, st, "signal (arrived before the wait)")
        return
    _arm_wait_timer(sup, st)
    sup.fx.ops.append(leaf.put())


def finish_wait(sup: CodeSupervisor, st: State, how: str) -> None:
    """A signal wait was satisfied inside the function (no resolution of its own)."""
    _succeed_wait(sup, st, how)
    sup.states.pop(st.cmd.seq, None)


def _start_event(sup: CodeSupervisor, st: State) -> None:
    _begin_wait(sup, st.leaf)
    _wait_event(sup, st)


def _wait_event(sup: CodeSupervisor, st: State) -> None:
    cmd, leaf = st.cmd, st.leaf
    opts = cmd.opts
    leaf.wait = {"event": opts["event"], "key": opts.get("key")}
    if _take_inbox(sup, st):
        return
    ops, payload = sup.core.events.register(
        opts["event"], opts.get("key"), sup.run_id, leaf.path, lambda p: _matches(sup, st, p)
    )
    sup.fx.ops.extend(ops)
    if payload is not None:
        _event_arrived(sup, st, payload, "event (published before the wait)")
        return
    _arm_wait_timer(sup, st)
    sup.fx.ops.append(leaf.put())


def _take_inbox(sup: CodeSupervisor, st: State) -> bool:
    prefix = K.inbox_prefix(sup.run_id, st.leaf.path)
    for ikey, payload in sup.core.store.scan(K.EVENTS, prefix):
        sup.fx.ops.append((K.EVENTS, ikey, None))
        if _matches(sup, st, payload):
            _event_arrived(sup, st, payload, "event")
            return True
    return False


def _matches(sup: CodeSupervisor, st: State, payload: bytes) -> bool:
    match = st.cmd.opts.get("match")
    if match is None:
        return True
    try:
        return bool(match(decode_value(payload, f"event {st.cmd.opts['event']!r}")))
    except Exception:
        return False


def _event_arrived(sup: CodeSupervisor, st: State, payload: bytes, how: str) -> None:
    sup.fx.ops.extend(sup.core.events.unregister(st.cmd.opts["event"], sup.run_id, st.leaf.path))
    _succeed_wait(sup, st, how)
    value = decode_value(payload, f"event {st.cmd.opts['event']!r}")
    packed = ["ok", st.cmd.seq, *pack(sup, payload, st.leaf.path)]
    del sup.states[st.cmd.seq]
    sup.queue_resolution(packed, ("ok", st.cmd.seq, value))


def on_event(sup: CodeSupervisor, msg: EventDelivered) -> None:
    """An event was delivered to the run's inbox for one of its waits."""
    if sup.status != RunStatus.RUNNING:
        return
    st = by_path(sup, msg.path)
    if st is None or st.cmd.kind != "event":
        return
    ikey = K.inbox_prefix(sup.run_id, msg.path) + msg.event_id.encode()
    payload = sup.core.store.get(K.EVENTS, ikey)
    if payload is None:
        return  # already taken (a duplicate notice)
    sup.fx.ops.append((K.EVENTS, ikey, None))
    if not _matches(sup, st, payload):
        return
    sup.fx.ops.extend(sup.core.events.unregister(st.cmd.opts["event"], sup.run_id, msg.path))
    _succeed_wait(sup, st, "event")
    resolve_ok(sup, st, payload)


def _resume_wait(sup: CodeSupervisor, st: State, leaf: Leaf | None, rec: dict[str, Any]) -> None:
    assert leaf is not None
    if leaf.wake_at is not None:
        sup.fx.timers.append((leaf.wake_at, sup.run_id, "wait:" + leaf.path))
    if st.cmd.kind == "event":
        _wait_event(sup, st)


def _wait_timer(sup: CodeSupervisor, st: State, kind: str) -> None:
    """The wait's timeout: its default, or a ``WaitTimeout`` for the function."""
    if kind != "wait":
        return
    leaf = st.leaf
    if st.cmd.kind == "event":
        sup.fx.ops.extend(sup.core.events.unregister(st.cmd.opts["event"], sup.run_id, leaf.path))
    at = now(sup)
    what = "signal" if st.cmd.kind == "signal" else f"event {st.cmd.opts['event']!r}"
    message = f"no {what} within {st.cmd.opts.get('timeout', 0):g}s"
    leaf.ended_at = at
    leaf.wait = None
    if "default" in st.cmd.opts:
        leaf.status = StepStatus.SUCCEEDED
        leaf.attempts.append(
            attempt_record(1, "succeeded", None, leaf.dispatched_at, at, f"{message}: default")
        )
    else:
        leaf.status = StepStatus.FAILED
        leaf.failures = 1
        err = ErrorInfo("error", _WAIT_TIMEOUT[0], _WAIT_TIMEOUT, message)
        leaf.error = error_record(err, leaf.path, 1)
        leaf.attempts.append(attempt_record(1, "failed", "error", leaf.dispatched_at, at, message))
    sup.fx.ops.append(leaf.put())
    sup.states.pop(st.cmd.seq, None)
    sup.wake(["tmo", st.cmd.seq], ("tmo", st.cmd.seq))


def _drop_wait(sup: CodeSupervisor, st: State, why: str, cancel_children: bool) -> None:
    leaf, cmd = st.leaf, st.cmd
    if leaf.wake_at is not None:
        sup._drop_timer(leaf.wake_at, ("sleep:" if cmd.kind == "sleep" else "wait:") + leaf.path)
    if cmd.kind == "event":
        sup.fx.ops.extend(sup.core.events.unregister(cmd.opts["event"], sup.run_id, leaf.path))
    mark_cancelled(sup, leaf)


SLEEP = CommandKind(_start_sleep, _resume_sleep, _drop_wait, _sleep_timer)
SIGNAL = CommandKind(_start_signal, _resume_wait, _drop_wait, _wait_timer)
EVENT = CommandKind(_start_event, _resume_wait, _drop_wait, _wait_timer)
