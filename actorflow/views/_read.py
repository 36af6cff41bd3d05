"""The read side: runs and steps as users see them, built from store records alone.

These functions read the store and never need the user's code (pickled values are shown as a
placeholder, never unpickled) except :func:`run_outcome`, which decodes a run's result for
:meth:`RunHandle.result`. The CLI uses them on a store opened read-only while an engine runs.
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Iterator
from typing import Any

from actorflow._types import RunStatus, StepStatus
from actorflow.errors import (
    ActorflowError,
    ClientError,
    HeartbeatTimeout,
    PoolUnavailable,
    RemoteError,
    RemoteTraceback,
    RunCancelled,
    RunDepthExceeded,
    RunNotFound,
    RunTimeout,
    StepFailed,
    StepTimeout,
    WorkerCrashed,
    WorkflowFailed,
)
from actorflow.store import _keys as K
from actorflow.store._codec import decode_value, describe_value, encode_value, large_ids
from actorflow.store._protocol import Store
from actorflow.store._records import load_record, load_step, output_of, step_output
from actorflow.views._details import (
    AttemptDetails,
    ErrorDetails,
    RunDetails,
    StepDetails,
)
from actorflow.views._items import LoopItems

__all__ = [
    "ancestry",
    "chain_outcome",
    "error_from_record",
    "fanout_progress",
    "final_run",
    "inspect_run",
    "read_run",
    "run_depth",
    "run_outcome",
]


def read_run(store: Store, run_id: str) -> dict[str, Any]:
    """The run record of ``run_id``.

    Raises:
        RunNotFound: no such run.
    """
    if not isinstance(run_id, str) or not run_id:
        raise RunNotFound(str(run_id))
    raw = store.get(K.RUNS, K.run_key(run_id))
    if raw is None:
        raise RunNotFound(run_id)
    return load_record(raw, f"run {run_id}")


def _error(err: dict[str, Any] | None) -> ErrorDetails | None:
    if not err:
        return None
    return ErrorDetails(
        kind=err.get("kind", "error"),
        type=err.get("type", ""),
        message=err.get("message", ""),
        traceback=err.get("traceback") or "",
        step=err.get("step"),
        attempt=err.get("attempt"),
        exitcode=err.get("exitcode"),
        signal=err.get("signal"),
        user_traceback=err.get("user_traceback") or err.get("traceback") or "",
    )


def _run_error(rec: dict[str, Any]) -> ErrorDetails | None:
    """Why a run failed, or why it panicked while it is panicked (kind ``panic``).

    A panic is recorded apart from ``error`` because the run is not over: it restarts by its
    panic policy (or ``engine.restart``), and the restart clears it.
    """
    if rec.get("status") == RunStatus.PANICKED.value and rec.get("panic"):
        return _error(rec["panic"])
    return _error(rec.get("error"))


def _step(rec: dict[str, Any], output: bytes | None) -> StepDetails:
    started, ended = rec.get("started_at"), rec.get("ended_at")
    return StepDetails(
        name=rec["name"],
        kind=rec.get("kind", "step"),
        status=StepStatus(rec["status"]),
        attempt=rec.get("attempt", 0),
        failures=rec.get("failures", 0),
        dispatched_at=rec.get("dispatched_at"),
        started_at=started,
        ended_at=ended,
        duration=(ended - started) if started is not None and ended is not None else None,
        next_retry_at=rec.get("next_retry_at"),
        error=_error(rec.get("error")),
        attempts=tuple(
            AttemptDetails(
                attempt=a.get("attempt", 0),
                status=a.get("status", ""),
                kind=a.get("kind"),
                started_at=a.get("started_at"),
                ended_at=a.get("ended_at"),
                error=a.get("error"),
                pid=a.get("pid"),
            )
            for a in rec.get("attempts", [])
        ),
        output=describe_value(output) if output is not None else None,
        path=rec.get("path", rec["name"]),
        branch=rec.get("branch"),
        winner=rec.get("winner"),
        items=rec.get("items"),
        iterations=rec.get("iterations"),
        child_run_id=rec.get("child_run_id"),
        recovered=bool(rec.get("recovered")),
        input=rec.get("input"),  # (records of releases before inputs have none)
    )


def inspect_run(store: Store, run_id: str) -> RunDetails:
    """Everything recorded about ``run_id``.

    ``steps`` lists the workflow's nodes in definition order (those not started yet as
    pending), each followed by what ran inside it: the iterations and items of loops, in
    order, as paths like ``lines[3]/price``.

    Raises:
        RunNotFound: no such run.
    """
    rec = read_run(store, run_id)
    recorded: dict[str, dict[str, Any]] = {}
    items = LoopItems(store, run_id)
    of_run = K.step_prefix(run_id)
    for key, value in store.scan(K.STEPS, of_run):
        srec = load_step(value, key[len(of_run) :].decode(), f"step of run {run_id}")
        recorded[srec.get("path", srec["name"])] = srec
    # Nodes not yet reached have no record: take them (and the order) from the plan the run
    # started on (recorded under its shape, runtime/supervision/_plans.py), else from the
    # definition.
    order: list[tuple[str, str]] = []
    shape = rec.get("plan")
    raw_def = store.get(K.DEFINITIONS, K.plan_key(rec["workflow"], shape)) if shape else None
    if raw_def is None:
        raw_def = store.get(K.DEFINITIONS, rec["workflow"].encode())
    if raw_def is not None:
        definition = load_record(raw_def, f"definition {rec['workflow']}")
        order = list(_top_level(definition.get("nodes", definition.get("steps", []))))
    position = {name: i for i, (name, _) in enumerate(order)}
    code = rec.get("kind") == "code"  # a code workflow's steps: in the order it issued them
    for path, srec in recorded.items():
        if "/" not in path and path not in position:
            position[path] = srec.get("node", 0) if code else len(position) + srec.get("node", 0)
    steps: list[StepDetails] = []
    # In a completed run, a node never reached was on a branch not taken.
    unreached = "skipped" if rec["status"] == RunStatus.COMPLETED.value else "pending"
    for name, kind in order:
        if name not in recorded:
            steps.append(_step({"name": name, "kind": kind, "status": unreached}, None))
    nested = sorted(recorded.items(), key=lambda kv: _path_key(kv[0], position))
    for _, srec in nested:
        if srec.get("input_item"):
            srec["input"] = items.render(srec["path"])
        steps.append(_step(srec, output_of(srec, store, run_id)))
    steps.sort(key=lambda s: _path_key(s.path or s.name, position))
    status = RunStatus(rec["status"])
    result: str | None = None
    if status == RunStatus.COMPLETED:
        raw = _result_bytes(store, run_id, rec)
        result = describe_value(raw) if raw is not None else "null"
    payload = store.get(K.VALUES, K.payload_key(run_id))
    ended = rec.get("ended_at")
    return RunDetails(
        id=run_id,
        workflow_id=rec["workflow"],
        status=status,
        created_at=rec["created_at"],
        started_at=rec.get("started_at"),
        ended_at=ended,
        duration=(ended - rec["created_at"]) if ended is not None else None,
        idempotency_key=rec.get("idempotency_key"),
        payload=describe_value(payload) if payload is not None else "null",
        result=result,
        error=_run_error(rec),
        cancel_reason=rec.get("cancel_reason"),
        steps=tuple(steps),
        parent_run_id=(rec.get("parent") or [None])[0],
        depth=run_depth(store, rec),
        held=rec.get("held") if status == RunStatus.WAITING_FOR_DEFINITION else None,
        version=None if status == RunStatus.QUEUED else int(rec.get("version") or 1),
        search_attributes=rec.get("search_attributes") or {},
        memo=rec.get("memo"),
    )


def _top_level(nodes: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """The nodes that run in the workflow's own frame, in definition order.

    That is the top-level ones and those in branch/parallel/race arms; loop bodies run per
    item or iteration and appear as paths.
    """
    for node in nodes:
        yield node["name"], node.get("kind", "step")
        for arm in node.get("arms", []):
            yield from _top_level(arm.get("block", []))


def _path_key(path: str, position: dict[str, int]) -> tuple[Any, ...]:
    """Sort key: definition order, then item / iteration index, then order inside."""
    key: list[Any] = []
    for part in path.split("/"):
        name, _, index = part.partition("[")
        key.append(position.get(name, len(position)))
        key.append(name)
        key.append(int(index[:-1]) if index.endswith("]") and index[:-1].isdigit() else -1)
    return tuple(key)


def _result_bytes(store: Store, run_id: str, rec: dict[str, Any]) -> bytes | None:
    if "result" in rec:
        value = rec["result"]
        return None if value is None else encode_value(value)
    ref = rec.get("result_ref")
    if ref:
        return store.get(K.VALUES, K.step_key(run_id, ref))
    step = rec.get("result_step")
    return step_output(store, run_id, step) if step else None


def blob_keep(store: Store, run_id: str) -> frozenset[str] | None:
    """Which of an ended run's blobs to keep.

    Its result's if it completed, none if it was cancelled or continued as new; None (keep
    all) if it is live, failed or unknown.
    """
    raw = store.get(K.RUNS, K.run_key(run_id))
    if raw is None:
        return None
    rec = load_record(raw, f"run {run_id}")
    status = rec.get("status")
    if status in (RunStatus.CANCELLED.value, RunStatus.CONTINUED.value):
        return frozenset()
    if status != RunStatus.COMPLETED.value:
        return None
    result = _result_bytes(store, run_id, rec)
    return frozenset(large_ids(result)) if result else frozenset()


def error_from_record(err: dict[str, Any], run_id: str) -> ActorflowError:
    """Rebuild the exception a failed run raises from ``RunHandle.result()``."""
    kind = err.get("kind", "error")
    step = err.get("step") or ""
    attempt = err.get("attempt") or 0
    message = err.get("message", "")
    if kind == "run_timeout":
        return RunTimeout(float(err.get("timeout") or 0.0), run_id)
    if kind == "timeout":
        limit = float(err.get("timeout") or 0.0)
        if str(err.get("type", "")).endswith("HeartbeatTimeout"):
            return HeartbeatTimeout(step, attempt, limit, run_id, message or None)
        return StepTimeout(step, attempt, limit, run_id, message or None)
    if kind == "workflow":
        cause = _unpickle_error(err)
        if isinstance(cause, WorkflowFailed):
            cause.run_id = run_id
            return cause
        failed_wf = WorkflowFailed(message, err.get("type", ""), run_id)
        failed_wf.__cause__ = cause
        return failed_wf
    if kind == "crash":
        return WorkerCrashed(
            step, attempt, err.get("exitcode"), err.get("signal"), run_id, message or None
        )
    if kind == "pool":
        exc: BaseException = PoolUnavailable(message)
        failed = StepFailed(step, attempt, err.get("type", ""), message, "", run_id)
        failed.__cause__ = exc
        return failed
    if kind == "internal":
        return ActorflowError(message)
    original = _unpickle_error(err)
    if "actorflow.errors.RunDepthExceeded" in (err.get("types") or ()):
        # (the refusal itself, or a parent's child step failing with it in turn)
        at = original if isinstance(original, RunDepthExceeded) else None
        depth_err = RunDepthExceeded(
            step,
            at.limit if at else None,
            at.depth if at else None,
            at.chain if at else (),
            run_id,
            attempt,
            message,
        )
        depth_err.__cause__ = original
        return depth_err
    tb = err.get("traceback") or ""
    user_tb = err.get("user_traceback") or tb
    if tb:
        original.__cause__ = RemoteTraceback(tb, user_tb)
    failed = StepFailed(step, attempt, err.get("type", ""), message, tb, run_id, user_tb)
    failed.__cause__ = original
    return failed


def _unpickle_error(err: dict[str, Any]) -> BaseException:
    blob = err.get("exc")
    if blob:
        try:
            exc = pickle.loads(base64.b64decode(blob))
            if isinstance(exc, BaseException):
                return exc
        except Exception:  # the class may not be importable here
            pass
    return RemoteError(err.get("type", "Exception"), err.get("message", ""))


def fanout_progress(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Item counts of a run's fan-outs (for_each, batch, map), in record order.

    Each entry: ``path``, ``kind``, ``total``, ``succeeded``, ``failed``, ``cancelled``,
    ``pending``. Only the fan-outs' own records are parsed, so this stays cheap while a
    fan-out of 100,000 items is recorded item by item.

    Raises:
        RunNotFound: no such run.
    """
    read_run(store, run_id)
    out: list[dict[str, Any]] = []
    for _, raw in store.scan(K.STEPS, K.step_prefix(run_id)):
        if b'"items":{' not in raw:  # not a fan-out: skip without parsing
            continue
        rec = load_record(raw, f"step of run {run_id}")
        items = rec.get("items")
        if isinstance(items, dict):
            out.append({"path": rec.get("path", rec["name"]), "kind": rec.get("kind"), **items})
    return out


