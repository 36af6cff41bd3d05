"""The per-node records a supervisor keeps and writes.

Leaves (steps, actions, subflows, sleeps) carry their attempts; composites their progress.
"""

from __future__ import annotations

import base64
import signal
from typing import Any

import orjson

from actorflow._types import StepStatus
from actorflow.definition._options import qualified_name
from actorflow.errors import CircuitOpen
from actorflow.runtime.kernel._messages import AttemptFailed, ErrorInfo
from actorflow.store import _keys as K
from actorflow.store._protocol import Op
from actorflow.store._records import dump_record

__all__ = [
    "FROM_ITEM",
    "Leaf",
    "attempt_record",
    "attempt_timeout",
    "child_failure",
    "circuit_error",
    "circuit_open",
    "error_record",
    "retry_delay",
    "too_interrupted",
]

_MAX_ATTEMPT_MESSAGE = 300


class _FromItem:
    """The type of :data:`FROM_ITEM`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FROM_ITEM"


#: A leaf's input when it is its for_each item: its record says so in a byte or two, and the
#: reader renders the item from the loop's ``#items`` value (see store/_records.py).
FROM_ITEM = _FromItem()


def too_interrupted(attempts: list[dict[str, Any]], limit: int) -> ErrorInfo | None:
    """The failure of a step whose attempts the engine's death interrupted ``limit`` times.

    Such a step may be what kills the engine (a poison step): running it again at every
    start would keep the engine in a crash loop (``max_interruptions``; 0: no limit).
    """
    if not limit:
        return None
    n = sum(1 for a in attempts if a.get("status") == "interrupted")
    if n < limit:
        return None
    return ErrorInfo(
        "interrupted",
        "actorflow.errors.StepFailed",
        ("actorflow.errors.StepFailed", "actorflow.errors.RunError"),
        f"interrupted by {n} engine stops while it ran (max_interruptions={limit}); not run "
        "again: it may be what stops the engine",
    )


def error_record(err: ErrorInfo, step: str, attempt: int) -> dict[str, Any]:
    """The stored form of a failure.

    ``user_traceback`` is ``traceback`` without the engine's frames (``_tracebacks``); records
    written before it was kept lack it, and readers take ``traceback`` for it then.
    """
    sig = None
    if err.exitcode is not None and err.exitcode < 0:
        try:
            sig = signal.Signals(-err.exitcode).name
        except ValueError:
            sig = str(-err.exitcode)
    return {
        "kind": err.kind,
        "type": err.type,
        "types": list(err.types),
        "message": err.message,
        "traceback": err.traceback,
        "user_traceback": err.user_traceback or err.traceback,
        "exc": base64.b64encode(err.pickled).decode() if err.pickled else None,
        "exitcode": err.exitcode,
        "signal": sig,
        "timeout": err.timeout,
        "step": step,
        "attempt": attempt,
    }


def attempt_summary(err: ErrorInfo) -> str:
    """A one-line summary of a failed attempt."""
    return f"{err.type.rpartition('.')[2]}: {err.message}"[:_MAX_ATTEMPT_MESSAGE]


def attempt_record(
    n: int,
    status: str,
    kind: str | None,
    started: float | None,
    ended: float | None,
    error: str | None = None,
    pid: int | None = None,
) -> dict[str, Any]:
    """One entry of a step record's ``attempts``."""
    return {
        "attempt": n,
        "status": status,
        "kind": kind,
        "started_at": started,
        "ended_at": ended,
        "error": error,
        "pid": pid,
    }


def child_failure(child_id: str, rec: dict[str, Any]) -> ErrorInfo:
    """What a parent's child step fails with, from its child's final (failed) run record."""
    err = rec.get("error") or {}
    if rec.get("status") == "cancelled":
        err = {
            "type": "actorflow.errors.RunCancelled",
            "types": ["actorflow.errors.RunCancelled", "actorflow.errors.RunError"],
            "message": f"was cancelled: {rec.get('cancel_reason') or ''}",
        }
    exc = err.get("exc")  # the child's exception: what the parent's StepFailed is caused by
    return ErrorInfo(
        "error",
        err.get("type", "actorflow.errors.RunError"),
        tuple(err.get("types") or ()),
        f"child run {child_id} failed: {err.get('message', '')}",
        err.get("traceback") or "",
        base64.b64decode(exc) if isinstance(exc, str) and exc else None,
        user_traceback=err.get("user_traceback") or "",
    )


