"""Carrying out a code workflow's commands: steps, maps, sleeps, waits and children.

Each live command gets a :class:`State` (and, for what shows in ``inspect``, a step record).
Its outcome becomes a *resolution*, recorded in the history and fed to the function by
``CodeSupervisor.wake``. After a reload, :func:`resume` takes up each command still pending
from its records: a step recorded as running is dispatched again as a new attempt (as the
same attempt if the last stop recorded that it never started:
runtime/persistence/_unstarted.py), timers are armed again, events are looked for in the
inbox, children are looked up.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus, StepStatus
from actorflow.code._driver import Command
from actorflow.code._history import pack_value
from actorflow.definition._options import NO_RETRY, Retry
from actorflow.definition._spec import FunctionRef, function_ref
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    AttemptSucceeded,
    ChildFinished,
    ErrorInfo,
    EventDelivered,
    TaskSpec,
)
from actorflow.runtime.supervision._depth import refuse_child
from actorflow.runtime.supervision._nodes import encode_list, error_info
from actorflow.runtime.supervision._steps import (
    Leaf,
    attempt_record,
    attempt_summary,
    attempt_timeout,
    child_failure,
    circuit_open,
    error_record,
    too_interrupted,
)
from actorflow.store import _keys as K
from actorflow.store._codec import decode_value, encode_value
from actorflow.store._records import dump_record, inline_output, load_record, output_of

if TYPE_CHECKING:
    from actorflow.runtime.supervision._code import CodeSupervisor

__all__ = [
    "State",
    "drop",
    "finish_wait",
    "on_child_finished",
    "on_event",
    "on_failed",
    "on_succeeded",
    "on_timer",
    "pack",
    "resume",
    "start",
]

_KIND = {
    "step": "step",
    "map": "map",
    "sleep": "sleep",
    "signal": "signal",
    "event": "wait_for_event",
    "child": "subflow",
}
_WAIT_TIMEOUT = ("actorflow.errors.WaitTimeout", "actorflow.errors.RunError")
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


def pack(sup: CodeSupervisor, encoded: bytes, ref: str) -> list[Any]:
    """A value's two items in a resolution (stored under ``ref`` unless small JSON)."""
    return pack_value(encoded, ref, sup.fx.ops, sup.run_id)


def _ref(fn: Callable[..., Any]) -> FunctionRef:
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


def _now(sup: CodeSupervisor) -> float:
    return float(sup.core.clock.now())


# -- starting live commands ---------------------------------------------------------------------


def start(sup: CodeSupervisor, cmd: Command) -> None:
    """Carry out a command the function issued in an activation that completed."""
    if cmd.kind == "patch":
        return
    leaf = Leaf(sup.run_id, 0, cmd.seq, cmd.path, _KIND[cmd.kind])
    st = State(cmd, leaf)
    sup.states[cmd.seq] = st
    kind = cmd.kind
    if kind == "step":
        if _prepare_step(sup, st):
            _dispatch(sup, st, leaf)
    elif kind == "map":
        _start_map(sup, st)
    elif kind == "sleep":
        _begin_wait(sup, leaf)
        leaf.wake_at = _now(sup) + cmd.opts["seconds"]
        sup.fx.ops.append(leaf.put())
        sup._timer(leaf.wake_at, "sleep:" + leaf.path)
    elif kind == "signal":
        _begin_wait(sup, leaf)
        assert cmd.fut is not None
        if cmd.fut.done():  # a signal that had arrived before: taken at once
            finish_wait(sup, st, "signal (arrived before the wait)")
            return
        _arm_wait_timer(sup, st)
        sup.fx.ops.append(leaf.put())
    elif kind == "event":
        _begin_wait(sup, leaf)
        _wait_event(sup, st)
    elif kind == "child":
        _start_child(sup, st)


