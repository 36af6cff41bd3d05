"""Run handles: what ``engine.trigger`` returns, to wait for, query and cancel a run."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus
from actorflow.errors import ResultTimeout
from actorflow.runtime._promise import Promise
from actorflow.runtime._views import RunDetails, inspect_run, read_run, run_outcome

if TYPE_CHECKING:
    from actorflow.runtime._engine import Engine

__all__ = ["RunHandle"]


class RunHandle:
    """A reference to one run; cheap to create, safe to share between threads.

    Attributes:
        id: the run id.
        workflow_id: the run's workflow.
    """

    __slots__ = ("_engine", "id", "workflow_id")

    def __init__(self, engine: Engine, run_id: str, workflow_id: str) -> None:
        self._engine = engine
        self.id = run_id
        self.workflow_id = workflow_id

    def __repr__(self) -> str:
        return f"<RunHandle {self.workflow_id}/{self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def status(self) -> RunStatus:
        """The run's current status, as recorded in the store.

        Raises:
            RunNotFound: the run does not exist.
        """
        return RunStatus(self._engine._read(read_run, self.id)["status"])

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to finish and return its result (the last step's output).

        Args:
            timeout: seconds to wait at most; None waits as long as it takes.

        Returns:
            The output of the workflow's last step (actions excepted).

        Raises:
            StepFailed: a step failed for good; its exception is the ``__cause__``
                (:class:`StepTimeout` and :class:`WorkerCrashed` are subclasses).
            RunCancelled: the run was cancelled.
            RunTimeout: the run exceeded its workflow's timeout.
            ResultTimeout: ``timeout`` passed first (the run goes on).
            EngineNotRunning: the run is unfinished and no engine is running to finish it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            fut = self._watch()
            finished, value = self._outcome()
            if finished:
                return value
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                fut.result(remaining)
            except TimeoutError:
                raise ResultTimeout(
                    f"run {self.id} did not finish within {timeout:g}s (it goes on)"
                ) from None

    async def result_async(self, timeout: float | None = None) -> Any:
        """Awaitable twin of :meth:`result`; does not block the event loop."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            fut = self._watch()
            finished, value = self._outcome()
            if finished:
                return value
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                await asyncio.wait_for(_wait(fut), remaining)
            except TimeoutError:
                raise ResultTimeout(
                    f"run {self.id} did not finish within {timeout:g}s (it goes on)"
                ) from None

    def cancel(self, reason: str = "") -> bool:
        """Cancel the run: running steps are killed, pending ones never start.

        Args:
            reason: recorded and carried by the :class:`RunCancelled` that ``result`` raises.

        Returns:
            True if the run was active and is now cancelled (durably); False if it had
            already finished.
        """
        return self._engine._cancel(self.id, reason).result()

    async def cancel_async(self, reason: str = "") -> bool:
        """Awaitable twin of :meth:`cancel`."""
        fut = self._engine._cancel(self.id, reason)
        await _wait(fut)
        return fut.result()

    def inspect(self) -> RunDetails:
        """Everything recorded about the run (same as ``engine.inspect(run.id)``)."""
        return self._engine._read(inspect_run, self.id)

    # -- helpers ---------------------------------------------------------------------------

    def _watch(self) -> Promise[None]:
        return self._engine._watch(self.id)

    def _outcome(self) -> tuple[bool, Any]:
        """(True, result) once finished, raising the run's error if it failed."""
        status, result, error = self._engine._read(run_outcome, self.id)
        if error is not None:
            raise error
        return status.terminal, result


class _LoopBridge:
    """Completes asyncio futures from other threads with one loop wake-up per burst.

    ``call_soon_threadsafe`` writes to the loop's self-pipe on every call; when a group
    commit finishes four hundred runs at once, one wake-up serves them all.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: deque[tuple[asyncio.Future[None], Promise[Any]]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def complete(self, waiter: asyncio.Future[None], fut: Promise[Any]) -> None:
        """Called on any thread when ``fut`` is done: settle ``waiter`` on the loop."""
        self._pending.append((waiter, fut))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass  # the loop is closed: nobody awaits any more

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False  # before draining: a later append schedules again
        pending = self._pending
        while pending:
            waiter, fut = pending.popleft()
            _settle(waiter, fut)


_bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBridge] = (
    weakref.WeakKeyDictionary()
)


async def _wait(fut: Promise[Any]) -> None:
    """Await a concurrent future without ever cancelling it (other waiters share it)."""
    loop = asyncio.get_running_loop()
    if fut.done():
        if fut.exception() is not None:
            raise fut.exception()  # type: ignore[misc]
        return
    bridge = _bridges.get(loop)
    if bridge is None:
        bridge = _bridges[loop] = _LoopBridge(loop)
    waiter: asyncio.Future[None] = loop.create_future()
    fut.add_done_callback(functools.partial(bridge.complete, waiter))
    await waiter


def _settle(waiter: asyncio.Future[None], fut: Promise[Any]) -> None:
    if waiter.done():
        return
    exc = fut.exception()
    if exc is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(None)
