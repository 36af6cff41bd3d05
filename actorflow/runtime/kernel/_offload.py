"""Where the async API does its blocking part: a few threads beside the event loop.

Every ``*_async`` method of the engine and of run handles hands its synchronous part (store
reads, encoding a payload, telling an actor, a request to the leader) to :class:`Offload`
and awaits the promise it returns through the loop bridge (``_handle._wait``). The loop
thread itself only queues a call and later settles a future: no store read, no commit wait
and no actor ask runs on it, so a health check on the same loop keeps answering while
thousands of triggers and waits are in flight.

A call may return a :class:`~actorflow.runtime.kernel._promise.Promise` (a trigger's durability, a
run's end): the offload promise then completes with it, and the thread is free meanwhile.
Calls here must not block on such a promise themselves: they would hold one of few threads.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from actorflow.runtime.kernel._promise import Promise, chain

__all__ = ["Offload", "shared"]

log = logging.getLogger("actorflow.engine")

#: Threads: the work is short and mostly holds the GIL, so more would only contend for it.
_THREADS = 2


class Offload:
    """Runs calls on a few daemon threads; each call's promise carries its outcome."""

    def __init__(self, threads: int = _THREADS) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Promise[Any]]] = (
            queue.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._loop, name=f"actorflow-async-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Promise[Any]:
        """Run ``fn(*args)`` on a thread; the promise completes with its result.

        If the result is a promise, the returned promise completes when it does.
        """
        out: Promise[Any] = Promise()
        self._queue.put((fn, args, out))
        return out

    def _loop(self) -> None:
        while True:
            fn, args, out = self._queue.get()
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting caller, not lost here
                out.set_exception(exc)
                continue
            if isinstance(result, Promise):
                chain(result, out)
            else:
                out.set_result(result)


_shared: Offload | None = None
_shared_lock = threading.Lock()


def shared() -> Offload:
    """The process's offload threads, made at the first async call and used by every engine.

    One pair per process, not per engine: the threads outlive any engine (a stopped
    engine's ``*_async`` reads still need them), so a process that makes many engines (a
    test suite, a worker that reloads) would otherwise collect two idle threads for each.
    The calls are short by contract, so engines sharing them do not wait on each other.
    """
    global _shared
    offload = _shared
    if offload is None:
        with _shared_lock:
            if _shared is None:
                _shared = Offload()
            offload = _shared
    return offload