def _prepare_step(sup: CodeSupervisor, st: State) -> bool:
    opts = st.cmd.opts
    st.retry = opts.get("retry") or sup.spec.retry or NO_RETRY
    try:
        st.fn = _ref(opts["fn"])
        st.args = encode_value(list(opts["args"]), f"arguments of step {st.cmd.name!r}")
    except Exception as exc:
        _fail_command(sup, st, error_info(exc), "its arguments or function cannot be sent")
        return False
    return True


def _dispatch(sup: CodeSupervisor, st: State, leaf: Leaf, args: bytes | None = None) -> None:
    """Record a new attempt of a step (or map item) and queue its task."""
    now = _now(sup)
    leaf.attempt += 1
    leaf.status = StepStatus.RUNNING
    leaf.dispatched_at = now
    if leaf.scheduled_at is None:
        leaf.scheduled_at = now
    leaf.next_retry_at = None
    sup.leaves[leaf.path] = leaf
    sup.fx.ops.append(leaf.put())
    opts = st.cmd.opts
    assert st.fn is not None
    breaker = opts.get("breaker")
    if breaker is not None:
        sup.core.breakers[id(breaker)] = breaker
        breaker.bind(sup.core.clock.now)
        if not breaker.allow():
            # Open circuit: this attempt fails now, without running, and is retried by policy.
            on_failed(sup, circuit_open(sup.run_id, leaf.path, leaf.attempt, breaker, now))
            return
    sup.fx.tasks.append(
        TaskSpec(
            sup.run_id,
            leaf.path,
            leaf.attempt,
            sup.workflow_id,
            st.fn,
            b"Jnull",
            None,
            attempt_timeout(opts.get("timeout"), st.retry, leaf, now),
            st.args if args is None else args,
            None,
            4,
            None,
            None,
            opts.get("heartbeat_timeout"),
            leaf.details,
        )
    )


def _start_map(sup: CodeSupervisor, st: State) -> None:
    cmd = st.cmd
    opts = cmd.opts
    st.retry = opts.get("retry") or sup.spec.retry or NO_RETRY
    try:
        st.fn = _ref(opts["fn"])
        st.items = [
            encode_value([item], f"item {i} of map {cmd.name!r}")
            for i, item in enumerate(opts["items"])
        ]
    except Exception as exc:
        _fail_command(sup, st, error_info(exc), "its items or function cannot be sent")
        return
    st.leaf.status = StepStatus.RUNNING
    st.leaf.dispatched_at = _now(sup)
    _map_progress(sup, st)
    _fill_map(sup, st)


def _fill_map(sup: CodeSupervisor, st: State) -> None:
    """Dispatch items up to the map's concurrency; resolve it once every item is done."""
    total = len(st.items)
    limit = st.cmd.opts.get("concurrency") or total
    while st.next < total and st.inflight < limit:
        i = st.next
        st.next += 1
        path = _item_path(st, i)
        if i in st.results or path in sup.leaves:
            continue  # done, or in flight already (taken up after a reload)
        leaf = Leaf(sup.run_id, 0, st.cmd.seq, path, "step")
        st.inflight += 1
        _dispatch(sup, st, leaf, st.items[i])
    if len(st.results) == total:
        output = encode_list([st.results[i] for i in range(total)])
        leaf = st.leaf
        leaf.status = StepStatus.SUCCEEDED
        leaf.ended_at = _now(sup)
        _resolve_ok(sup, st, output)


def _item_path(st: State, index: int) -> str:
    return f"{st.cmd.path}[{index}]"


def _map_progress(sup: CodeSupervisor, st: State) -> None:
    """The map's own record: kind, status and item counts (for inspect)."""
    leaf = st.leaf
    total = len(st.items)
    done = len(st.results)
    rec = {
        "name": leaf.path,
        "path": leaf.path,
        "node": leaf.node,
        "kind": "map",
        "status": leaf.status,
        "dispatched_at": leaf.dispatched_at,
        "ended_at": leaf.ended_at,
        "items": {
            "total": total,
            "succeeded": done,
            "failed": 0,
            "cancelled": 0,
            "pending": total - done,
        },
        "error": leaf.error,
    }
    if leaf.inline is not None:
        rec["output"] = leaf.inline
    sup.fx.ops.append((K.STEPS, leaf.key, dump_record(rec)))


