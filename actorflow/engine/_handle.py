"""Run handles: what ``engine.trigger`` returns, to wait for, query and cancel a run."""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from actorflow._types import RunStatus
from actorflow.errors import ResultTimeout
from actorflow.runtime.kernel._promise import Promise
from actorflow.views import (
    RunDetails,
    chain_outcome,
    fanout_progress,
    final_run,
    inspect_run,
    read_run,
)
from actorflow.workers._interceptors import QueryCall, SignalCall, UpdateCall

if TYPE_CHECKING:
    import asyncio

    from actorflow.engine._engine import Engine

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

        For a code workflow run that continued as new, the status of the last run of the
        chain (``inspect`` shows this run itself).

        Raises:
            RunNotFound: the run does not exist.
        """
        found = self._engine._read(final_run, self.id)
        if found is None:
            return RunStatus(self._engine._read(read_run, self.id)["status"])
        return RunStatus(found[1]["status"])

    def result(self, timeout: float | None = None, *, progress: bool = False) -> Any:
        """Wait for the run to finish and return its result (the last step's output).

        Args:
            timeout: seconds to wait at most; None waits as long as it takes.
            progress: draw a progress bar per fan-out (for_each, batch, map) on stderr
                while waiting (with rich: the ``progress`` extra, else ``MissingExtra``).

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
        if progress:
            from actorflow.engine._progress import result_with_progress

            return result_with_progress(self, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.id
        while True:
            watch, finished, value, latest = self._look(current)
            if finished:
                return value
            if latest != current:
                current = latest  # it continued as new: watch the new run
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                watch.result(remaining)
            except TimeoutError:
                raise ResultTimeout(
                    f"run {self.id} did not finish within {timeout:g}s (it goes on)"
                ) from None

    async def result_async(self, timeout: float | None = None) -> Any:
        """Awaitable twin of :meth:`result`; does not block the event loop.

        The store is read, and the end of the run awaited, on the engine's async threads
        (``runtime/kernel/_offload.py``): the loop only waits for one notification.
        """
        if timeout is not None and timeout <= 0:  # one look: is it over already?
            look = await _value(self._engine._offload(self._look, self.id))
            if look[1]:
                return look[2]
            raise ResultTimeout(f"run {self.id} did not finish within 0s (it goes on)")
        fut = self._engine._offload(self._result_promise)
        waiter = _value(fut)
        if timeout is None:
            return await waiter
        # One timer on the loop, not ``wait_for``'s extra task per call: ten thousand waits
        # in flight are ten thousand timers.
        timer = waiter.get_loop().call_later(timeout, _expire, waiter)
        try:
            return await waiter
        except TimeoutError:
            if fut.done():  # it ended just as the time ran out (or failed with a timeout)
                return fut.result()
            raise ResultTimeout(
                f"run {self.id} did not finish within {timeout:g}s (it goes on)"
            ) from None
        finally:
            timer.cancel()

    def _result_promise(self) -> Promise[Any]:
        """A promise of the run's result (or error), checked on an offload thread.

        Each look registers a watch first and reads the outcome second (see :meth:`_look`);
        when the watch fires the next look runs, also off the loop, from the last run of a
        continue-as-new chain seen so far.
        """
        waiting = _ResultWait(self)
        waiting.check()
        return waiting.out

    def logs(self, step: str | None = None, *, attempt: int | None = None) -> dict[str, Any]:
        """What this run's steps logged through ``ctx.log``: see :meth:`Engine.logs`."""
        logs: dict[str, Any] = self._engine.logs(self.id, step, attempt=attempt)
        return logs

    def history(self) -> list[dict[str, Any]]:
        """What happened to this run, oldest first: see :meth:`Engine.history`."""
        history: list[dict[str, Any]] = self._engine.history(self.id)
        return history

    def progress(self) -> list[dict[str, Any]]:
        """Item counts of the run's fan-outs (for_each, batch, ``ctx.map``), as recorded.

        Each entry has ``path``, ``kind``, ``total``, ``succeeded``, ``failed``,
        ``cancelled`` and ``pending``.
        """
        return self._engine._read(fanout_progress, self._latest())

    def cancel(self, reason: str = "") -> bool:
        """Cancel the run: running steps are killed, pending ones never start.

        A code workflow's function is told (``asyncio.CancelledError`` where it waits) and
        may run clean-up steps first; a graph workflow's ``on_cancel`` handler runs. Until
        then the run is still running; ``result`` raises once it has ended.

        Args:
            reason: recorded and carried by the :class:`RunCancelled` that ``result`` raises.

        Returns:
            True if the run was active and is now cancelled (durably); False if it had
            already finished.
        """
        return self._engine._cancel(self.id, reason).result()

    async def cancel_async(self, reason: str = "") -> bool:
        """Awaitable twin of :meth:`cancel`."""
        cancelled: bool = await _value(self._engine._offload(self._engine._cancel, self.id, reason))
        return cancelled

    def terminate(self, reason: str = "") -> bool:
        """End the run cancelled at once, as Temporal's terminate.

        Its steps are killed, and neither its code (a code workflow's) nor its
        ``on_cancel`` handler is told. Also what ends a run that is cleaning up after
        :meth:`cancel` without waiting for it.

        Returns:
            True if the run was active and is now cancelled; False if it had finished.
        """
        return self._engine._cancel(self.id, reason, terminate=True).result()

    # -- code workflows: signals, queries, updates -------------------------------------------

    def signal(
        self,
        name: str,
        payload: Any = None,
        *,
        args: Sequence[Any] | None = None,
        idempotency_key: str | None = None,
    ) -> bool:
        """Send signal ``name`` to a code workflow run; returns once it is durable.

        The run receives it through ``ctx.wait_for_signal(name)`` or ``ctx.on_signal``.

        Args:
            name: the signal's name.
            payload: its data: the handler's one argument (none: a handler that takes no
                argument is called with none).
            args: instead of ``payload``, the handler's arguments: ``args=[a, b]`` calls
                ``fn(a, b)`` (``ctx.wait_for_signal`` returns the list).
            idempotency_key: a signal with a key this run has seen before is dropped, so a
                client may retry safely.

        Returns:
            True if delivered; False if dropped as a duplicate of an earlier key.

        Raises:
            ClientError: the run is finished, or is not a code workflow's.
            InvalidPayload: the payload cannot be stored.
        """
        engine = self._engine
        call = SignalCall(self.id, name, payload, args, idempotency_key)
        if engine._interceptors:
            fresh: bool = engine._through("signal", call, self._send_signal)
            return fresh
        return self._send_signal(call)

    def _send_signal(self, call: SignalCall) -> bool:
        engine = self._engine
        fut = engine._signal(
            self._latest(), call.name, call.payload, call.idempotency_key, call.args
        )
        fresh: bool = fut.result()
        return fresh

    async def signal_async(
        self,
        name: str,
        payload: Any = None,
        *,
        args: Sequence[Any] | None = None,
        idempotency_key: str | None = None,
    ) -> bool:
        """Awaitable twin of :meth:`signal`."""
        if self._engine._interceptors:
            import asyncio

            return await asyncio.to_thread(
                self.signal, name, payload, args=args, idempotency_key=idempotency_key
            )
        fresh: bool = await _value(
            self._engine._offload(
                lambda: self._engine._signal(self._latest(), name, payload, idempotency_key, args)
            )
        )
        return fresh

    def query(self, name: str, *args: Any, timeout: float | None = 30.0) -> Any:
        """Ask a code workflow run's ``ctx.on_query(name, fn)`` handler: ``fn(*args)``.

        Answered from the run's current state; nothing is recorded. A run not in memory is
        rebuilt by replay first.

        Raises:
            ClientError: no such handler, or the run is finished or not a code workflow's.
        """

        def last(call: QueryCall) -> Any:
            fut = self._engine._query(self._latest(), call.name, call.args)
            try:
                return fut.result(timeout)
            except TimeoutError:
                raise ResultTimeout(f"query {call.name!r} of run {self.id}: no answer") from None

        call = QueryCall(self.id, name, tuple(args))
        if self._engine._interceptors:
            return self._engine._through("query", call, last)
        return last(call)

    async def query_async(self, name: str, *args: Any) -> Any:
        """Awaitable twin of :meth:`query`."""
        if self._engine._interceptors:
            import asyncio

            return await asyncio.to_thread(self.query, name, *args)
        return await _value(
            self._engine._offload(lambda: self._engine._query(self._latest(), name, args))
        )

    def update(self, name: str, payload: Any = None, *, timeout: float | None = None) -> Any:
        """Call a code workflow run's ``ctx.on_update(name, fn)`` handler and return its result.

        The update is recorded in the run's history before the handler runs; the handler
        may await steps, and its return value comes back once what it did is durable.

        Raises:
            ClientError: no such handler, or the run is finished or not a code workflow's.
            ResultTimeout: ``timeout`` passed first (the update goes on).
            Exception: whatever the handler raised.
        """

        def last(call: UpdateCall) -> Any:
            fut = self._engine._update(self._latest(), call.name, call.payload)
            try:
                return fut.result(timeout)
            except TimeoutError:
                raise ResultTimeout(
                    f"update {call.name!r} of run {self.id} did not finish within {timeout:g}s"
                ) from None

        call = UpdateCall(self.id, name, payload)
        if self._engine._interceptors:
            return self._engine._through("update", call, last)
        return last(call)

    async def update_async(self, name: str, payload: Any = None) -> Any:
        """Awaitable twin of :meth:`update`."""
        if self._engine._interceptors:
            import asyncio

            return await asyncio.to_thread(self.update, name, payload)
        return await _value(
            self._engine._offload(lambda: self._engine._update(self._latest(), name, payload))
        )

    def inspect(self) -> RunDetails:
        """Everything recorded about the run (same as ``engine.inspect(run.id)``)."""
        return self._engine._read(inspect_run, self.id)

    # -- helpers ---------------------------------------------------------------------------

    def _watch(self) -> Promise[None]:
        return self._engine._watch(self.id)

    def _latest(self) -> str:
        """The id of the last run of this run's continue-as-new chain (its own if none)."""
        found = self._engine._read(final_run, self.id)
        return self.id if found is None else found[0]

    def _look(self, current: str) -> tuple[Promise[None], bool, Any, str]:
        """Watch run ``current``, then read its chain's outcome: one read of the store.

        Returns ``(watch, finished, result, last run id)`` and raises the run's error if it
        failed. The watch comes first, so a run that ends between the two is not missed.
        A watch this look will not wait on (the run is over, or continued as new) is
        released at once: registered after the run ended, nothing else would ever
        complete it, and the engine would keep it for its lifetime.
        """
        engine = self._engine
        watch = engine._watch(current)
        try:
            latest, status, result, error = engine._read(chain_outcome, current)
        except BaseException:
            engine._unwatch(current)
            raise
        if status.terminal or latest != current:
            engine._unwatch(current)
        if error is not None:
            raise error
        return watch, status.terminal, result, latest


class _ResultWait:
    """The looks of one ``result_async`` until the run is over (see ``_result_promise``).

    An object, not two closures that call each other: those form a reference cycle per
    wait, and ten thousand waits leave cyclic garbage that only a full collection frees,
    which holds the GIL (and the event loop) for tens of milliseconds.
    """

    __slots__ = ("current", "handle", "out")

    def __init__(self, handle: RunHandle) -> None:
        self.handle = handle
        self.current = handle.id  # the last run of the continue-as-new chain seen so far
        self.out: Promise[Any] = Promise()

    def check(self) -> None:
        try:
            watch, finished, value, latest = self.handle._look(self.current)
        except BaseException as exc:
            self.out.set_exception(exc)
            return
        if finished:
            self.out.set_result(value)
        elif latest != self.current:
            self.current = latest
            self.handle._engine._offload(self.check)
        else:
            watch.add_done_callback(self.woken)

    def woken(self, watch: Promise[None]) -> None:
        exc = watch.exception()
        if exc is not None:
            self.out.set_exception(exc)
        else:
            self.handle._engine._offload(self.check)  # not on the thread that completed it


class _LoopBridge:
    """Completes asyncio futures from other threads with one loop wake-up per burst.

    ``call_soon_threadsafe`` writes to the loop's self-pipe on every call; when a group
    commit finishes four hundred runs at once, one wake-up serves them all.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: deque[tuple[asyncio.Future[Any], Promise[Any]]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def complete(self, waiter: asyncio.Future[Any], fut: Promise[Any]) -> None:
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
        pending = self._pending
        # A bounded share per loop turn: a group commit that ends thousands of waits would
        # otherwise hold the loop for all of them (and their tasks' next steps) at once.
        for _ in range(min(len(pending), _DRAIN_SHARE)):
            waiter, fut = pending.popleft()
            _settle(waiter, fut)
        with self._lock:
            # Under the lock that complete() checks the flag with: an item appended after
            # this check finds the flag down and schedules a drain of its own.
            if pending:
                self._loop.call_soon(self._drain)  # the rest after the loop's other work
                return
            self._scheduled = False


#: Futures settled per turn of the loop (each wakes a task that runs in the next turn).
_DRAIN_SHARE = 64

_bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBridge] = (
    weakref.WeakKeyDictionary()
)


def _value(fut: Promise[Any]) -> asyncio.Future[Any]:
    """An asyncio future of the running loop that settles as ``fut`` does: value or error.

    Awaiting it never cancels ``fut`` (other waiters share it). A plain function, not a
    coroutine: each await of the async API costs one asyncio future and no frames of ours.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()
    if fut.done():
        _settle(waiter, fut)
        return waiter
    bridge = _bridges.get(loop)
    if bridge is None:
        bridge = _bridges[loop] = _LoopBridge(loop)
    fut.add_done_callback(_Wake(bridge, waiter))
    return waiter


class _Wake:
    """The callback that hands a completed promise to its loop's bridge.

    One slotted object per wait (a partial of a bound method would be three).
    """

    __slots__ = ("bridge", "waiter")

    def __init__(self, bridge: _LoopBridge, waiter: asyncio.Future[Any]) -> None:
        self.bridge = bridge
        self.waiter = waiter

    def __call__(self, fut: Promise[Any]) -> None:
        self.bridge.complete(self.waiter, fut)


async def _wait(fut: Promise[Any]) -> None:
    """Await a promise's completion (raising its error), ignoring its value."""
    await _value(fut)


def _settle(waiter: asyncio.Future[Any], fut: Promise[Any]) -> None:
    if waiter.done():  # cancelled, or timed out (``_expire``)
        return
    exc = fut.exception()
    if exc is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(fut.result())


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
