"""What every dispatcher does the same, wherever its steps run.

The process pool (``_pool``), and the remote base (``_remote``) with its Dask and inline
transports, all report attempts the same way and answer most of what a running step asks
the same way; that lives here once:

- :class:`Reports`: attempt outcomes batched per shard, sent as one message per shard per
  batch (``AttemptResults`` when there are several), a success held back a little when
  waiting idles nobody, so that results arriving one by one still share a round;
- :func:`attempt_report`: an ``AttemptSucceeded`` or ``AttemptFailed`` from what
  :func:`~actorflow.workers._task.execute` returned;
- :func:`answer_request`: a step's ``output``, ``ref``, ``service`` and ``breaker``
  requests (each transport adds its own: the pool's ``shm`` and asynchronous ``state``,
  the remote ``start``, ``beat``, ``log`` and ``state``);
- :func:`timeout_error`, the error types and :class:`DispatcherStats`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pykka

from actorflow.definition._options import qualified_name
from actorflow.errors import HeartbeatTimeout, PoolUnavailable, StepTimeout, WorkerCrashed
from actorflow.runtime.kernel._messages import (
    AttemptFailed,
    AttemptResults,
    AttemptSucceeded,
    ErrorInfo,
    TaskSpec,
)
from actorflow.store import _keys as K
from actorflow.store._protocol import Store
from actorflow.store._records import step_names, step_output

if TYPE_CHECKING:
    from actorflow.runtime._core import Core

__all__ = [
    "CRASH_TYPES",
    "HEARTBEAT_TYPES",
    "LINGER_MAX",
    "LINGER_MOST",
    "POOL_TYPES",
    "TIMEOUT_TYPES",
    "DispatcherStats",
    "Reports",
    "answer_request",
    "attempt_report",
    "blob_ref",
    "linger_most",
    "mro_names",
    "resolve_output",
    "resolve_ref",
    "send_reports",
    "timeout_error",
]


def mro_names(cls: type) -> tuple[str, ...]:
    """The qualified names of an exception class and its bases (an error's ``types``)."""
    return tuple(qualified_name(c) for c in cls.__mro__ if issubclass(c, BaseException))


TIMEOUT_TYPES = mro_names(StepTimeout)
HEARTBEAT_TYPES = mro_names(HeartbeatTimeout)
CRASH_TYPES = mro_names(WorkerCrashed)
POOL_TYPES = mro_names(PoolUnavailable)

Report = AttemptSucceeded | AttemptFailed


@dataclass
class DispatcherStats:
    """Counters of the dispatcher."""

    dispatched: int = 0
    succeeded: int = 0
    failed: int = 0
    timeouts: int = 0
    crashes: int = 0
    restarts: int = 0
    breaker_opened: int = 0
    queued: int = 0
    busy: int = 0
    workers: int = 0
    recycled: int = 0  # workers retired at max_tasks_per_worker / max_memory_per_worker
    bytes_sent: int = 0  # task frames written to workers' pipes
    latency_p50_ms: float | None = None  # from a task's arrival here to its send to a worker
    latency_p99_ms: float | None = None


#: Longest a success's report waits for others to share its write (see :class:`Reports`).
LINGER_MAX = 0.05

#: Most reports held back at once; past this many they go at once. (With ``workers``
#: workers a round is full at two results per worker, at least 16: a few workers need the
#: whole linger to fill one, many fill it long before.)
LINGER_MOST = 512


def linger_most(workers: int) -> int:
    """How many held reports fill a round, with ``workers`` workers."""
    return max(16, min(LINGER_MOST, 2 * workers))


class Reports:
    """Attempt outcomes to send, batched per shard (the run's, by ``route``).

    Each report travels to its shard, is folded into a write, committed (an fsync with
    ``durability="sync"``) and its effects delivered: a round whose cost is per message and
    per wake-up, not per item. When results come one at a time (a few workers, items of
    10 ms), every item would pay a whole round. So a success may wait a little
    (``linger``) for others to share its round, but only when waiting idles nobody: its
    run still has at least a task per worker queued or running, so the workers go on with
    those while the report waits, and nothing the run does next depends on this report
    alone. A report that something may wait on (a failure, the last tasks of a run, a
    sequential step) has no linger and takes every held report with it at once. Held
    reports are not durable: a crash meanwhile runs those items again (they were never
    acknowledged), exactly as if it had come just before they finished.
    """

    __slots__ = ("_batches", "_held", "_route", "due", "most")

    def __init__(self, route: Callable[[str], pykka.ActorRef[Any]]) -> None:
        self._route = route
        self._batches: dict[pykka.ActorRef[Any], list[Report]] = {}
        self._held = 0
        #: Held reports that fill a round: they go at once (see :func:`linger_most`).
        self.most = LINGER_MOST
        #: When the held reports must go (``time.monotonic``); None: at once.
        self.due: float | None = None

    def add(self, message: Report, linger: float = 0.0) -> None:
        """Queue ``message`` for its run's shard; it may wait up to ``linger`` seconds."""
        shard = self._route(message.run_id)
        batch = self._batches.get(shard)
        if batch is None:
            self._batches[shard] = [message]
        else:
            batch.append(message)
        self._held += 1
        if linger <= 0.0 or self._held >= self.most:
            self.due = None
            return
        due = time.monotonic() + min(linger, LINGER_MAX)
        if self._held == 1 or (self.due is not None and due < self.due):
            self.due = due  # (None stays None: an earlier report is due at once)

    def __bool__(self) -> bool:
        return bool(self._batches)

    def ready(self, now: float) -> bool:
        """Whether the queued reports should go now."""
        return bool(self._batches) and (self.due is None or now >= self.due)

    def send(self) -> None:
        """Send each shard what was queued for it: one message, however many there are."""
        batches, self._batches = self._batches, {}
        self._held = 0
        self.due = None
        send_reports(batches)


def send_reports(reports: dict[pykka.ActorRef[Any], list[Report]]) -> None:
    """Send each shard its results: one message, however many there are."""
    for shard, batch in reports.items():
        try:
            shard.tell(batch[0] if len(batch) == 1 else AttemptResults(tuple(batch)))
        except pykka.ActorDeadError:
            pass  # stopping: the steps stay recorded as running; recovery retries them


def attempt_report(
    spec: TaskSpec,
    step: str,
    ok: bool,
    data: Any,
    started: float,
    ended: float,
    pid: int,
    details: bytes | None = None,
) -> Report:
    """The report of one step attempt from ``execute``'s outcome (``ok``, ``data``).

    ``data`` is the encoded output, or ``(type, mro, message, traceback, pickled,
    user_traceback)`` of the exception the step raised (a worker of an older version sends
    no ``user_traceback``). A chunk reports one per item (``step``: the item's).
    """
    if ok:
        return AttemptSucceeded(spec.run_id, step, spec.attempt, data, started, ended, pid)
    qual, mro, message, tb, blob = data[:5]
    user_tb = data[5] if len(data) > 5 else ""
    error = ErrorInfo(
        "error", qual, tuple(mro), message, tb, blob, details=details, user_traceback=user_tb
    )
    return AttemptFailed(spec.run_id, step, spec.attempt, error, started, ended, pid)


def answer_request(
    op: str, arg: Any, store: Store, host: Core | None, run_id: str, workflow_id: str, step: str
) -> Any:
    """Answer what every transport answers alike.

    ``output`` (``ctx.steps[name]`` for ``step``), ``names`` (the names ``ctx.steps``
    holds for ``step``), ``ref`` (a value sent by reference),
    ``service`` (a configured service, pickled) and ``breaker`` (a service action's circuit).

    Raises:
        ValueError: another request (the transport answers its own, or none).
    """
    if op == "output":
        return resolve_output(store, run_id, step, str(arg))
    if op == "names":
        return step_names(store, run_id, step)
    if op == "ref":
        return resolve_ref(store, run_id, str(arg))
    if op == "service" and host is not None:
        return host.service_blob(workflow_id, str(arg))
    if op == "breaker" and host is not None:
        return host.service_breaker(workflow_id, arg)
    raise ValueError(f"unknown request {op!r}")


def blob_ref(value: bytes) -> bytes:
    """A reference to the large (``B``) value ``value``, resolved only if the step reads it."""
    return b"Rblob:" + base64.b64encode(value)


def resolve_ref(store: Store, run_id: str, target: str) -> bytes | None:
    """The value a reference (``payload``, ``step:<path>``, ``blob:<value>``) stands for."""
    if target == "payload":
        return store.get(K.VALUES, K.payload_key(run_id))
    if target.startswith("step:"):
        return step_output(store, run_id, target[5:])
    if target.startswith("blob:"):  # a large value whose blobs were not in memory
        return base64.b64decode(target[5:])
    raise ValueError(f"unknown reference {target!r}")


def resolve_output(store: Store, run_id: str, step: str, name: str) -> bytes | None:
    """``ctx.steps[name]`` for step ``step``: its own frame first, then the enclosing ones.

    ``lines[3]/price`` asking for ``tax`` tries ``lines[3]/tax``, then ``tax``.
    """
    prefix = step
    while True:
        cut = prefix.rfind("/")
        prefix = prefix[: cut + 1] if cut >= 0 else ""
        value = step_output(store, run_id, prefix + name)
        if value is not None or not prefix:
            return value
        prefix = prefix[:-1]


def timeout_error(
    spec: TaskSpec, started: float, beat: float, details: bytes | None, what: str
) -> ErrorInfo:
    """The failure of a step stopped at its deadline.

    Silent past its ``heartbeat_timeout``: :class:`HeartbeatTimeout`; else past its
    ``timeout``: :class:`StepTimeout`.

    Args:
        spec: the task.
        started: when it started (monotonic).
        beat: its last heartbeat (monotonic; its start if none).
        details: its last heartbeat's details.
        what: what was done about it, for the message (``"worker killed"``).
    """
    hb = spec.heartbeat_timeout
    now = time.monotonic()
    silent = hb is not None and beat + hb <= now + 1e-3
    if silent and (spec.timeout is None or started + spec.timeout > now + 1e-3):
        assert hb is not None
        return ErrorInfo(
            "timeout",
            HEARTBEAT_TYPES[0],
            HEARTBEAT_TYPES,
            f"no heartbeat for {hb:g}s ({what})",
            timeout=hb,
            details=details,
        )
    return ErrorInfo(
        "timeout",
        TIMEOUT_TYPES[0],
        TIMEOUT_TYPES,
        f"timed out after {spec.timeout:g}s ({what})",
        timeout=spec.timeout,
        details=details,
    )