def _begin_wait(sup: CodeSupervisor, leaf: Leaf) -> None:
    now = _now(sup)
    leaf.status = StepStatus.RUNNING
    leaf.attempt = 1
    leaf.dispatched_at = now
    leaf.started_at = now


def _arm_wait_timer(sup: CodeSupervisor, st: State) -> None:
    timeout = st.cmd.opts.get("timeout")
    if timeout is not None and st.leaf.wake_at is None:
        st.leaf.wake_at = (st.leaf.dispatched_at or _now(sup)) + timeout
        sup._timer(st.leaf.wake_at, "wait:" + st.leaf.path)


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
        _fail_command(sup, st, err, "")
        return
    args = list(cmd.opts["args"])
    try:
        if getattr(target, "code", False):
            payload = encode_value(args, f"arguments of child {cmd.name!r}")
        else:
            payload = encode_value(args[0] if args else None, f"payload of child {cmd.name!r}")
    except Exception as exc:
        _fail_command(sup, st, error_info(exc), "")
        return
    refused = refuse_child(sup, leaf.path, workflow)
    if refused is not None:  # raised at the function's `await ctx.child`; never retried
        _fail_command(sup, st, refused, "")
        return
    now = _now(sup)
    leaf.status = StepStatus.RUNNING
    leaf.attempt = 1
    leaf.dispatched_at = now
    key = f"{sup.run_id}/{leaf.path}"  # the child's idempotency key: one child, ever
    leaf.child = sup.core.child_run_id(workflow, key)
    sup.fx.ops.append(leaf.put())
    parent = (sup.run_id, leaf.path)
    sup.fx.children.append(("start", leaf.child, workflow, payload, key, parent, sup.depth + 1))


# -- outcomes -----------------------------------------------------------------------------------


def _resolve_ok(sup: CodeSupervisor, st: State, output: bytes, stored: bool = False) -> None:
    """The command succeeded with ``output``: record it and wake the function."""
    leaf = st.leaf
    if st.cmd.kind == "map":
        leaf.inline = inline_output(output)
        if leaf.inline is None:
            sup.fx.ops.append((K.VALUES, leaf.key, output))
        _map_progress(sup, st)
        stored = True
    value = decode_value(output, f"output of {st.cmd.kind} {st.cmd.name!r}")
    ops = None if stored else sup.fx.ops
    packed = ["ok", st.cmd.seq, *pack_value(output, leaf.path, ops, sup.run_id)]
    sup.states.pop(st.cmd.seq, None)
    sup.wake(packed, ("ok", st.cmd.seq, value))


def _resolve_err(sup: CodeSupervisor, st: State, record: dict[str, Any]) -> None:
    sup.states.pop(st.cmd.seq, None)
    sup.wake(["err", st.cmd.seq, record], ("err", st.cmd.seq, sup._exception(record)))


def _fail_command(
    sup: CodeSupervisor, st: State, err: ErrorInfo, note: str, record_attempt: bool = True
) -> None:
    """A command that cannot be carried out fails (the function sees StepFailed).

    ``record_attempt``: note a failed attempt (not when the last one is already recorded).
    """
    leaf = st.leaf
    now = _now(sup)
    leaf.status = StepStatus.FAILED
    leaf.attempt = max(1, leaf.attempt)
    leaf.ended_at = now
    leaf.failures += 1
    leaf.error = error_record(err, leaf.path, leaf.attempt)
    if record_attempt:
        summary = attempt_summary(err) + (f" ({note})" if note else "")
        leaf.attempts.append(attempt_record(leaf.attempt, "failed", err.kind, now, now, summary))
    sup.fx.ops.append(leaf.put())
    record = leaf.error
    sup.states.pop(st.cmd.seq, None)
    sup.queue_resolution(["err", st.cmd.seq, record], ("err", st.cmd.seq, sup._exception(record)))


