"""A one-shot result slot, lighter than ``concurrent.futures.Future``.

Every trigger and every waiting client needs one, and the store writer completes thousands a
second: ``Future`` builds a Condition (and its RLock) per instance and notifies under it. A
:class:`Promise` is one raw lock, held until the result arrives; waiting is acquiring it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Countdown", "Promise", "chain", "failed", "resolved", "then"]

T = TypeVar("T")
_UNSET: Any = object()
# One lock for every promise's callback list: held for a few instructions, never while
# running a callback, so sharing it costs nothing and saves a lock per promise.
_callbacks_lock = threading.Lock()


class Promise(Generic[T]):
    """Completed once, by any thread; waited on by any number of threads."""

    __slots__ = ("_callbacks", "_error", "_gate", "_value")

    def __init__(self) -> None:
        self._gate = threading.Lock()
        self._gate.acquire()  # released (for good) when completed
        self._value: Any = _UNSET
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Promise[T]], Any]] | None = []

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
        self._gate.release()
        for callback in callbacks:
            callback(self)

    def add_done_callback(self, fn: Callable[[Promise[T]], Any]) -> None:
        """Call ``fn(self)`` when completed (at once, if already)."""
        with _callbacks_lock:
            if self._callbacks is not None:
                self._callbacks.append(fn)
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
            if not self._gate.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
                raise TimeoutError
            self._gate.release()  # let the other waiters through
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


def chain(source: Promise[Any], target: Promise[Any]) -> None:
    """Complete ``target`` as ``source`` completes (value or error)."""

    def done(fut: Promise[Any]) -> None:
        exc = fut.exception()
        if exc is not None:
            target.set_exception(exc)
        else:
            target.set_result(fut.result())

    source.add_done_callback(done)


def then(source: Promise[Any], value: Any) -> Promise[Any]:
    """A promise that completes with ``value`` once ``source`` succeeds (or with its error)."""
    out: Promise[Any] = Promise()

    def done(fut: Promise[Any]) -> None:
        exc = fut.exception()
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(value)

    source.add_done_callback(done)
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
