"""What reaches runs from outside: published events, approval resumes and state calls.

The :class:`~actorflow.Engine` methods (``publish``, ``resume``, ``approvals``, ``state``) are
thin wrappers over these functions; the ASGI app calls the same ones.
"""

from __future__ import annotations

from typing import Any

import pykka

from actorflow.definition._options import parse_duration
from actorflow.errors import (
    ApprovalAlreadyResolved,
    ApprovalExpired,
    ApprovalNotFound,
    ClientError,
    DefinitionError,
    StoreError,
)
from actorflow.runtime._core import Core
from actorflow.runtime.kernel._messages import EventDelivered, ResumeApproval, Write
from actorflow.runtime.kernel._promise import Countdown, Promise
from actorflow.runtime.supervision import _event_runs
from actorflow.runtime.supervision._waits import find_approval
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._protocol import Op, Store
from actorflow.store._records import load_record

__all__ = [
    "EngineHost",
    "list_approvals",
    "publish",
    "resume",
    "state_call",
]

_APPROVAL_STATUSES = ("waiting", "resumed", "expired", "cancelled")
_STATE_TIMEOUT = 60.0


def publish(
    core: Core, event: str, payload: Any, key: str | None, ttl: Any
) -> tuple[str, Promise[None], int]:
    """Record an event; the promise completes once it is durable (then the runs are told).

    The runs its ``on_event`` triggers start (``_event_runs``) are part of it: planned
    before anything is written, and durable before the promise completes.

    Returns:
        The event id, the promise, and how many runs it reached: the waiting steps it was
        delivered to, and the runs its triggers started (or had started already).
    """
    problem = K.part_problem(event, "event", K.MAX_NAME)
    if problem is None and key is not None:
        problem = K.part_problem(key, "key", K.MAX_USER_KEY)
    if problem is not None:
        raise ClientError(problem)
    seconds = core.config.event_ttl
    if ttl is not None:
        try:
            seconds = parse_duration(ttl, "ttl")
        except DefinitionError as exc:
            raise ClientError("; ".join(exc.problems)) from None
    data = encode_value(payload, "payload")
    planned = _event_runs.plan(core, event, payload, key)
    done: Promise[None] = Promise()
    holder: dict[str, Any] = {}

    def delivered() -> None:
        for run_id, path in holder["targets"]:
            try:
                core.route(run_id).tell(EventDelivered(run_id, path, holder["eid"]))
            except pykka.ActorDeadError:
                pass  # stopping: the inbox entry is durable; the run takes it on resume
        done.set_result(None)

    def submit(ops: list[Op]) -> None:
        assert core.writer is not None
        core.writer.tell(Write(ops, then=(delivered,), on_error=done.set_exception))

    eid, targets = core.events.publish(event, data, key, seconds, submit)
    holder["eid"], holder["targets"] = eid, targets
    if not planned:
        return eid, done, len(targets)
    runs = _event_runs.start(core, event, planned, eid)
    return eid, _all_done([done, *runs]), len(targets) + len(runs)


def _all_done(promises: list[Promise[None]]) -> Promise[None]:
    """Completes once every promise has; with the first error, if one failed."""
    countdown = Countdown(len(promises))

    def one(fut: Promise[None]) -> None:
        exc = fut.exception()
        if exc is not None:
            countdown.set_exception(exc)
        else:
            countdown.set_result(None)

    for p in promises:
        p.add_done_callback(one)
    return countdown.promise


def resume(core: Core, token: Any, payload: Any) -> Promise[bool]:
    """Resume the approval ``token`` with ``payload``; the promise completes once durable.

    Raises:
        ApprovalNotFound, ApprovalAlreadyResolved, ApprovalExpired: see the error tree.
    """
    if K.part_problem(token, "token", K.MAX_NAME) is not None:
        raise ApprovalNotFound("token: expected the approval token string")
    found = find_approval(core.store, token)
    if found is None:
        raise ApprovalNotFound("no approval has this token")
    rec = found[1]
    status = rec.get("status")
    if status == "expired" or (
        status == "waiting"
        and rec.get("expires_at") is not None
        and rec["expires_at"] <= core.clock.now()
    ):
        raise ApprovalExpired(
            f"approval {rec['step']!r} of run {rec['run_id']} expired at {rec['expires_at']}"
        )
    if status != "waiting":
        raise ApprovalAlreadyResolved(
            f"approval {rec['step']!r} of run {rec['run_id']} was already {status}"
        )
    data = encode_value(payload, "payload")
    reply: Promise[bool] = Promise()
    core.route(rec["run_id"]).tell(ResumeApproval(rec["run_id"], rec["step"], token, data, reply))
    return reply


def list_approvals(store: Store, status: str | None, run_id: str | None) -> list[dict[str, Any]]:
    """Approvals in the store, oldest first, filtered by status and run.

    Each is a dict: token, run_id, workflow, step, status, created_at, expires_at,
    description, metadata (and resolved_at once resolved; payload, the short rendering of
    what it was resumed with, once resumed).
    """
    if status is not None and status not in _APPROVAL_STATUSES:
        raise ClientError(
            f"status: expected one of {', '.join(_APPROVAL_STATUSES)} or None, got {status!r}"
        )
    out = []
    for key, raw in store.scan(K.APPROVALS):
        rec = load_record(raw, "approval")
        if status is not None and rec.get("status") != status:
            continue
        if run_id is not None and rec.get("run_id") != run_id:
            continue
        # The token is in the record; before tokens were hashed, it was the key.
        out.append({"token": rec.pop("token", None) or key.decode(), **rec})
    out.sort(key=lambda r: r.get("created_at") or 0)
    return out


def state_call(core: Core, op: str, scope: str, args: tuple[Any, ...]) -> Any:
    """A blocking state call from a client thread (or engine-side user code)."""
    fut: Promise[Any] = Promise()

    def done(ok: bool, value: Any) -> None:
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value if isinstance(value, BaseException) else StoreError(value))

    core.state.call(op, scope, args, done)
    try:
        return fut.result(_STATE_TIMEOUT)
    except TimeoutError:
        raise StoreError(f"state {op!r} was not durable within {_STATE_TIMEOUT:g}s") from None


class EngineHost:
    """Answers ``ctx.state`` for code running in the engine (predicates, selectors, on_pause)."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def request(self, op: str, arg: Any) -> Any:
        if op == "state":
            state_op, scope, args = arg
            return state_call(self._core, state_op, scope, tuple(args))
        raise ClientError(f"{op} is only available inside steps (in worker processes)")
