"""Code-workflow steps and maps: dispatched to workers, retried, resolved with their output.

``ctx.step(name, fn, *args)`` is one task; ``ctx.map(name, fn, items)`` is one task per item,
at most ``concurrency`` at a time, resolved once every item succeeded (or failed at the
first item that fails for good, the others stopped). Reports from workers arrive as
``AttemptSucceeded`` / ``AttemptFailed``; a failed attempt goes through the run machine's
retry decision (``RunMachine.attempt_failed``). After a reload a step recorded as running
is dispatched again as a new attempt (the same attempt if the last stop recorded that it
never started), unless it was interrupted too often.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus, StepStatus
from actorflow.definition._cache import cache_digest
from actorflow.definition._options import NO_RETRY
from actorflow.runtime.kernel._messages import AttemptFailed, AttemptSucceeded, ErrorInfo, TaskSpec
from actorflow.runtime.supervision import _step_cache
from actorflow.runtime.supervision._code_state import (
    CommandKind,
    State,
    fail_command,
    no_timer,
    now,
    ref,
    resolve_err,
    resolve_ok,
)
from actorflow.runtime.supervision._nodes import encode_list, error_info
from actorflow.runtime.supervision._steps import (
    Leaf,
    attempt_record,
    attempt_timeout,
    circuit_open,
    too_interrupted,
)
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._records import dump_record, inline_output, input_of, load_step, output_of

if TYPE_CHECKING:
    from actorflow.runtime.supervision._code import CodeSupervisor

from actorflow.workers._protocol import CALL_ARGS

__all__ = ["MAP", "STEP", "on_failed", "on_retry_timer", "on_succeeded"]


# -- steps ----------------------------------------------------------------------------------


def _prepare_step(sup: CodeSupervisor, st: State) -> bool:
    opts = st.cmd.opts
    st.retry = opts.get("retry") or sup.spec.retry or NO_RETRY
    try:
        st.fn = ref(opts["fn"])
        st.args = encode_value(list(opts["args"]), f"arguments of step {st.cmd.name!r}")
    except Exception as exc:
        fail_command(sup, st, error_info(exc), "its arguments or function cannot be sent")
        return False
    return True


def _dispatch(sup: CodeSupervisor, st: State, leaf: Leaf, args: bytes | None = None) -> None:
    """Record a new attempt of a step (or map item) and queue its task."""
    at = now(sup)
    leaf.attempt += 1
    leaf.status = StepStatus.RUNNING
    leaf.dispatched_at = at
    if leaf.scheduled_at is None:
        leaf.scheduled_at = at
    leaf.next_retry_at = None
    sup.leaves[leaf.path] = leaf
    sent = st.args if args is None else args
    leaf.input = None if sent is None else input_of(sent)  # (kept in this record)
    sup.fx.ops.append(leaf.put())
    opts = st.cmd.opts
    assert st.fn is not None
    breaker = opts.get("breaker")
    if breaker is not None:
        sup.core.breakers[id(breaker)] = breaker
        breaker.bind(sup.core.clock.now)
        if not breaker.allow():
            # Open circuit: this attempt fails now, without running, and is retried by policy.
            on_failed(sup, circuit_open(sup.run_id, leaf.path, leaf.attempt, breaker, at))
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
            attempt_timeout(opts.get("timeout"), st.retry, leaf, at),
            sent,
            None,
            CALL_ARGS,
            None,
            None,
            opts.get("heartbeat_timeout"),
            leaf.details,
            opts.get("queue"),
            sup.priority,
        )
    )


def _start_step(sup: CodeSupervisor, st: State) -> None:
    mocks = sup.mocks
    if mocks is not None and st.cmd.path in mocks:
        _answered(sup, st, st.leaf, encode_value(mocks[st.cmd.path], "mock"), "mocked")
        return
    where = _cache_entry(sup, st)
    if isinstance(where, ErrorInfo):
        fail_command(sup, st, where, "its cache key failed")
        return
    if where is not None:
        hit = _step_cache.read(sup.core, *where)
        if hit is not None:
            _answered(sup, st, st.leaf, hit, "cached")
            return
    if _prepare_step(sup, st):
        _dispatch(sup, st, st.leaf)


def _cache_entry(sup: CodeSupervisor, st: State) -> tuple[str, str] | ErrorInfo | None:
    """(scope, key) of a cached step's entry, the error of its key function, or None."""
    cache = st.cmd.opts.get("cache")
    if cache is None:
        return None
    try:
        digest = cache_digest(cache.key(*st.cmd.opts["args"]))
    except Exception as exc:
        return error_info(exc)
    return f"#cache/{sup.workflow_id}", f"{st.cmd.name}:{digest}"


