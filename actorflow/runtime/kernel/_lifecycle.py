"""Lifecycle events: typed records of what happened, for users to subscribe to.

``engine.subscribe(fn)`` (optionally with the event types wanted) calls ``fn(event)`` for
every :class:`RunStarted`, :class:`StepAttempted` and :class:`RunFinished`, in the order the
engine recorded them, once each is durable. Callbacks run on one thread of their own, never on
an actor's: a slow or failing subscriber (its errors are logged) delays only other
subscribers. Nothing is queued while nobody subscribes, so the engine pays one attribute test
per event then. The OpenTelemetry exporter (``af.observability.trace``) is such a subscriber.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actorflow._types import RunStatus

__all__ = ["Lifecycle", "LifecycleEvent", "RunFinished", "RunStarted", "StepAttempted"]

log = logging.getLogger("actorflow.runtime")


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A run was recorded (admitted, or queued behind a concurrency or rate limit).

    Attributes:
        run_id: the run.
        workflow_id: its workflow.
        at: when (the engine's clock).
        parent_run_id: the parent run of a child run (subflow, ``ctx.child``), else None.
    """

    run_id: str
    workflow_id: str
    at: float
    parent_run_id: str | None = None


@dataclass(frozen=True, slots=True)
class StepAttempted:
    """A step attempt ended and its outcome is durable.

    Attributes:
        run_id: the run.
        workflow_id: its workflow.
        step: the step's path (``lines[3]/price`` inside a for_each).
        attempt: the attempt's number, from 1.
        outcome: ``"succeeded"``, or the failure's kind: ``"error"``, ``"timeout"``,
            ``"crash"``, ``"pool"``.
        started_at: when it started in its worker, if known.
        ended_at: when it ended.
        error: a one-line summary of the failure, or None.
    """

    run_id: str
    workflow_id: str
    step: str
    attempt: int
    outcome: str
    started_at: float | None
    ended_at: float | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RunFinished:
    """A run's final status is durable.

    Attributes:
        run_id: the run.
        workflow_id: its workflow.
        status: completed, failed, cancelled or continued (as a new run); or panicked (a
            code workflow whose own code failed; it may be restarted).
        at: when (the engine's clock).
        error: the failure's message for a failed run, the reason for a cancelled one.
    """

    run_id: str
    workflow_id: str
    status: RunStatus
    at: float
    error: str | None = None


LifecycleEvent = RunStarted | StepAttempted | RunFinished


class Lifecycle:
    """Subscribers, and the thread that calls them.

    Args:
        activity: counts events in delivery as work in flight (the test harness), or None.
    """

    def __init__(self, activity: Any = None) -> None:
        self._subs: list[tuple[Callable[[Any], Any], tuple[type, ...]]] = []
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.activity = activity
        #: Whether anyone listens (the engine builds no event otherwise): a plain
        #: attribute, read once per step result on the shards' hottest path.
        self.active = False

    def subscribe(
        self, fn: Callable[[Any], Any], kinds: tuple[type, ...] = ()
    ) -> Callable[[], None]:
        """Call ``fn(event)`` for each event (of ``kinds``, if given); returns an unsubscribe."""
        entry = (fn, kinds)
        with self._lock:
            self._subs = [*self._subs, entry]
            self.active = True

        def unsubscribe() -> None:
            with self._lock:
                self._subs = [s for s in self._subs if s is not entry]
                self.active = bool(self._subs)

        return unsubscribe

    def emit(self, event: Any) -> None:
        """Queue ``event`` for the subscribers (called once it is durable)."""
        if not self._subs:
            return
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._deliver, name="actorflow-lifecycle", daemon=True
                    )
                    self._thread.start()
        if self.activity is not None:
            self.activity.begin()
        self._queue.put(event)

    def close(self) -> None:
        """Deliver what is queued, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(10)

    def _deliver(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                for fn, kinds in self._subs:
                    if kinds and not isinstance(event, kinds):
                        continue
                    try:
                        fn(event)
                    except Exception:
                        log.exception("lifecycle subscriber %r raised", fn)
            finally:
                if self.activity is not None:
                    self.activity.end()