def _reported(sup: CodeSupervisor, path: str, attempt: int) -> tuple[State, Leaf] | None:
    if sup.finished or sup.status != RunStatus.RUNNING:
        return None
    leaf = sup.leaves.get(path)
    if leaf is None or leaf.status != StepStatus.RUNNING or leaf.attempt != attempt:
        return None  # a late report for an attempt that already ended: never record twice
    st = sup.states.get(leaf.node)
    if st is None:
        return None
    return st, leaf


def on_succeeded(sup: CodeSupervisor, msg: AttemptSucceeded) -> None:
    found = _reported(sup, msg.step, msg.attempt)
    if found is None:
        return
    st, leaf = found
    breaker = st.cmd.opts.get("breaker")
    if breaker is not None:
        breaker.succeeded()
    del sup.leaves[leaf.path]
    leaf.status = StepStatus.SUCCEEDED
    leaf.started_at = msg.started_at
    leaf.ended_at = msg.ended_at
    leaf.error = None
    leaf.attempts.append(
        attempt_record(msg.attempt, "succeeded", None, msg.started_at, msg.ended_at, pid=msg.pid)
    )
    output = msg.output
    leaf.inline = inline_output(output)
    if leaf.inline is None:
        sup.fx.ops.append((K.VALUES, leaf.key, output))
    sup.fx.ops.append(leaf.put())
    if st.cmd.kind == "map":
        index = int(leaf.path[len(st.cmd.path) + 1 : -1])
        st.results[index] = output
        st.inflight -= 1
        _map_progress(sup, st)
        _fill_map(sup, st)
        return
    _resolve_ok(sup, st, output, stored=True)


def on_failed(sup: CodeSupervisor, msg: AttemptFailed) -> None:
    found = _reported(sup, msg.step, msg.attempt)
    if found is None:
        return
    st, leaf = found
    now = _now(sup)
    delay = sup.attempt_failed(leaf, msg, st.retry, st.cmd.opts.get("breaker"))
    if delay is not None:
        if delay <= 0:
            _dispatch(sup, st, leaf, _args_of(st, leaf))
        else:
            sup.retry_later(leaf, delay)
        return
    leaf.status = StepStatus.FAILED
    sup.fx.ops.append(leaf.put())
    del sup.leaves[leaf.path]
    record = leaf.error
    assert record is not None  # attempt_failed recorded it
    if st.cmd.kind == "map":
        _stop_map(sup, st, f"item {leaf.path!r} failed")
        st.leaf.status = StepStatus.FAILED
        st.leaf.ended_at = now
        st.leaf.error = record
        _map_progress(sup, st)
    _resolve_err(sup, st, record)


def _args_of(st: State, leaf: Leaf) -> bytes | None:
    if st.cmd.kind != "map":
        return None
    return st.items[int(leaf.path[len(st.cmd.path) + 1 : -1])]


def _stop_map(sup: CodeSupervisor, st: State, why: str) -> None:
    """Stop a map's other items (one failed for good, or the run ended)."""
    prefix = st.cmd.path + "["
    for path, leaf in list(sup.leaves.items()):
        if not path.startswith(prefix) or leaf.node != st.cmd.seq:
            continue
        _cancel_leaf(sup, leaf, why)
        del sup.leaves[path]


def _cancel_leaf(sup: CodeSupervisor, leaf: Leaf, why: str) -> None:
    now = _now(sup)
    if leaf.status == StepStatus.RUNNING and leaf.kind in ("step", "map"):
        sup.fx.stop.append((sup.run_id, leaf.path))
    if leaf.status == StepStatus.RETRYING and leaf.next_retry_at is not None:
        sup._drop_timer(leaf.next_retry_at, "retry:" + leaf.path)
    leaf.attempts.append(
        attempt_record(leaf.attempt, "cancelled", "cancelled", leaf.started_at, now, why)
    )
    leaf.status = StepStatus.CANCELLED
    leaf.next_retry_at = None
    sup.fx.ops.append(leaf.put())