def _answered(sup: CodeSupervisor, st: State, leaf: Leaf, output: bytes, kind: str) -> None:
    """The step's output is known without running it: it does not run.

    A mock (``engine.retry(..., mock_steps=)``) or its cache's, recorded as one attempt of
    ``kind`` (``mocked``, ``cached``), as a step that ran would be.
    """
    at = now(sup)
    leaf.attempt += 1
    leaf.dispatched_at = leaf.started_at = leaf.ended_at = at
    if leaf.scheduled_at is None:
        leaf.scheduled_at = at
    leaf.status = StepStatus.SUCCEEDED
    leaf.attempts.append(attempt_record(leaf.attempt, "succeeded", kind, at, at))
    leaf.inline = inline_output(output)
    if leaf.inline is None:
        sup.fx.ops.append((K.VALUES, leaf.key, output))
    sup.fx.ops.append(leaf.put())
    resolve_ok(sup, st, output, stored=True)


def _resume_step(sup: CodeSupervisor, st: State, leaf: Leaf | None, rec: dict[str, Any]) -> None:
    assert leaf is not None
    if _prepare_step(sup, st):
        _resume_leaf(sup, st, leaf, None)


def _drop_step(sup: CodeSupervisor, st: State, why: str, cancel_children: bool) -> None:
    leaf = st.leaf
    if sup.leaves.get(leaf.path) is leaf and sup.status != RunStatus.PANICKED:
        _cancel_leaf(sup, leaf, why)


def _resume_leaf(sup: CodeSupervisor, st: State, leaf: Leaf, args: bytes | None) -> None:
    at = now(sup)
    if leaf.status == StepStatus.SUCCEEDED:
        output = output_of(load_step(leaf.record(), leaf.path, "step"), sup.core.store, sup.run_id)
        resolve_ok(sup, st, output or b"Jnull", stored=True)
        return
    if leaf.status == StepStatus.FAILED and leaf.error is not None:
        resolve_err(sup, st, leaf.error)
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
                leaf.attempt, "interrupted", "interrupted", leaf.started_at, at,
                "the engine stopped (or the run panicked) while this attempt was in flight",
            )
        )  # fmt: skip
        # (a ctx.map item is run again whatever its interruptions: the map's window owns it)
        limit = sup.core.config.max_interruptions if st.cmd.kind == "step" else 0
        poisoned = too_interrupted(leaf.attempts, limit)
        if poisoned is not None:
            sup.leaves.pop(leaf.path, None)
            fail_command(sup, st, poisoned, "", record_attempt=False)
            return
    _dispatch(sup, st, leaf, args)


# -- maps -----------------------------------------------------------------------------------


def _start_map(sup: CodeSupervisor, st: State) -> None:
    cmd = st.cmd
    opts = cmd.opts
    st.retry = opts.get("retry") or sup.spec.retry or NO_RETRY
    try:
        st.fn = ref(opts["fn"])
        st.items = [
            encode_value([item], f"item {i} of map {cmd.name!r}")
            for i, item in enumerate(opts["items"])
        ]
    except Exception as exc:
        fail_command(sup, st, error_info(exc), "its items or function cannot be sent")
        return
    st.leaf.status = StepStatus.RUNNING
    st.leaf.dispatched_at = now(sup)
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
        leaf.ended_at = now(sup)
        leaf.inline = inline_output(output)
        if leaf.inline is None:
            sup.fx.ops.append((K.VALUES, leaf.key, output))
        _map_progress(sup, st)  # the map's record, with its output: stored
        resolve_ok(sup, st, output, stored=True)


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


