"""``engine.lifespan``: start the engine with a service's lifespan, stop it at shutdown.

An ASGI app mounted in another (``app.mount("/flows", engine.asgi())``) gets no lifespan
events: Starlette and FastAPI send them to the outer app only. So the outer app's lifespan
must start the engine: ``FastAPI(lifespan=engine.lifespan)``, or ``async with
engine.lifespan(app): ...`` inside a lifespan of its own. ``engine.asgi()``'s own lifespan
(when it is the top-level app, as under ``actorflow serve``) is this one too.

``Engine.start`` and ``Engine.stop`` block (the store, the actors, the worker processes,
the drain), so both run in a thread of their own while the event loop serves on. An engine
that is already running when the lifespan begins was started by someone else: the lifespan
leaves it alone, and does not stop it at the end either.

This module imports no web framework; asyncio is imported only when a lifespan is used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from actorflow.engine._engine import Engine

__all__ = ["HINT", "lifespan", "wired"]

T = TypeVar("T")

#: What a request to an engine's app that nothing started is told (503).
HINT = (
    "the engine is not running: nothing started it. An app mounted in another "
    '(app.mount("/flows", engine.asgi())) gets no lifespan events, so start the engine with '
    "the outer app's lifespan: FastAPI(lifespan=engine.lifespan), Starlette(routes=..., "
    "lifespan=engine.lifespan), or `async with engine.lifespan(app):` inside your own "
    "lifespan (or call engine.start() yourself); see docs/embedding.md"
)

# Engines a lifespan has been entered for: their app says "stopped", not HINT, once they stop.
_wired: weakref.WeakSet[Engine] = weakref.WeakSet()
# Makes "not running, so start it" one step between lifespans entered at once.
_starting = threading.Lock()


def wired(engine: Engine) -> bool:
    """True once a lifespan (``engine.lifespan`` or ``engine.asgi()``'s) was entered."""
    return engine in _wired


def _start(engine: Engine) -> bool:
    """Start ``engine`` unless it runs; True if this call started it."""
    with _starting:
        if engine.running:
            return False
        engine.start()
        return True


def _in_thread(fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
    """``fn(*args)`` in a new thread; its future (cancelled before it begins: not run)."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to the awaiting lifespan, which raises it
            future.set_exception(exc)

    threading.Thread(target=run, name="actorflow-lifespan", daemon=True).start()
    return future


def _stop_once_started(
    engine: Engine, starting: concurrent.futures.Future[bool], timeout: float
) -> None:
    """Wait for a start the lifespan gave up on; stop the engine if it did start."""
    try:
        started = starting.result()
    except BaseException:  # it failed, or never began: nothing to stop
        return
    if started:
        engine.stop(drain=True, timeout=timeout)


@asynccontextmanager
async def lifespan(engine: Engine, drain_timeout: float = 30.0) -> AsyncIterator[None]:
    """Run ``engine`` for the duration of the block (see the module docstring).

    Args:
        engine: the engine to start.
        drain_timeout: seconds the stop at the end lets steps in flight finish.

    Raises:
        DefinitionError: a workflow definition is invalid (from ``Engine.start``).
        StoreError: the store cannot be opened (from ``Engine.start``).
        PoolUnavailable: worker processes could not be started (from ``Engine.start``).
    """
    _wired.add(engine)
    starting = _in_thread(_start, engine)
    try:
        started = await asyncio.wrap_future(starting)
    except asyncio.CancelledError:
        # The server gave up during start-up (Ctrl-C while booting): the start carries on in
        # its thread, so stop the engine once it is up rather than leave it running.
        threading.Thread(
            target=_stop_once_started,
            args=(engine, starting, drain_timeout),
            name="actorflow-lifespan-stop",
            daemon=True,
        ).start()
        raise
    try:
        yield
    finally:
        if started:
            await asyncio.to_thread(engine.stop, drain=True, timeout=drain_timeout)