def final_run(store: Store, run_id: str) -> tuple[str, dict[str, Any]] | None:
    """The last run of the chain ``run_id`` started (runs that continued as new), or None."""
    for _ in range(1_000_000):
        raw = store.get(K.RUNS, K.run_key(run_id))
        if raw is None:
            return None
        rec = load_record(raw, f"run {run_id}")
        nxt = rec.get("continued_as")
        if rec.get("status") != RunStatus.CONTINUED.value or not nxt:
            return run_id, rec
        run_id = str(nxt)
    raise ClientError(f"run {run_id}: its continue-as-new chain does not end")


def run_outcome(store: Store, run_id: str) -> tuple[RunStatus, Any, ActorflowError | None]:
    """(status, result, error) of a run; result and error only once it has finished.

    A run that continued as new answers for the last run of its chain.
    """
    _, status, result, error = chain_outcome(store, run_id)
    return status, result, error


def chain_outcome(store: Store, run_id: str) -> tuple[str, RunStatus, Any, ActorflowError | None]:
    """(last run id, status, result, error) of the chain ``run_id`` starts, in one read.

    Result and error only once the last run has finished. A waiter keeps the last run id
    to watch (and to start the next look from) instead of walking the chain again.
    """
    found = final_run(store, run_id)
    if found is None:
        raise RunNotFound(run_id)
    run_id, rec = found
    status = RunStatus(rec["status"])
    if status == RunStatus.COMPLETED:
        if "result" in rec:
            return run_id, status, rec["result"], None
        raw = _result_bytes(store, run_id, rec)
        value = decode_value(raw, f"result of run {run_id}") if raw else None
        return run_id, status, value, None
    if status == RunStatus.FAILED:
        return run_id, status, None, error_from_record(rec.get("error") or {}, run_id)
    if status == RunStatus.CANCELLED:
        return run_id, status, None, RunCancelled(rec.get("cancel_reason") or "", run_id)
    return run_id, status, None, None