def retry_delay(retry: Any, leaf: Leaf, err: ErrorInfo, now: float, random: float) -> float | None:
    """Seconds to wait before ``leaf``'s next attempt, or None if it must not run again.

    ``leaf.failures`` already counts the attempt that just failed. Past the policy's
    ``schedule_to_close`` (counted from the step's first dispatch) there is no next attempt.
    """
    if not retry.allows(leaf.failures, err.types):
        return None
    delay = float(retry.delay_for(leaf.failures, random))
    bound = retry.schedule_to_close
    if (
        bound is not None
        and leaf.scheduled_at is not None
        and now + delay >= leaf.scheduled_at + bound
    ):
        return None
    return delay


def attempt_timeout(timeout: float | None, retry: Any, leaf: Leaf, now: float) -> float | None:
    """An attempt's time limit: its own, cut to what is left of ``schedule_to_close``."""
    bound = retry.schedule_to_close if retry is not None else None
    if bound is None or leaf.scheduled_at is None:
        return timeout
    left = max(0.001, float(leaf.scheduled_at + bound - now))
    return left if timeout is None else min(timeout, left)


class Leaf:
    """A step, action, subflow or sleep of a live run (mirrors its record in ``steps``)."""

    __slots__ = (
        "attempt",
        "attempts",
        "child",
        "chunk",
        "details",
        "dispatched_at",
        "ended_at",
        "error",
        "failures",
        "frame",
        "handling",
        "inline",
        "input",
        "key",
        "kind",
        "next_retry_at",
        "node",
        "path",
        "recovered",
        "scheduled_at",
        "started_at",
        "status",
        "wait",
        "wake_at",
        "window",
    )

    def __init__(self, run_id: str, frame: int, node: int, path: str, kind: str) -> None:
        self.frame = frame
        self.node = node
        self.path = path
        self.key = K.step_key(run_id, path)
        self.kind = kind
        self.status = StepStatus.PENDING
        self.attempt = 0
        self.failures = 0
        self.dispatched_at: float | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.next_retry_at: float | None = None
        self.error: dict[str, Any] | None = None
        self.attempts: list[dict[str, Any]] = []
        self.inline: orjson.Fragment | None = None  # a small JSON output, kept in the record
        self.handling = False  # its error handler is running
        self.recovered = False  # its output came from its error handler
        self.child: str | None = None  # a subflow's child run id
        self.wake_at: float | None = None  # a sleep's due time
        self.chunk: str | None = None  # the chunk task it runs in (not recorded on its own)
        self.window = False  # sent alone from the held items: holds a place in their window
        self.wait: dict[str, Any] | None = None  # a waiting event's name and key, or token
        self.scheduled_at: float | None = None  # first dispatch (schedule_to_close)
        self.details: bytes | None = None  # the last heartbeat's encoded details
        # What it was given: small JSON as it is, else its rendering (``input_of``), or
        # FROM_ITEM: its for_each item, which the loop keeps (store/_records.py).
        self.input: orjson.Fragment | str | _FromItem | None = None

    def record(self) -> bytes:
        """Its record, compact (store/_records.py says how; ``load_step`` expands it)."""
        rec: dict[str, Any] = {"node": self.node}
        if self.kind != "step":
            rec["kind"] = self.kind
        if self.status != StepStatus.SUCCEEDED:
            rec["status"] = self.status  # a StrEnum: orjson writes it as its string
        dispatched, started, ended = self.dispatched_at, self.started_at, self.ended_at
        if dispatched is not None and started is not None and ended is not None:
            to_start = round((started - dispatched) * 1e6)
            # The end from the start as written, so that rounding the two does not add up.
            rec["at"] = [dispatched, to_start, round((ended - dispatched) * 1e6) - to_start]
            if self.input is FROM_ITEM:
                rec["at"].append(1)
        else:
            if dispatched is not None:
                rec["dispatched_at"] = dispatched
            if started is not None:
                rec["started_at"] = started
            if ended is not None:
                rec["ended_at"] = ended
        attempts = self.attempts
        if (
            len(attempts) == 1
            and self.attempt == 1
            and "at" in rec
            and _only_success(attempts[0], started, ended)
        ):
            rec["pid"] = attempts[0]["pid"]
        else:
            if attempts:
                rec["attempts"] = attempts
            if self.attempt != len(attempts):
                rec["attempt"] = self.attempt
        if self.failures:
            rec["failures"] = self.failures
        if self.next_retry_at is not None:
            rec["next_retry_at"] = self.next_retry_at
        if self.error is not None:
            rec["error"] = self.error
        if self.inline is not None:
            rec["output"] = self.inline
        if isinstance(self.input, str):
            rec["input"] = self.input
        elif self.input is FROM_ITEM:
            if "at" not in rec:
                rec["ii"] = 1  # (else the fourth element of "at" says it)
        elif self.input is not None:
            rec["in"] = self.input  # (load_step renders it)
        if self.handling:
            rec["handling"] = True
        if self.recovered:
            rec["recovered"] = True
        if self.child is not None:
            rec["child_run_id"] = self.child
        if self.wake_at is not None:
            rec["wake_at"] = self.wake_at
        if self.wait is not None:
            rec["wait"] = self.wait
        if self.scheduled_at is not None and self.scheduled_at != self.dispatched_at:
            # Only once a retry moved dispatched_at on: the first attempt's record (most
            # records, a million items' too) reads it back from dispatched_at.
            rec["scheduled_at"] = self.scheduled_at
        if self.details is not None:
            rec["heartbeat"] = base64.b64encode(self.details).decode()
        return dump_record(rec)

    def put(self) -> Op:
        return (K.STEPS, self.key, self.record())

    @classmethod
    def from_record(cls, run_id: str, rec: dict[str, Any], frame: int, node: int) -> Leaf:
        """A live leaf from its record in its full shape (``load_step``)."""
        leaf = cls(run_id, frame, node, rec["path"], rec.get("kind", "step"))
        leaf.status = StepStatus(rec["status"])
        leaf.attempt = int(rec.get("attempt", 0))
        leaf.failures = int(rec.get("failures", 0))
        leaf.dispatched_at = rec.get("dispatched_at")
        leaf.started_at = rec.get("started_at")
        leaf.ended_at = rec.get("ended_at")
        leaf.next_retry_at = rec.get("next_retry_at")
        leaf.error = rec.get("error")
        leaf.attempts = list(rec.get("attempts", []))
        leaf.handling = bool(rec.get("handling"))
        leaf.recovered = bool(rec.get("recovered"))
        leaf.child = rec.get("child_run_id")
        leaf.wake_at = rec.get("wake_at")
        leaf.wait = rec.get("wait")
        leaf.scheduled_at = rec.get("scheduled_at", leaf.dispatched_at)
        leaf.input = FROM_ITEM if rec.get("input_item") else rec.get("input")
        if rec.get("heartbeat"):
            leaf.details = base64.b64decode(rec["heartbeat"])
        if "output" in rec:
            leaf.inline = orjson.Fragment(dump_record(rec["output"]))  # (right-sized)
        return leaf


