"""Code-workflow child runs: ``ctx.child(name, workflow, *args)``.

A child is started once, ever: its id comes from its parent's run and path
(``core.child_run_id``), and the child's idempotency key is the same, so a start repeated
after a reload finds the run that exists. It resolves with the final run of its chain (a
child that continued as new is followed) once that has ended: its result, or a failure the
parent's function sees as ``StepFailed`` (caused by the child's own exception).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus, StepStatus
from actorflow.runtime.kernel._messages import ChildFinished, ErrorInfo
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
from actorflow.runtime.supervision._depth import refuse_child
from actorflow.runtime.supervision._nodes import error_info
from actorflow.runtime.supervision._steps import (
    Leaf,
    attempt_record,
    attempt_summary,
    child_failure,
    error_record,
)
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._records import inline_output, input_of
from actorflow.views import final_run, run_outcome

if TYPE_CHECKING:
    from actorflow.runtime.supervision._code import CodeSupervisor

__all__ = ["CHILD", "on_child_finished"]


def _start_child(sup: CodeSupervisor, st: State) -> None:
    cmd, leaf = st.cmd, st.leaf
    workflow = cmd.opts["workflow"]
    target = sup.core.workflows.get(workflow)
    if target is None:
        err = ErrorInfo(
            "error",
            "actorflow.errors.WorkflowNotFound",
            ("actorflow.errors.WorkflowNotFound", "actorflow.errors.ClientError"),
            f"ctx.child {cmd.name!r}: no workflow {workflow!r} is defined on this engine",
        )
        fail_command(sup, st, err, "")
        return
    args = list(cmd.opts["args"])
    try:
        if getattr(target, "code", False):
            payload = encode_value(args, f"arguments of child {cmd.name!r}")
        else:
            payload = encode_value(args[0] if args else None, f"payload of child {cmd.name!r}")
    except Exception as exc:
        fail_command(sup, st, error_info(exc), "")
        return
    refused = refuse_child(sup, leaf.path, workflow)
    if refused is not None:  # raised at the function's `await ctx.child`; never retried
        fail_command(sup, st, refused, "")
        return
    at = now(sup)
    leaf.status = StepStatus.RUNNING
    leaf.attempt = 1
    leaf.dispatched_at = at
    key = f"{sup.run_id}/{leaf.path}"  # the child's idempotency key: one child, ever
    leaf.child = sup.core.child_run_id(workflow, key)
    leaf.input = input_of(payload)  # what the child is given
    sup.fx.ops.append(leaf.put())
    parent = (sup.run_id, leaf.path)
    sup.fx.children.append(("start", leaf.child, workflow, payload, key, parent, sup.depth + 1))


def on_child_finished(sup: CodeSupervisor, msg: ChildFinished) -> None:
    """A child run (the last of its chain) ended."""
    if sup.status != RunStatus.RUNNING:
        return
    st = by_path(sup, msg.path)
    if st is None or st.cmd.kind != "child":
        return
    _child_outcome(sup, st)


def _child_outcome(sup: CodeSupervisor, st: State) -> bool:
    """Apply the child's final state (following continue-as-new); False while it runs."""
    leaf = st.leaf
    child = final_run(sup.core.store, leaf.child or "")
    if child is None:
        return False
    child_id, rec = child
    status = RunStatus(rec["status"])
    if not status.terminal:
        return False
    at = now(sup)
    leaf.ended_at = at
    if status == RunStatus.COMPLETED:
        _, result, _ = run_outcome(sup.core.store, child_id)
        leaf.status = StepStatus.SUCCEEDED
        leaf.attempts.append(attempt_record(1, "succeeded", None, leaf.dispatched_at, at))
        output = encode_value(result, f"result of child run {child_id}")
        leaf.inline = inline_output(output)
        if leaf.inline is None:
            sup.fx.ops.append((K.VALUES, leaf.key, output))
        sup.fx.ops.append(leaf.put())
        resolve_ok(sup, st, output, stored=True)
        return True
    info = child_failure(child_id, rec)
    exc = (rec.get("error") or {}).get("exc")
    leaf.status = StepStatus.FAILED
    leaf.failures = 1
    leaf.error = error_record(info, leaf.path, 1)
    if exc and rec.get("status") != "cancelled":
        leaf.error["exc"] = exc  # the child's exception, for the parent's cause
    leaf.attempts.append(
        attempt_record(1, "failed", "child", leaf.dispatched_at, at, attempt_summary(info))
    )
    sup.fx.ops.append(leaf.put())
    resolve_err(sup, st, leaf.error)
    return True


def _resume_child(sup: CodeSupervisor, st: State, leaf: Leaf | None, rec: dict[str, Any]) -> None:
    assert leaf is not None
    cmd = st.cmd
    if leaf.child is None:
        _start_child(sup, st)
    elif not _child_outcome(sup, st):
        args = list(cmd.opts["args"])
        target = sup.core.workflows.get(cmd.opts["workflow"])
        code = getattr(target, "code", False)
        payload = encode_value(args if code else (args[0] if args else None), "child input")
        key = f"{sup.run_id}/{leaf.path}"
        parent = (sup.run_id, leaf.path)
        sup.fx.children.append(
            ("start", leaf.child, cmd.opts["workflow"], payload, key, parent, sup.depth + 1)
        )


def _drop_child(sup: CodeSupervisor, st: State, why: str, cancel_children: bool) -> None:
    """The parent closed (or cancelled this command): its parent-close policy applies.

    ``terminate`` ends the child at once, ``request_cancel`` cancels it (its code cleans
    up), ``abandon`` leaves it running on its own: then the parent's record of it stays
    ``running`` (its ``child_run_id`` leads to it). A command the code itself cancelled
    while its run goes on asks the child to cancel, whatever the policy.
    """
    leaf = st.leaf
    if leaf.wake_at is not None:
        sup._drop_timer(leaf.wake_at, "wait:" + leaf.path)
    policy = st.cmd.opts.get("policy", "terminate")
    if sup.finished and policy == "abandon":
        return
    if leaf.child is not None and cancel_children:
        closing = sup.finished and policy == "terminate"
        sup.fx.children.append(("terminate" if closing else "cancel", leaf.child))
    mark_cancelled(sup, leaf)


CHILD = CommandKind(_start_child, _resume_child, _drop_child, no_timer)