def on_timer(sup: CodeSupervisor, name: str, due: float) -> None:
    if sup.status != RunStatus.RUNNING:
        return
    kind, _, path = name.partition(":")
    if kind == "retry":
        leaf = sup.leaves.get(path)
        if leaf is None or leaf.status != StepStatus.RETRYING or leaf.next_retry_at is None:
            return
        if abs(leaf.next_retry_at - due) > 1e-3:
            return  # a stale timer from an earlier retry
        st = sup.states.get(leaf.node)
        if st is None:
            return
        sup._drop_timer(due, name)
        _dispatch(sup, st, leaf, _args_of(st, leaf))
        return
    st = _by_path(sup, path)
    if st is None or st.leaf.wake_at is None or abs(st.leaf.wake_at - due) > 1e-3:
        return
    sup._drop_timer(due, name)
    if kind == "sleep" and st.cmd.kind == "sleep":
        _succeed_wait(sup, st, None)
        _resolve_ok(sup, st, b"Jnull")
    elif kind == "wait" and st.cmd.kind in ("signal", "event"):
        leaf = st.leaf
        if st.cmd.kind == "event":
            sup.fx.ops.extend(
                sup.core.events.unregister(st.cmd.opts["event"], sup.run_id, leaf.path)
            )
        now = _now(sup)
        what = "signal" if st.cmd.kind == "signal" else f"event {st.cmd.opts['event']!r}"
        message = f"no {what} within {st.cmd.opts.get('timeout', 0):g}s"
        leaf.ended_at = now
        leaf.wait = None
        if "default" in st.cmd.opts:
            leaf.status = StepStatus.SUCCEEDED
            leaf.attempts.append(
                attempt_record(1, "succeeded", None, leaf.dispatched_at, now, f"{message}: default")
            )
        else:
            leaf.status = StepStatus.FAILED
            leaf.failures = 1
            err = ErrorInfo("error", _WAIT_TIMEOUT[0], _WAIT_TIMEOUT, message)
            leaf.error = error_record(err, leaf.path, 1)
            leaf.attempts.append(
                attempt_record(1, "failed", "error", leaf.dispatched_at, now, message)
            )
        sup.fx.ops.append(leaf.put())
        sup.states.pop(st.cmd.seq, None)
        sup.wake(["tmo", st.cmd.seq], ("tmo", st.cmd.seq))


def _by_path(sup: CodeSupervisor, path: str) -> State | None:
    for st in sup.states.values():
        if st.leaf.path == path:
            return st
    return None


def _succeed_wait(sup: CodeSupervisor, st: State, how: str | None) -> None:
    leaf = st.leaf
    now = _now(sup)
    if leaf.wake_at is not None and st.cmd.kind != "sleep":
        sup._drop_timer(leaf.wake_at, "wait:" + leaf.path)
    leaf.status = StepStatus.SUCCEEDED
    leaf.ended_at = now
    leaf.wait = None
    leaf.attempts.append(attempt_record(1, "succeeded", how, leaf.dispatched_at, now))
    sup.fx.ops.append(leaf.put())


def finish_wait(sup: CodeSupervisor, st: State, how: str) -> None:
    """A signal wait was satisfied inside the function (no resolution of its own)."""
    _succeed_wait(sup, st, how)
    sup.states.pop(st.cmd.seq, None)


def on_event(sup: CodeSupervisor, msg: EventDelivered) -> None:
    if sup.status != RunStatus.RUNNING:
        return
    st = _by_path(sup, msg.path)
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
    _resolve_ok(sup, st, payload)


def on_child_finished(sup: CodeSupervisor, msg: ChildFinished) -> None:
    if sup.status != RunStatus.RUNNING:
        return
    st = _by_path(sup, msg.path)
    if st is None or st.cmd.kind != "child":
        return
    _child_outcome(sup, st)