# -- depth: how far below a top-level run a run is ----------------------------------------

#: Most parent links followed (a damaged store could hold a loop of them).
_MAX_LINKS = 100_000


def _parent_record(store: Store, parent: Any) -> dict[str, Any] | None:
    if not parent:
        return None
    raw = store.get(K.RUNS, K.run_key(str(parent[0])))
    return load_record(raw, f"run {parent[0]}") if raw is not None else None


def run_depth(store: Store, rec: dict[str, Any]) -> int:
    """The depth of the run whose record is ``rec`` (0 for a top-level run)."""
    depth = rec.get("depth")
    if isinstance(depth, int):
        return depth
    # Written by a release before depths: count the parent links up to a run that knows.
    link, n = rec.get("parent"), 0
    while link and n < _MAX_LINKS:
        n += 1
        parent = _parent_record(store, link)
        if parent is None:
            break  # the parent's record is gone (deleted): count the links known
        known = parent.get("depth")
        if isinstance(known, int):
            return n + known
        link = parent.get("parent")
    return n


def ancestry(store: Store, parent: Any, most: int) -> list[str]:
    """Workflow ids of the runs above a run, the top-level run's first."""
    chain: list[str] = []
    rec = _parent_record(store, parent)
    while rec is not None and len(chain) < most:
        chain.append(str(rec.get("workflow")))
        rec = _parent_record(store, rec.get("parent"))
    return chain[::-1]
