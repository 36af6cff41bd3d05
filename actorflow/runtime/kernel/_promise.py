"""A one-shot result slot, lighter than ``concurrent.futures.Future``.

Every trigger and every waiting client needs one, and the store writer completes thousands a
second: ``Future`` builds a Condition (and its RLock) per instance and notifies under it. A
:class:`Promise` is one object until someone needs more: its callback list is made by the
first callback, and its lock by the first thread that blocks in :meth:`Promise.result`
(held until the result arrives; waiting is acquiring it). Most promises are awaited through
one callback and never block a thread, and ten thousand runs in flight hold tens of
thousands of them: each object fewer is less for the cyclic garbage collector to walk, and
its full collections hold the GIL (and every event loop in the process) while they do.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Countdown", "Promise", "chain", "failed", "resolved", "then"]

T = TypeVar("T")
_UNSET: Any = object()
_NO_CALLBACKS: Any = ()  # the callbacks of a pending promise that has none yet
# One lock for every promise's callback list: held for a few instructions, never while
# running a callback, so sharing it costs nothing and saves a lock per promise.
_callbacks_lock = threading.Lock()


class Promise(Generic[T]):
    """Completed once, by any thread; waited on by any number of threads."""

    __slots__ = ("_callbacks", "_error", "_gate", "_value")

    def __init__(self) -> None:
        # Made by the first thread that blocks in result(); released (for good) when done.
        self._gate: threading.Lock | None = None
        self._value: Any = _UNSET
        self._error: BaseException | None = None
        # () while pending with no callback, the callback itself while it is the only one
        # (the common case: one awaiting caller), a list of them once there are more, and
        # None once completed.
        self._callbacks: Any = _NO_CALLBACKS

    def done(self) -> bool:
        """True once completed."""
        return self._callbacks is None

    def set_result(self, value: T) -> None:
        """Complete with ``value`` (a second completion is ignored)."""
        self._complete(value, None)

    def set_exception(self, error: BaseException) -> None:
        """Complete with ``error`` (a second completion is ignored)."""
        self._complete(None, error)

    def _complete(self, value: Any, error: BaseException | None) -> None:
        with _callbacks_lock:
            callbacks = self._callbacks
            if callbacks is None:
                return
            self._value, self._error = value, error
            self._callbacks = None  # detached: nobody appends to it any more
            gate = self._gate
        if gate is not None:
            gate.release()
        if type(callbacks) is list:
            for callback in callbacks:
                callback(self)
        elif callbacks is not _NO_CALLBACKS:
            callbacks(self)

    def add_done_callback(self, fn: Callable[[Promise[T]], Any]) -> None:
        """Call ``fn(self)`` when completed (at once, if already)."""
        with _callbacks_lock:
            callbacks = self._callbacks
            if callbacks is not None:
                if type(callbacks) is list:
                    callbacks.append(fn)
                elif callbacks is _NO_CALLBACKS:
                    self._callbacks = fn
                else:
                    self._callbacks = [callbacks, fn]
                return
        fn(self)

    def exception(self) -> BaseException | None:
        """The error, if completed with one (does not wait)."""
        return self._error

    def result(self, timeout: float | None = None) -> T:
        """Wait for completion and return the value (or raise the error).

        Raises:
            TimeoutError: not completed within ``timeout`` seconds.
        """
        if self._callbacks is not None:
            with _callbacks_lock:  # checked again under the lock that completion takes
                gate = self._gate
                if self._callbacks is None:
                    gate = None
                elif gate is None:
                    gate = self._gate = threading.Lock()
                    gate.acquire()
            if gate is not None:
                if not gate.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
                    raise TimeoutError
                gate.release()  # let the other waiters through
        if self._error is not None:
            raise self._error
        value: T = self._value
        return value


class Countdown:
    """Completes ``promise`` after ``n`` results, or with the first error.

    Lets one promise stand for many replies (``engine.trigger_many``) without a promise each.
    """

    __slots__ = ("_left", "_lock", "promise")

    def __init__(self, n: int) -> None:
        self.promise: Promise[None] = Promise()
        self._left = n
        self._lock = threading.Lock()
        if n <= 0:
            self.promise.set_result(None)

    def set_result(self, _: Any = None) -> None:
        """One reply arrived."""
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self.promise.set_result(None)

    def set_exception(self, error: BaseException) -> None:
        """One reply failed: fail the whole."""
        self.promise.set_exception(error)

    def done(self) -> bool:
        """True once every reply arrived or one failed."""
        return self.promise.done()


# ``chain`` and ``then`` register a bound method or a small partial, not a closure: a closure
# is a function, its cell tuple and a cell per name, and a trigger or a wait in flight holds
# one of these for as long as it waits (see the module docstring on why that matters).


def _copy(target: Promise[Any], source: Promise[Any]) -> None:
    exc = source.exception()
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())


def _value_after(target: Promise[Any], value: Any, source: Promise[Any]) -> None:
    exc = source.exception()
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(value)


def chain(source: Promise[Any], target: Promise[Any]) -> None:
    """Complete ``target`` as ``source`` completes (value or error)."""
    source.add_done_callback(functools.partial(_copy, target))


def then(source: Promise[Any], value: Any) -> Promise[Any]:
    """A promise that completes with ``value`` once ``source`` succeeds (or with its error)."""
    out: Promise[Any] = Promise()
    source.add_done_callback(functools.partial(_value_after, out, value))
    return out


def resolved(value: Any) -> Promise[Any]:
    """A promise already completed with ``value``."""
    fut: Promise[Any] = Promise()
    fut.set_result(value)
    return fut


def failed(error: BaseException) -> Promise[Any]:
    """A promise already completed with ``error``."""
    fut: Promise[Any] = Promise()
    fut.set_exception(error)
    return fut
