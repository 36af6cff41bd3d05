"""Code-workflow commands to other runs: ``ctx.external(run_id).signal()``, ``.cancel()``.

They let a child report to its parent, or a run stop another.

Data flow: the command is recorded in the history when issued, like any command; its step
record (kind ``external``) is written ``running``, and once that write is durable the shard
sends the target's shard a :class:`SignalRun` (with the idempotency key
``<run id>/<path>``, so a resend after a crash is dropped as a duplicate) or a
:class:`CancelRun`. Their reply comes back to this run as :class:`ExternalDone`, which
resolves the command: ``True`` or ``False`` (a duplicate signal, a run already finished), or
the target's refusal (``RunNotFound``, a finished run, a graph run), raised where the
function awaits it as ``StepFailed``. A reload finds a ``running`` record and sends again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus, StepStatus
from actorflow.runtime.kernel._messages import ExternalDone
from actorflow.runtime.supervision._code_state import (
    CommandKind,
    State,
    by_path,
    fail_command,
    mark_cancelled,
    no_timer,
    now,
    resolve_err,
    resolve_ok,
)
from actorflow.runtime.supervision._nodes import error_info
from actorflow.runtime.supervision._steps import Leaf, attempt_record, error_record
from actorflow.store._codec import encode_value
from actorflow.store._records import inline_output, output_of

if TYPE_CHECKING:
    from actorflow.runtime.supervision._code import CodeSupervisor

__all__ = ["EXTERNAL", "on_external_done"]


def _send(sup: CodeSupervisor, st: State) -> None:
    cmd, leaf = st.cmd, st.leaf
    opts = cmd.opts
    reply_to = (sup.run_id, leaf.path)
    if opts["op"] == "cancel":
        sup.fx.children.append(("external_cancel", opts["target"], opts["reason"], reply_to))
        return
    args = opts.get("args")
    try:
        value = opts.get("payload") if args is None else list(args)
        data = encode_value(value, f"payload of {cmd.name!r}")
    except Exception as exc:
        fail_command(sup, st, error_info(exc), "")
        return
    key = f"{sup.run_id}/{leaf.path}"  # one delivery, ever, however often it is sent
    sup.fx.children.append(
        ("external_signal", opts["target"], opts["name"], data, key, args is not None, reply_to)
    )


def _start(sup: CodeSupervisor, st: State) -> None:
    leaf = st.leaf
    leaf.status = StepStatus.RUNNING
    leaf.attempt = 1
    leaf.dispatched_at = now(sup)
    sup.fx.ops.append(leaf.put())
    _send(sup, st)


def _resume(sup: CodeSupervisor, st: State, leaf: Leaf | None, rec: dict[str, Any]) -> None:
    assert leaf is not None
    if leaf.status == StepStatus.SUCCEEDED:
        resolve_ok(sup, st, output_of(rec, sup.core.store, sup.run_id) or b"Jnull", stored=True)
    elif leaf.status == StepStatus.FAILED and leaf.error is not None:
        resolve_err(sup, st, leaf.error)
    else:
        _send(sup, st)  # its reply was lost with the engine: send again (dropped if a repeat)


def on_external_done(sup: CodeSupervisor, msg: ExternalDone) -> None:
    """The target took (or refused) what this run sent it."""
    if sup.status != RunStatus.RUNNING:
        return
    st = by_path(sup, msg.path)
    if st is None or st.cmd.kind != "external" or st.leaf.status != StepStatus.RUNNING:
        return
    leaf = st.leaf
    at = now(sup)
    leaf.ended_at = at
    if msg.ok:
        output = encode_value(bool(msg.value), f"reply to {st.cmd.name!r}")
        leaf.status = StepStatus.SUCCEEDED
        leaf.inline = inline_output(output)
        leaf.attempts.append(attempt_record(1, "succeeded", None, leaf.dispatched_at, at))
        sup.fx.ops.append(leaf.put())
        resolve_ok(sup, st, output, stored=True)
        return
    info = error_info(msg.value)
    leaf.status = StepStatus.FAILED
    leaf.failures = 1
    leaf.error = error_record(info, leaf.path, 1)
    leaf.attempts.append(attempt_record(1, "failed", "error", leaf.dispatched_at, at, info.message))
    sup.fx.ops.append(leaf.put())
    resolve_err(sup, st, leaf.error)


def _drop(sup: CodeSupervisor, st: State, why: str, cancel_children: bool) -> None:
    mark_cancelled(sup, st.leaf)


EXTERNAL = CommandKind(_start, _resume, _drop, no_timer)