def _only_success(attempt: dict[str, Any], started: float | None, ended: float | None) -> bool:
    """True for an attempt a compact record can stand for with its pid alone."""
    return (
        len(attempt) == 7
        and attempt.get("attempt") == 1
        and attempt.get("status") == "succeeded"
        and attempt.get("kind") is None
        and attempt.get("error") is None
        and attempt.get("started_at") == started
        and attempt.get("ended_at") == ended
        and attempt.get("pid") is not None  # (a code sleep's attempt ran in no process)
    )


_CIRCUIT_TYPES = tuple(
    qualified_name(c) for c in CircuitOpen.__mro__ if issubclass(c, BaseException)
)


def circuit_open(run_id: str, step: str, attempt: int, breaker: Any, now: float) -> AttemptFailed:
    """The failure of an attempt that its open circuit breaker stopped before it ran."""
    info = ErrorInfo(
        "error",
        _CIRCUIT_TYPES[0],
        _CIRCUIT_TYPES,
        f"circuit breaker {breaker.name!r} is open (the attempt did not run)",
    )
    return AttemptFailed(run_id, step, attempt, info, now, now, 0)


def circuit_error(err: ErrorInfo) -> bool:
    """True for a failure an open circuit made (it says nothing new about the dependency)."""
    return err.type == _CIRCUIT_TYPES[0]
