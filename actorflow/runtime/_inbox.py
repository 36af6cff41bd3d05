"""Actor base class and the two special inboxes the runtime needs.

pykka lets an actor choose its inbox (anything with ``put``, ``get`` and ``empty``):

- :class:`Actor` uses ``queue.SimpleQueue``, about a third cheaper per message than pykka's
  default ``queue.Queue``; every message between actors pays this, so it matters.
- :class:`SelectorInbox` makes the dispatcher's own thread also wait on its workers' pipes and
  process sentinels, and on a deadline: I/O and timeouts arrive as ordinary messages, so the
  dispatcher's state has exactly one owner and no locks.
- :class:`ClockInbox` lets the scheduler sleep until its next timer on an injected
  :class:`~actorflow._clock.Clock`, so tests can skip time.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from actorflow._clock import Clock, SystemClock

__all__ = ["Actor", "ClockInbox", "IoReady", "SelectorInbox", "Tick"]


class Actor(pykka.ThreadingActor):
    """A pykka threading actor with a lighter inbox."""

    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()


@dataclass(frozen=True, slots=True)
class IoReady:
    """Some of the dispatcher's waitables are ready (pipes readable, processes exited)."""

    ready: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Tick:
    """A deadline the owning actor asked to be woken at has passed."""


_TICK = Tick()


class _Envelope:
    """What pykka's actor loop reads from an inbox: a message and an optional reply future."""

    __slots__ = ("message", "reply_to")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.reply_to = None


class SelectorInbox:
    """An inbox whose ``get`` also waits on pipes, sentinels and a deadline.

    The owning actor calls :meth:`set_waitables` (connections and process sentinels) and sets
    :attr:`timeout_fn` (seconds until its next deadline, or None) from its own thread only.
    Producers on other threads append and, if the owner sleeps, write one byte to a wake-up
    pipe; the owner sets the sleeping flag before its final emptiness check, so a wake-up is
    never lost. The poll object persists between waits (``multiprocessing.connection.wait``
    would build and fill a new one on every call, on the dispatcher's hottest path).
    """

    def __init__(self) -> None:
        self._queue: deque[Any] = deque()
        self._sleeping = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._poll = select.poll()
        self._poll.register(self._rfd, select.POLLIN)
        self._by_fd: dict[int, Any] = {}
        self.timeout_fn: Callable[[], float | None] = lambda: None

    def set_waitables(self, waitables: list[Any]) -> None:
        """Wait on these objects (anything with ``fileno()``, or an int fd) from now on."""
        wanted = {(w if isinstance(w, int) else w.fileno()): w for w in waitables}
        for fd in list(self._by_fd):
            if fd not in wanted:
                self._poll.unregister(fd)
                del self._by_fd[fd]
        for fd, obj in wanted.items():
            if fd not in self._by_fd:
                self._poll.register(fd, select.POLLIN)
            self._by_fd[fd] = obj

    def put(self, envelope: Any) -> None:
        self._queue.append(envelope)
        if self._sleeping:
            try:
                os.write(self._wfd, b"\0")
            except (BlockingIOError, OSError):
                pass  # the pipe is already full of wake-ups, or closed at shutdown

    def empty(self) -> bool:
        return not self._queue

    def get(self) -> Any:
        q = self._queue
        while True:
            if q:
                return q.popleft()
            self._sleeping = True
            if q:  # raced with a producer that saw _sleeping False
                self._sleeping = False
                continue
            timeout = self.timeout_fn()
            if timeout is not None and timeout <= 0:
                self._sleeping = False
                return _Envelope(_TICK)
            try:
                events = self._poll.poll(None if timeout is None else timeout * 1000.0)
            except InterruptedError:
                events = []
            self._sleeping = False
            if not events:
                if timeout is not None:
                    return _Envelope(_TICK)
                continue
            by_fd = self._by_fd
            io = tuple(by_fd[fd] for fd, _ in events if fd in by_fd)
            if len(io) != len(events):
                with contextlib.suppress(BlockingIOError):
                    os.read(self._rfd, 4096)
            if io:
                return _Envelope(IoReady(io))

    def close(self) -> None:
        """Close the wake-up pipe (after the actor stopped)."""
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


class ClockInbox:
    """An inbox whose ``get`` sleeps until a message arrives or the owner's next due time.

    pykka creates inboxes before the actor's ``__init__`` runs, so the owner sets
    :attr:`clock` (default: the system clock) and :attr:`due_fn` afterwards.
    """

    def __init__(self) -> None:
        self.clock: Clock = SystemClock()
        self._queue: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self.due_fn: Callable[[], float | None] = lambda: None

    def put(self, envelope: Any) -> None:
        with self._cond:
            self._queue.append(envelope)
            self._cond.notify()

    def empty(self) -> bool:
        return not self._queue

    def get(self) -> Any:
        with self._cond:
            while True:
                if self._queue:
                    return self._queue.popleft()
                due = self.due_fn()
                if due is not None and self.clock.now() >= due:
                    return _Envelope(_TICK)
                self.clock.wait(self._cond, due)
