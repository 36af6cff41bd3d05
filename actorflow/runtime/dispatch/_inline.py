"""The inline transport (``executor="inline"``): steps run on threads of the engine's process.

It is a :class:`~actorflow.runtime.dispatch._remote.RemoteTransport`, so the engine records
and recovers exactly as with worker processes; it is meant for tests (``actorflow.testing``
uses it), where starting processes would cost more than the steps. What differs, and why:

- A step runs on one of ``workers`` threads (default: at least 4), with the same ``ctx`` as
  in a worker process; its function is called directly, so it need not be importable or
  picklable, and test doubles (mocks, spies) work.
- A step past its timeout fails with ``StepTimeout`` at the deadline, but Python cannot stop
  a thread: the runaway call goes on, its result is ignored, and a fresh thread takes its
  place. Crash isolation (a segfault, ``os._exit``) does not exist here either.
- Under the test harness the transport also counts each task as work in flight (see
  ``_inbox.Activity``), and lets the harness replace step functions (``intercept``) and
  turn a raised :class:`SimulatedFault` into a timeout or a worker crash.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any

from actorflow.runtime.dispatch._core import CRASH_TYPES, TIMEOUT_TYPES
from actorflow.runtime.dispatch._remote import RemoteTransport, run_here
from actorflow.runtime.dispatch._transport import Task, TransportHost
from actorflow.runtime.kernel._messages import ErrorInfo
from actorflow.workers._task import Intercept

__all__ = ["InlineTransport", "SimulatedFault"]

log = logging.getLogger("actorflow.dispatcher")

#: Threads an inline executor runs at least, when ``workers`` is not set.
MIN_THREADS = 4


class SimulatedFault(Exception):
    """Raised by a test double: report this attempt as a ``"timeout"`` or a ``"crash"``."""

    def __init__(self, kind: str) -> None:
        if kind not in ("timeout", "crash"):
            raise ValueError(f"SimulatedFault: kind: expected 'timeout' or 'crash', got {kind!r}")
        super().__init__(kind)
        self.kind = kind


#: Where an inline task runs (its ``worker``, set once a thread takes it up).
WHERE = "inline"

_FAULT = f"{SimulatedFault.__module__}.{SimulatedFault.__qualname__}"


class InlineTransport(RemoteTransport):
    """Runs tasks on threads of this process (see the module docstring).

    Args:
        core: the dispatcher core.
        workers: how many threads (None: the engine's ``workers``, or if that is 0, 4 or
            the number of CPUs, whichever is more).
        intercept: ``intercept(workflow_id, step, fn, how) -> fn``, called before each
            step (the harness's mocks), or None.
        services: the cache of set-up services its steps share (the harness pre-fills it
            with mocked services).
    """

    halted = "an inline step cannot be stopped; its thread was abandoned"
    where = "inline"

    def __init__(
        self,
        core: TransportHost,
        workers: int | None = None,
        intercept: Intercept | None = None,
        services: dict[tuple[str, str], Any] | None = None,
    ) -> None:
        super().__init__(core)
        self._intercept = intercept
        self._services: dict[tuple[str, str], Any] = {} if services is None else services
        self._size = workers or core.config.workers or max(MIN_THREADS, os.cpu_count() or 1)
        self._queue: queue.SimpleQueue[tuple[Task, tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._threads = 0  # threads serving the queue (abandoned ones not counted)
        self._idle = 0
        self._lock = threading.Lock()
        self._counted: set[int] = set()  # tasks still counted as work in flight
        self._activity = getattr(core, "activity", None)

    def close(self) -> None:
        with self._lock:
            n = self._threads
        for _ in range(n):
            self._queue.put(None)

    def worker_count(self) -> int:
        return self._size

    def send(self, task: Task, body: tuple[Any, ...]) -> Any:
        if self._activity is not None:
            # Until its outcome is in the core's inbox, or it is halted.
            with self._lock:
                self._counted.add(task.id)
            self._activity.begin()
        self._queue.put((task, body))
        with self._lock:
            grow = self._idle == 0 and self._threads < self._size
            if grow:
                self._threads += 1
            else:
                self._idle -= 1 if self._idle else 0
        if grow:
            self._spawn()
        return None

    def forget(self, task: Task) -> None:
        pass  # stopping: a queued task is skipped; a running one is left to finish

    def halt(self, task: Task) -> None:
        self._release(task.id)  # whatever its thread still does is not the engine's work
        if not task.worker:
            return  # still queued: its thread skips it
        with self._lock:
            # Its thread is stuck in the call: another one takes its place in the pool.
            self._threads += 1
        self._spawn()

    def _spawn(self) -> None:
        threading.Thread(target=self._serve, name="actorflow-inline", daemon=True).start()

    def _release(self, key: int) -> None:
        if self._activity is None:
            return
        with self._lock:
            if key not in self._counted:
                return
            self._counted.discard(key)
        self._activity.end()

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._queue.get()
            if item is None:
                return
            task, body = item
            try:
                if task.cancelled:
                    continue
                outcome = self._run(task, body)
                if _halted(task):
                    return  # halted while it ran: a replacement thread serves the queue
                self.core.tell_finished(task.id, outcome)
            finally:
                self._release(task.id)

    def _run(self, task: Task, body: tuple[Any, ...]) -> Any:
        task.worker = WHERE  # a thread took it up: read by halt() on the core's thread
        try:
            return run_here(
                self, task, body, WHERE, intercept=self._intercept, services=self._services
            )
        except BaseException as exc:  # a bug of ours: report it as a crash, not a hang
            log.exception("inline step %r of run %s", task.spec.step, task.spec.run_id)
            return exc

    def failure(self, task: Task, data: Any) -> ErrorInfo | None:
        if data[0] != _FAULT:
            return None
        spec = task.spec
        stats = self.core.stats
        if data[2] == "timeout":
            stats.timeouts += 1
            after = "" if spec.timeout is None else f" after {spec.timeout:g}s"
            return ErrorInfo(
                "timeout",
                TIMEOUT_TYPES[0],
                TIMEOUT_TYPES,
                f"timed out{after} (simulated)",
                timeout=spec.timeout,
                details=task.details,
            )
        stats.crashes += 1
        return ErrorInfo(
            "crash",
            CRASH_TYPES[0],
            CRASH_TYPES,
            "worker process died (simulated)",
            details=task.details,
        )


def _halted(task: Task) -> bool:
    """Whether the core gave ``task`` up while it ran (read across threads)."""
    return task.cancelled
