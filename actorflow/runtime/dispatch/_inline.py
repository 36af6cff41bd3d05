"""The dispatcher for ``executor="inline"``: steps run on threads of the engine's own process.

It is a :class:`~actorflow.runtime.dispatch._remote.RemoteDispatcher`, so the engine records and
recovers exactly as with worker processes; it is meant for tests (``actorflow.testing`` uses
it), where starting processes would cost more than the steps. What differs, and why:

- A step runs on one of ``workers`` threads (default: at least 4), with the same ``ctx`` as
  in a worker process; its function is called directly, so it need not be importable or
  picklable, and test doubles (mocks, spies) work.
- A step past its timeout fails with ``StepTimeout`` at the deadline, but Python cannot stop
  a thread: the runaway call goes on, its result is ignored, and a fresh thread takes its
  place. Crash isolation (a segfault, ``os._exit``) does not exist here either.
- Under the test harness the dispatcher also counts each task as work in flight (see
  ``_inbox.Activity``), and lets the harness replace step functions (``intercept``) and
  turn a raised :class:`SimulatedFault` into a timeout or a worker crash.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka

from actorflow.config import EngineConfig
from actorflow.runtime.dispatch._core import CRASH_TYPES, TIMEOUT_TYPES
from actorflow.runtime.dispatch._remote import Finished, RemoteDispatcher, RemoteTask
from actorflow.runtime.kernel._inbox import tell
from actorflow.runtime.kernel._messages import AttemptFailed, ErrorInfo, TaskSpec
from actorflow.runtime.kernel._promise import Promise
from actorflow.store._protocol import Store
from actorflow.workers._task import Intercept, TaskHost, execute

__all__ = ["InlineDispatcher", "SimulatedFault"]

log = logging.getLogger("actorflow.dispatcher")


class SimulatedFault(Exception):
    """Raised by a test double: report this attempt as a ``"timeout"`` or a ``"crash"``."""

    def __init__(self, kind: str) -> None:
        if kind not in ("timeout", "crash"):
            raise ValueError(f"SimulatedFault: kind: expected 'timeout' or 'crash', got {kind!r}")
        super().__init__(kind)
        self.kind = kind


_FAULT = f"{SimulatedFault.__module__}.{SimulatedFault.__qualname__}"


class _Link:
    """An inline step's requests: answered on its own thread, with no connection."""

    def __init__(self, dispatcher: InlineDispatcher) -> None:
        self._dispatcher = dispatcher

    def call(self, msg: tuple[Any, ...]) -> Any:
        return self._dispatcher.answer(*msg)


class InlineDispatcher(RemoteDispatcher):
    """Runs tasks on threads of this process (see the module docstring).

    Args:
        config: the engine configuration (``workers``: how many threads; 0 means 4 or the
            number of CPUs, whichever is more).
        route: run id -> its shard's actor ref.
        store: read to answer steps' ``ctx.steps[...]`` requests.
        ready: completed at once.
        host: the engine core (``ctx.state``, services).
        intercept: ``intercept(workflow_id, step, fn, how) -> fn``, called before each
            step (the harness's mocks), or None.
        services: the cache of set-up services its steps share (the harness pre-fills it
            with mocked services).
    """

    halted = "an inline step cannot be stopped; its thread was abandoned"
    where = "inline"

    def __init__(
        self,
        config: EngineConfig,
        route: Callable[[str], pykka.ActorRef[Any]],
        store: Store,
        ready: Promise[None],
        host: Any,
        intercept: Intercept | None = None,
        services: dict[tuple[str, str], Any] | None = None,
    ) -> None:
        super().__init__(config, route, store, ready, host)
        self._intercept = intercept
        self._services: dict[tuple[str, str], Any] = {} if services is None else services
        self._size = config.workers or max(4, os.cpu_count() or 1)
        self._queue: queue.SimpleQueue[tuple[RemoteTask, tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._threads = 0  # threads serving the queue (abandoned ones not counted)
        self._idle = 0
        self._lock = threading.Lock()
        self._link = _Link(self)
        self._counted: set[str] = set()  # tasks still counted as work in flight

    def close(self) -> None:
        with self._lock:
            n = self._threads
        for _ in range(n):
            self._queue.put(None)

    def worker_count(self) -> int:
        return self._size

    def send(self, task: RemoteTask, body: tuple[Any, ...]) -> Any:
        if self.activity is not None:
            # Until its outcome is in this actor's inbox, or it is halted.
            with self._lock:
                self._counted.add(task.key)
            self.activity.begin()
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

    def forget(self, task: RemoteTask) -> None:
        pass  # stopping: a queued task is skipped; a running one is left to finish

    def halt(self, task: RemoteTask) -> None:
        self._release(task.key)  # whatever its thread still does is not the engine's work
        if task.started is None:
            return  # still queued: its thread skips it
        with self._lock:
            # Its thread is stuck in the call: another one takes its place in the pool.
            self._threads += 1
        self._spawn()

    def _spawn(self) -> None:
        threading.Thread(target=self._serve, name="actorflow-inline", daemon=True).start()

    def _release(self, key: str) -> None:
        if self.activity is None:
            return
        with self._lock:
            if key not in self._counted:
                return
            self._counted.discard(key)
        self.activity.end()

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
                tell(self.actor_ref, Finished(task.key, outcome))
            finally:
                self._release(task.key)

    def _run(self, task: RemoteTask, body: tuple[Any, ...]) -> Any:
        spec = task.spec
        host = TaskHost(self._link, task.key, spec.run_id, spec.workflow_id, self._services)
        host.step = spec.step
        task.started = time.monotonic()  # read by halt() on the actor's thread
        if not host.request("start", (os.getpid(), "inline")):
            return None  # the engine drains or stops: this step must not start
        try:
            return execute(body, host, intercept=self._intercept)
        except BaseException as exc:  # a bug of ours: report it as a crash, not a hang
            log.exception("inline step %r of run %s", spec.step, spec.run_id)
            return exc

    def outcome(
        self,
        spec: TaskSpec,
        step: str,
        ok: bool,
        data: Any,
        started: float,
        ended: float,
        task: RemoteTask,
    ) -> None:
        if not ok and data[0] == _FAULT:
            kind = data[2]
            if kind == "timeout":
                after = "" if spec.timeout is None else f" after {spec.timeout:g}s"
                info = ErrorInfo(
                    "timeout",
                    TIMEOUT_TYPES[0],
                    TIMEOUT_TYPES,
                    f"timed out{after} (simulated)",
                    timeout=spec.timeout,
                    details=task.details,
                )
                self.stats.timeouts += 1
            else:
                info = ErrorInfo(
                    "crash",
                    CRASH_TYPES[0],
                    CRASH_TYPES,
                    "worker process died (simulated)",
                    details=task.details,
                )
                self.stats.crashes += 1
            self.report(AttemptFailed(spec.run_id, step, spec.attempt, info, None, ended, None))
            return
        super().outcome(spec, step, ok, data, started, ended, task)


def _halted(task: RemoteTask) -> bool:
    """Whether the actor gave ``task`` up while it ran (read across threads)."""
    return task.cancelled