def _child_outcome(sup: CodeSupervisor, st: State) -> bool:
    """Apply the child's final state (following continue-as-new); False while it runs."""
    from actorflow.views import final_run, run_outcome

    leaf = st.leaf
    child = final_run(sup.core.store, leaf.child or "")
    if child is None:
        return False
    child_id, rec = child
    status = RunStatus(rec["status"])
    if not status.terminal:
        return False
    now = _now(sup)
    leaf.ended_at = now
    if status == RunStatus.COMPLETED:
        _, result, _ = run_outcome(sup.core.store, child_id)
        leaf.status = StepStatus.SUCCEEDED
        leaf.attempts.append(attempt_record(1, "succeeded", None, leaf.dispatched_at, now))
        output = encode_value(result, f"result of child run {child_id}")
        leaf.inline = inline_output(output)
        if leaf.inline is None:
            sup.fx.ops.append((K.VALUES, leaf.key, output))
        sup.fx.ops.append(leaf.put())
        _resolve_ok(sup, st, output, stored=True)
        return True
    info = child_failure(child_id, rec)
    exc = (rec.get("error") or {}).get("exc")
    leaf.status = StepStatus.FAILED
    leaf.failures = 1
    leaf.error = error_record(info, leaf.path, 1)
    if exc and rec.get("status") != "cancelled":
        leaf.error["exc"] = exc  # the child's exception, for the parent's cause
    leaf.attempts.append(
        attempt_record(1, "failed", "child", leaf.dispatched_at, now, attempt_summary(info))
    )
    sup.fx.ops.append(leaf.put())
    _resolve_err(sup, st, leaf.error)
    return True


# -- after a reload -----------------------------------------------------------------------------


def resume(sup: CodeSupervisor, cmd: Command) -> None:
    """Take up a command still pending after a replay, from its records."""
    if cmd.kind == "patch":
        return
    raw = sup.core.store.get(K.STEPS, K.step_key(sup.run_id, cmd.path))
    if raw is None:
        start(sup, cmd)  # issued, but its start was not recorded (a signal taken at once)
        return
    rec = load_record(raw, f"step {cmd.path!r} of run {sup.run_id}")
    leaf = Leaf.from_record(sup.run_id, rec, 0, cmd.seq) if cmd.kind != "map" else None
    st = State(cmd, leaf or Leaf(sup.run_id, 0, cmd.seq, cmd.path, "map"))
    sup.states[cmd.seq] = st
    kind = cmd.kind
    if kind == "step":
        assert leaf is not None
        if not _prepare_step(sup, st):
            return
        _resume_leaf(sup, st, leaf, None)
    elif kind == "map":
        _resume_map(sup, st, rec)
    elif kind == "sleep":
        assert leaf is not None
        if leaf.wake_at is None:
            leaf.wake_at = _now(sup) + cmd.opts["seconds"]
            sup._timer(leaf.wake_at, "sleep:" + leaf.path)
        else:
            sup.fx.timers.append((leaf.wake_at, sup.run_id, "sleep:" + leaf.path))
    elif kind in ("signal", "event"):
        assert leaf is not None
        if leaf.wake_at is not None:
            sup.fx.timers.append((leaf.wake_at, sup.run_id, "wait:" + leaf.path))
        if kind == "event":
            _wait_event(sup, st)
    elif kind == "child":
        assert leaf is not None
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


