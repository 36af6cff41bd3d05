"""Starting worker processes.

Workers start with ``forkserver`` (the default on Linux) or ``spawn`` (the default elsewhere:
see :mod:`actorflow._platform`), never plain ``fork``: the engine has threads and an open LMDB
environment, neither of which survives a fork. The forkserver preloads the worker module, so a
replacement worker is ready in milliseconds; with ``spawn`` each worker imports it, and
``preload``, itself. Starting a process blocks
for a while, so it happens on a :class:`Spawner` thread, never on the dispatcher's.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.spawn as mp_spawn
import os
import queue
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from actorflow.workers._main import worker_main

__all__ = ["Spawner", "mp_context", "spawn_worker"]

log = logging.getLogger("actorflow.workers")

_WORKER_MODULE = "actorflow.workers._main"


def mp_context(start_method: str, preload: tuple[str, ...] = ()) -> BaseContext:
    """Return the multiprocessing context for workers.

    Args:
        start_method: ``"forkserver"`` or ``"spawn"``.
        preload: extra modules for the forkserver to import once (it is shared per process,
            so only the first engine's list takes effect there; workers import ``preload``
            themselves as well).
    """
    if start_method not in ("forkserver", "spawn"):
        raise ValueError(f"start_method: expected 'forkserver' or 'spawn', got {start_method!r}")
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        # psutil: a forkserver worker watches the engine's pid with it (workers/_main.py).
        ctx.set_forkserver_preload([_WORKER_MODULE, "psutil", *preload])
    return ctx


_spawning = threading.local()
_patch_lock = threading.Lock()
_patched = False


def _install_main_filter() -> None:
    """Keep worker processes from re-running the user's main script.

    ``forkserver`` and ``spawn`` children normally import ``__main__`` again (that is why
    multiprocessing scripts need an ``if __name__ == "__main__":`` guard). A worker does not
    need it: functions and classes from ``__main__`` reach it by value through cloudpickle. So
    for processes started by actorflow, and only for those (a thread-local flag marks them),
    the main-module entries are dropped from the data the child prepares itself with.
    """
    global _patched
    with _patch_lock:
        if _patched:
            return
        original = mp_spawn.get_preparation_data

        def get_preparation_data(name: str) -> dict[str, Any]:
            data: dict[str, Any] = original(name)
            if getattr(_spawning, "active", False):
                data.pop("init_main_from_path", None)
                data.pop("init_main_from_name", None)
            return data

        mp_spawn.get_preparation_data = get_preparation_data
        _patched = True


def spawn_worker(
    ctx: BaseContext,
    preload: tuple[str, ...],
    shm_threshold: int = 0,
    tracing: bool = False,
    interceptors: bytes = b"",
) -> tuple[BaseProcess, Connection]:
    """Start one worker process; return it and the engine's end of its pipe."""
    _install_main_filter()
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(  # type: ignore[attr-defined]
        target=worker_main,
        args=(child, list(sys.path), preload, shm_threshold, tracing, os.getpid(), interceptors),
        name="actorflow-worker",
        daemon=True,
    )
    _spawning.active = True
    try:
        proc.start()
    finally:
        _spawning.active = False
        child.close()
    return proc, parent


class Spawner:
    """A thread that starts worker processes on request and reports each result.

    Args:
        ctx: the multiprocessing context.
        preload: modules each worker imports before it says hello.
        report: called on the spawner thread with ``(wid, proc, conn, error)``.
        shm_threshold: workers send output buffers above this through shared memory.
        tracing: workers run steps inside their spans' trace context.
        interceptors: the engine's interceptors, pickled, for each worker.
    """

    def __init__(
        self,
        ctx: BaseContext,
        preload: tuple[str, ...],
        report: Callable[[int, BaseProcess | None, Connection | None, BaseException | None], Any],
        shm_threshold: int = 0,
        tracing: bool = False,
        interceptors: bytes = b"",
    ) -> None:
        self._ctx = ctx
        self._preload = preload
        self._interceptors = interceptors
        self._shm_threshold = shm_threshold
        self._tracing = tracing
        self._report = report
        self._requests: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        # Not a daemon: with spawn, a worker's parent-death signal follows the thread that
        # started it, so this thread lives exactly as long as the pool.
        self._thread = threading.Thread(target=self._loop, name="actorflow-spawner")
        self._thread.start()

    def request(self, wid: int) -> None:
        """Start worker ``wid`` soon."""
        self._requests.put(wid)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread after the requests already queued."""
        self._requests.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            wid = self._requests.get()
            if wid is None:
                return
            try:
                proc, conn = spawn_worker(
                    self._ctx,
                    self._preload,
                    self._shm_threshold,
                    self._tracing,
                    self._interceptors,
                )
            except Exception as exc:
                log.error("could not start worker %d: %s", wid, exc)
                self._report(wid, None, None, exc)
            else:
                self._report(wid, proc, conn, None)
