"""What every kind of code-workflow command shares: its state, and its resolution.

Each live command the workflow function issued (a step, a map, a sleep, a wait for a signal
or an event, a child run) gets a :class:`State` and a :class:`Leaf` (its step record, for
what ``inspect`` shows). However it ends, its outcome becomes a *resolution*: recorded in
the run's history and fed to the function (``CodeSupervisor.wake``, or ``queue_resolution``
while the function is being activated). The kinds themselves live in ``_code_steps``,
``_code_waits`` and ``_code_children``; ``_code_commands`` routes each command to its kind.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from actorflow._types import RunStatus, StepStatus
from actorflow.code._driver import Command
from actorflow.code._history import pack_value
from actorflow.definition._options import NO_RETRY, Retry
from actorflow.definition._spec import FunctionRef, function_ref
from actorflow.runtime.kernel._messages import ErrorInfo
from actorflow.runtime.supervision._steps import (
    Leaf,
    attempt_record,
    attempt_summary,
    error_record,
)
from actorflow.store._codec import decode_value

if TYPE_CHECKING:
    from actorflow.runtime.supervision._code import CodeSupervisor

__all__ = [
    "KIND_RECORDED",
    "CommandKind",
    "State",
    "by_path",
    "fail_command",
    "mark_cancelled",
    "no_timer",
    "now",
    "pack",
    "ref",
    "resolve_err",
    "resolve_ok",
]

#: The kind a command's step record shows, by command kind.
KIND_RECORDED = {
    "step": "step",
    "map": "map",
    "sleep": "sleep",
    "signal": "signal",
    "event": "wait_for_event",
    "child": "subflow",
    "external": "external",
}
_refs: weakref.WeakKeyDictionary[Any, FunctionRef] = weakref.WeakKeyDictionary()


class State:
    """A live command's engine state."""

    __slots__ = (
        "args",
        "cmd",
        "fn",
        "inflight",
        "items",
        "leaf",
        "next",
        "results",
        "retry",
    )

    def __init__(self, cmd: Command, leaf: Leaf) -> None:
        self.cmd = cmd
        self.leaf = leaf
        self.fn: FunctionRef | None = None
        self.args: bytes | None = None
        self.retry: Retry = NO_RETRY
        self.items: list[bytes] = []  # a map's encoded argument lists
        self.results: dict[int, bytes] = {}  # a map's finished items
        self.next = 0  # a map's next item to dispatch
        self.inflight = 0


class CommandKind(NamedTuple):
    """How one kind of command starts, resumes after a reload, ends early, and wakes.

    ``start(sup, st)``: issued in an activation that completed. ``resume(sup, st, leaf,
    rec)``: still pending after a replay, from its step record (``leaf`` is None for a map,
    whose items have records of their own). ``drop(sup, st, why, cancel_children)``: the
    run ended or panicked first. ``timer(sup, st, kind)``: its ``sleep`` or ``wait`` timer
    fired (already dropped from the store).
    """

    start: Callable[[CodeSupervisor, State], None]
    resume: Callable[[CodeSupervisor, State, Leaf | None, dict[str, Any]], None]
    drop: Callable[[CodeSupervisor, State, str, bool], None]
    timer: Callable[[CodeSupervisor, State, str], None]


def pack(sup: CodeSupervisor, encoded: bytes, ref: str) -> list[Any]:
    """A value's two items in a resolution (stored under ``ref`` unless small JSON)."""
    return pack_value(encoded, ref, sup.fx.ops, sup.run_id)


def ref(fn: Callable[..., Any]) -> FunctionRef:
    """A step function's reference (by name, or by value), made once per function."""
    try:
        found = _refs.get(fn)
    except TypeError:  # not weak-referenceable
        return function_ref(fn)
    if found is None:
        found = function_ref(fn)
        try:
            _refs[fn] = found
        except TypeError:
            pass
    return found


def now(sup: CodeSupervisor) -> float:
    """The engine clock's time."""
    return float(sup.core.clock.now())


def by_path(sup: CodeSupervisor, path: str) -> State | None:
    """The live command whose record is at ``path``."""
    for st in sup.states.values():
        if st.leaf.path == path:
            return st
    return None


def resolve_ok(sup: CodeSupervisor, st: State, output: bytes, stored: bool = False) -> None:
    """The command succeeded with ``output``: record it and wake the function.

    ``stored``: ``output`` is in the store already (its step record or its value).
    """
    leaf = st.leaf
    value = decode_value(output, f"output of {st.cmd.kind} {st.cmd.name!r}")
    ops = None if stored else sup.fx.ops
    packed = ["ok", st.cmd.seq, *pack_value(output, leaf.path, ops, sup.run_id)]
    sup.states.pop(st.cmd.seq, None)
    sup.wake(packed, ("ok", st.cmd.seq, value))


def resolve_err(sup: CodeSupervisor, st: State, record: dict[str, Any]) -> None:
    """The command failed with the error ``record``: wake the function with it."""
    sup.states.pop(st.cmd.seq, None)
    sup.wake(["err", st.cmd.seq, record], ("err", st.cmd.seq, sup._exception(record)))


def fail_command(
    sup: CodeSupervisor, st: State, err: ErrorInfo, note: str, record_attempt: bool = True
) -> None:
    """A command that cannot be carried out fails (the function sees StepFailed).

    ``record_attempt``: note a failed attempt (not when the last one is already recorded).
    """
    leaf = st.leaf
    at = now(sup)
    leaf.status = StepStatus.FAILED
    leaf.attempt = max(1, leaf.attempt)
    leaf.ended_at = at
    leaf.failures += 1
    leaf.error = error_record(err, leaf.path, leaf.attempt)
    if record_attempt:
        summary = attempt_summary(err) + (f" ({note})" if note else "")
        leaf.attempts.append(attempt_record(leaf.attempt, "failed", err.kind, at, at, summary))
    sup.fx.ops.append(leaf.put())
    record = leaf.error
    sup.states.pop(st.cmd.seq, None)
    sup.queue_resolution(["err", st.cmd.seq, record], ("err", st.cmd.seq, sup._exception(record)))


def mark_cancelled(sup: CodeSupervisor, leaf: Leaf) -> None:
    """Record a dropped command as cancelled (not when its run panicked: it may restart)."""
    if sup.status != RunStatus.PANICKED:
        leaf.status = StepStatus.CANCELLED
        leaf.wait = None
        sup.fx.ops.append(leaf.put())


def no_timer(sup: CodeSupervisor, st: State, kind: str) -> None:
    """A kind with no timer of its own (a stale name): nothing to do."""