def _resume_leaf(sup: CodeSupervisor, st: State, leaf: Leaf, args: bytes | None) -> None:
    now = _now(sup)
    if leaf.status == StepStatus.SUCCEEDED:
        output = output_of(load_record(leaf.record(), "step"), sup.core.store, sup.run_id)
        _resolve_ok(sup, st, output or b"Jnull", stored=True)
        return
    if leaf.status == StepStatus.FAILED and leaf.error is not None:
        _resolve_err(sup, st, leaf.error)
        return
    if leaf.status == StepStatus.RETRYING and leaf.next_retry_at is not None:
        sup.leaves[leaf.path] = leaf
        sup.fx.timers.append((leaf.next_retry_at, sup.run_id, "retry:" + leaf.path))
        return
    if leaf.status == StepStatus.RUNNING and sup.unstarted.get(leaf.path) == leaf.attempt:
        # The last stop recorded that this attempt never started: it is no attempt. It goes
        # out again under the same number, and no interruption is counted.
        leaf.attempt -= 1
    elif leaf.status == StepStatus.RUNNING:
        leaf.attempts.append(
            attempt_record(
                leaf.attempt, "interrupted", "interrupted", leaf.started_at, now,
                "the engine stopped (or the run panicked) while this attempt was in flight",
            )
        )  # fmt: skip
        # (a ctx.map item is run again whatever its interruptions: the map's window owns it)
        limit = sup.core.config.max_interruptions if st.cmd.kind == "step" else 0
        poisoned = too_interrupted(leaf.attempts, limit)
        if poisoned is not None:
            sup.leaves.pop(leaf.path, None)
            _fail_command(sup, st, poisoned, "", record_attempt=False)
            return
    _dispatch(sup, st, leaf, args)


def _resume_map(sup: CodeSupervisor, st: State, rec: dict[str, Any]) -> None:
    cmd = st.cmd
    st.retry = cmd.opts.get("retry") or sup.spec.retry or NO_RETRY
    st.fn = _ref(cmd.opts["fn"])
    st.items = [encode_value([item], "map item") for item in cmd.opts["items"]]
    st.leaf.status = StepStatus.RUNNING
    st.leaf.dispatched_at = rec.get("dispatched_at")
    store = sup.core.store
    for i in range(len(st.items)):
        raw = store.get(K.STEPS, K.step_key(sup.run_id, _item_path(st, i)))
        if raw is None:
            continue
        irec = load_record(raw, "map item")
        leaf = Leaf.from_record(sup.run_id, irec, 0, cmd.seq)
        if leaf.status == StepStatus.SUCCEEDED:
            st.results[i] = output_of(irec, store, sup.run_id) or b"Jnull"
        elif leaf.status == StepStatus.FAILED and leaf.error is not None:
            _stop_map(sup, st, f"item {leaf.path!r} failed")
            _resolve_err(sup, st, leaf.error)
            return
        else:
            sup.leaves[leaf.path] = leaf
    # Items in flight or retrying run again (as new attempts); the rest as the window allows.
    for path, leaf in list(sup.leaves.items()):
        if leaf.node != cmd.seq or not path.startswith(cmd.path + "["):
            continue
        index = int(path[len(cmd.path) + 1 : -1])
        if leaf.status == StepStatus.RETRYING and leaf.next_retry_at is not None:
            sup.fx.timers.append((leaf.next_retry_at, sup.run_id, "retry:" + leaf.path))
        else:
            _resume_leaf(sup, st, leaf, st.items[index])
        st.inflight += 1
    st.next = 0
    _fill_map(sup, st)


# -- ending -------------------------------------------------------------------------------------


def drop(sup: CodeSupervisor, st: State, cancel_children: bool = True) -> None:
    """The run ended or panicked while this command was pending: undo its waits."""
    leaf = st.leaf
    cmd = st.cmd
    why = sup.cancel_reason or "its run ended first"
    if cmd.kind in ("step", "map"):
        if cmd.kind == "map":
            _stop_map(sup, st, why)
            return
        if sup.leaves.get(leaf.path) is leaf and sup.status != RunStatus.PANICKED:
            _cancel_leaf(sup, leaf, why)
        return
    if leaf.wake_at is not None:
        name = ("sleep:" if cmd.kind == "sleep" else "wait:") + leaf.path
        sup._drop_timer(leaf.wake_at, name)
    if cmd.kind == "event":
        sup.fx.ops.extend(sup.core.events.unregister(cmd.opts["event"], sup.run_id, leaf.path))
    if cmd.kind == "child" and leaf.child is not None and cancel_children:
        sup.fx.children.append(("cancel", leaf.child))
    if sup.status != RunStatus.PANICKED:
        leaf.status = StepStatus.CANCELLED
        leaf.wait = None
        sup.fx.ops.append(leaf.put())
