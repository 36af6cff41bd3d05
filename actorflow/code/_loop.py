"""A deterministic asyncio event loop that runs one code workflow, one activation at a time.

The workflow's coroutine runs on this loop, on its supervisor's shard thread, only while the
supervisor drives it (:meth:`DeterministicLoop.run_until_idle`); between activations it is a
suspended coroutine holding no thread. Ready callbacks run strictly in the order they were
scheduled, and there are no I/O or wall-clock timers, so the same inputs always give the same
interleaving. ``asyncio.gather``, ``asyncio.wait``, tasks and ``TaskGroup`` work unchanged,
because they only need futures and ``call_soon``. A timer (``asyncio.sleep(n)`` with n > 0,
``asyncio.wait_for``, ``asyncio.timeout``) would depend on the wall clock and could not be
replayed: it raises a clear error pointing at ``ctx.sleep``.

This follows Temporal's Python SDK, whose workflow instance is also an event loop of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
from asyncio import events
from collections.abc import Callable, Coroutine, Generator
from typing import Any

__all__ = ["DeterministicLoop", "WorkflowTimerError"]


class WorkflowTimerError(RuntimeError):
    """Workflow code asked the event loop for a wall-clock timer."""


class DeterministicLoop(asyncio.AbstractEventLoop):
    """Runs ready callbacks in FIFO order when told to; nothing else.

    Args:
        now: the workflow's current (recorded) time, for ``loop.time()``.
        on_error: called with the context of an exception no task caught (a failing
            callback or signal handler): the run panics.
    """

    def __init__(
        self, now: Callable[[], float], on_error: Callable[[dict[str, Any]], None]
    ) -> None:
        # A list, not a deque: an empty deque is 760 bytes and 10,000 waiting runs keep one.
        self._ready: list[asyncio.Handle] = []
        self._now = now
        self._on_error = on_error
        self._closed = False
        self._running = False
        self.tasks: set[asyncio.Task[Any]] = set()  # pending tasks (done ones leave)

    # -- what asyncio's futures and tasks need -----------------------------------------------

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        raise RuntimeError(
            "a workflow's event loop is driven by its run alone; other threads cannot "
            "schedule work on it"
        )

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        raise WorkflowTimerError(
            "a code workflow cannot use wall-clock timers (asyncio.sleep with a delay, "
            "asyncio.wait_for, asyncio.timeout): they would not replay. Use "
            "`await ctx.sleep(name, duration)` for a durable timer, or a `timeout=` argument "
            "of ctx.wait_for_signal / ctx.wait_for_event"
        )

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_later(0.0, callback, *args, context=context)

    def time(self) -> float:
        return self._now()

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=self, name=name, context=context)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        pass

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        if context.get("exception") is None and "destroyed but it is pending" in str(
            context.get("message", "")
        ):
            return
        self._on_error(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self._on_error(context)

    def get_exception_handler(self) -> None:
        return None

    def set_exception_handler(self, handler: Any) -> None:
        raise RuntimeError("a workflow's event loop reports errors to its run")

    # -- driving -------------------------------------------------------------------------------

    def run_until_idle(self) -> None:
        """Run ready callbacks (and those they schedule) until none is left."""
        if not self._ready:
            return
        previous = events._get_running_loop()
        events._set_running_loop(self)
        self._running = True
        try:
            # FIFO: what a callback schedules runs after everything scheduled before it.
            while self._ready:
                batch, self._ready = self._ready, []
                for handle in batch:
                    if not handle._cancelled:
                        handle._run()
        finally:
            self._running = False
            events._set_running_loop(previous)

    def release(self) -> None:
        """After :meth:`close`: drop the tasks, the queue and the callbacks into the driver."""
        self.tasks.clear()
        self._ready = []
        self._now = _stopped_clock
        self._on_error = _ignore_error

    def close(self) -> None:
        """Throw every suspended coroutine away without running it further.

        Each pending task's coroutine is closed (its ``finally`` blocks run, and any command
        they try to issue is refused by the run), and the "task destroyed but pending" warning
        is silenced: an evicted run is rebuilt by replay, nothing was lost.
        """
        if self._closed:
            return
        self._closed = True
        previous = events._get_running_loop()
        events._set_running_loop(self)
        try:
            for task in list(self.tasks):
                if task.done():
                    continue
                task._log_destroy_pending = False  # type: ignore[attr-defined]
                coro = task.get_coro()
                try:
                    coro.close()
                except BaseException:
                    pass
        finally:
            events._set_running_loop(previous)
        self._ready.clear()

    # -- everything else an event loop has: not available in a workflow ---------------------

    def _unsupported(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "this is not available inside a code workflow: I/O, threads and subprocesses "
            "belong in steps (await ctx.step(name, fn, ...)), which run in worker processes"
        )

    run_forever = run_until_complete = stop = _unsupported
    shutdown_asyncgens = shutdown_default_executor = _unsupported
    run_in_executor = set_default_executor = getaddrinfo = getnameinfo = _unsupported  # type: ignore[assignment]
    create_connection = create_server = sendfile = start_tls = _unsupported
    create_unix_connection = create_unix_server = connect_accepted_socket = _unsupported
    create_datagram_endpoint = connect_read_pipe = connect_write_pipe = _unsupported
    subprocess_shell = subprocess_exec = add_reader = remove_reader = _unsupported  # type: ignore[assignment]
    add_writer = remove_writer = sock_recv = sock_recv_into = sock_recvfrom = _unsupported  # type: ignore[assignment]
    sock_recvfrom_into = sock_sendall = sock_sendto = sock_connect = sock_accept = _unsupported
    sock_sendfile = add_signal_handler = remove_signal_handler = _unsupported  # type: ignore[assignment]
    set_task_factory = get_task_factory = _unsupported


def _stopped_clock() -> float:
    return 0.0  # a closed loop runs nothing that would read it


def _ignore_error(context: dict[str, Any]) -> None:
    return None  # a closed loop's stray errors have no run left to fail