def _drop_map(sup: CodeSupervisor, st: State, why: str, cancel_children: bool) -> None:
    _stop_map(sup, st, why)


def _resume_map(sup: CodeSupervisor, st: State, leaf: Leaf | None, rec: dict[str, Any]) -> None:
    cmd = st.cmd
    st.retry = cmd.opts.get("retry") or sup.spec.retry or NO_RETRY
    st.fn = ref(cmd.opts["fn"])
    st.items = [encode_value([item], "map item") for item in cmd.opts["items"]]
    st.leaf.status = StepStatus.RUNNING
    st.leaf.dispatched_at = rec.get("dispatched_at")
    store = sup.core.store
    for i in range(len(st.items)):
        path = _item_path(st, i)
        raw = store.get(K.STEPS, K.step_key(sup.run_id, path))
        if raw is None:
            continue
        irec = load_step(raw, path, "map item")
        item = Leaf.from_record(sup.run_id, irec, 0, cmd.seq)
        if item.status == StepStatus.SUCCEEDED:
            st.results[i] = output_of(irec, store, sup.run_id) or b"Jnull"
        elif item.status == StepStatus.FAILED and item.error is not None:
            _stop_map(sup, st, f"item {item.path!r} failed")
            resolve_err(sup, st, item.error)
            return
        else:
            sup.leaves[item.path] = item
    # Items in flight or retrying run again (as new attempts); the rest as the window allows.
    for path, item in list(sup.leaves.items()):
        if item.node != cmd.seq or not path.startswith(cmd.path + "["):
            continue
        index = int(path[len(cmd.path) + 1 : -1])
        if item.status == StepStatus.RETRYING and item.next_retry_at is not None:
            sup.fx.timers.append((item.next_retry_at, sup.run_id, "retry:" + item.path))
        else:
            _resume_leaf(sup, st, item, st.items[index])
        st.inflight += 1
    st.next = 0
    _fill_map(sup, st)


# -- reports and retries --------------------------------------------------------------------


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
    """A step or map item attempt returned."""
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
    if st.cmd.kind == "step" and st.cmd.opts.get("cache") is not None:
        where = _cache_entry(sup, st)
        if isinstance(where, tuple):  # (it was checked when the step started)
            scope, key = where
            ttl = float(st.cmd.opts["cache"].ttl)
            sup.fx.ops.extend(_step_cache.entry_ops(sup.core, scope, key, ttl, output))
    if st.cmd.kind == "map":
        index = int(leaf.path[len(st.cmd.path) + 1 : -1])
        st.results[index] = output
        st.inflight -= 1
        _map_progress(sup, st)
        _fill_map(sup, st)
        return
    resolve_ok(sup, st, output, stored=True)


def on_failed(sup: CodeSupervisor, msg: AttemptFailed) -> None:
    """A step or map item attempt failed: retry by policy, else fail the command."""
    found = _reported(sup, msg.step, msg.attempt)
    if found is None:
        return
    st, leaf = found
    at = now(sup)
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
        st.leaf.ended_at = at
        st.leaf.error = record
        _map_progress(sup, st)
    resolve_err(sup, st, record)


def on_retry_timer(sup: CodeSupervisor, path: str, name: str, due: float) -> None:
    """A retry timer fired: the step or map item goes out again."""
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


def _cancel_leaf(sup: CodeSupervisor, leaf: Leaf, why: str) -> None:
    at = now(sup)
    if leaf.status == StepStatus.RUNNING and leaf.kind in ("step", "map"):
        sup.fx.stop.append((sup.run_id, leaf.path))
    if leaf.status == StepStatus.RETRYING and leaf.next_retry_at is not None:
        sup._drop_timer(leaf.next_retry_at, "retry:" + leaf.path)
    leaf.attempts.append(
        attempt_record(leaf.attempt, "cancelled", "cancelled", leaf.started_at, at, why)
    )
    leaf.status = StepStatus.CANCELLED
    leaf.next_retry_at = None
    sup.fx.ops.append(leaf.put())


STEP = CommandKind(_start_step, _resume_step, _drop_step, no_timer)
MAP = CommandKind(_start_map, _resume_map, _drop_map, no_timer)
