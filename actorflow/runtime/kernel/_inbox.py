"""Actor base class and the two special inboxes the runtime needs.

pykka lets an actor choose its inbox (anything with ``put``, ``get`` and ``empty``):

- :class:`Actor` uses ``queue.SimpleQueue``, about a third cheaper per message than pykka's
  default ``queue.Queue``; every message between actors pays this, so it matters.
- :class:`SelectorInbox` makes the dispatcher's own thread also wait on its workers' pipes and
  process sentinels, and on a deadline: I/O and timeouts arrive as ordinary messages, so the
  dispatcher's state has exactly one owner and no locks.
- :class:`ClockInbox` lets the scheduler sleep until its next timer on an injected
  :class:`~actorflow._clock.Clock`, so tests can skip time.

For the test harness, an engine can also count its work in flight (:class:`Activity`):
every message put in an actor's inbox (or made by the inbox itself, a tick) counts until the
actor has handled it, and other work (an inline step on a thread) counts while it runs. Every
piece of work that leads to more puts its successor in an inbox before it ends, so the count
drops to zero only when the whole engine is idle: then, and only then, may a test move its
clock to the next timer. Production engines do not count (one attribute test per message).
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from actorflow._clock import Clock, SystemClock

__all__ = [
    "Activity",
    "Actor",
    "ClockInbox",
    "IoReady",
    "SelectorInbox",
    "Tick",
    "Writable",
    "counting",
    "tell",
]


def tell(ref: Any, message: Any) -> None:
    """Tell an actor, unless it has stopped (at shutdown: recovery takes the work up)."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass


class Activity:
    """Work in flight in one engine: messages not yet handled, inline steps running."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._count = 0
        self._generation = 0  # bumped by every begin: "something happened since"

    def begin(self) -> None:
        """One more piece of work."""
        with self._cond:
            self._count += 1
            self._generation += 1

    def end(self) -> None:
        """One piece of work is done (after it put whatever it led to)."""
        with self._cond:
            self._count -= 1
            if self._count <= 0:
                self._count = 0
                self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Work in flight now."""
        return self._count

    @property
    def generation(self) -> int:
        """How many pieces of work have begun so far."""
        return self._generation

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is in flight; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._count == 0, timeout)


_counting = threading.local()


@contextlib.contextmanager
def counting(activity: Activity | None) -> Any:
    """Actors created on this thread inside the block count their messages in ``activity``."""
    previous = getattr(_counting, "activity", None)
    _counting.activity = activity
    try:
        yield
    finally:
        _counting.activity = previous


class _CountingInbox:
    """Wraps an inbox: a put begins a piece of work; so does a tick the inbox makes itself."""

    def __init__(self, inner: Any, activity: Activity) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_activity", activity)

    def put(self, envelope: Any) -> None:
        self._activity.begin()
        self._inner.put(envelope)

    def get(self) -> Any:
        envelope = self._inner.get()
        if type(envelope) is _Envelope:  # made by the inbox (a tick, I/O), not put
            self._activity.begin()
        return envelope

    def empty(self) -> bool:
        return bool(self._inner.empty())

    def take(self, match: Callable[[Any], bool]) -> list[Any]:
        taken: list[Any] = self._inner.take(match)
        for _ in taken:
            self._activity.end()  # never handled: no longer work in flight
        return taken

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)  # the owner sets timeout_fn, clock, due_fn


class Actor(pykka.ThreadingActor):
    """A pykka threading actor with a lighter inbox (and, under a test harness, counted)."""

    #: Set when this engine counts its work (see :class:`Activity`).
    activity: Activity | None = None

    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        activity = getattr(_counting, "activity", None)
        if activity is not None:
            self.activity = activity
            # A test engine (a harness left open) must not keep the process alive at exit.
            setattr(self, "use_daemon_thread", True)  # noqa: B010 (a ClassVar of pykka's)
            inbox = _CountingInbox(self.actor_inbox, activity)
            self.actor_inbox = inbox
            self._actor_ref.actor_inbox = inbox
            # Counted only here: production actors keep pykka's handler, with no extra call
            # per message. A subclass's own ``_handle_receive`` (work after the message)
            # runs inside, so that work still counts as part of the message.
            handle = self._handle_receive

            def counted(message: Any) -> Any:
                try:
                    return handle(message)
                finally:
                    activity.end()

            setattr(self, "_handle_receive", counted)  # noqa: B010 (shadows the method)


@dataclass(frozen=True, slots=True)
class IoReady:
    """Some of the dispatcher's waitables are ready (pipes readable, processes exited)."""

    ready: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Writable:
    """A pipe the owner asked to be told about (:meth:`SelectorInbox.want_write`) has room."""

    target: Any


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


_READ_EVENTS = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL


class _Poller:
    """``select.poll``'s interface over epoll where there is one (Linux).

    ``poll`` walks every registered descriptor on every call: with a pool of 256 workers
    (a pipe and a process sentinel each) that was ~15 us per wake-up of the dispatcher
    here, against well under 1 us for epoll, which only reports what is ready. The event
    bits of the two are the same numbers.
    """

    __slots__ = ("_epoll", "_poll")

    def __init__(self) -> None:
        epoll = getattr(select, "epoll", None)
        self._epoll = epoll() if epoll is not None else None
        self._poll = select.poll() if self._epoll is None else None

    def register(self, fd: int, mask: int) -> None:
        if self._epoll is not None:
            try:
                self._epoll.register(fd, mask)
            except FileExistsError:
                self._epoll.modify(fd, mask)
        else:
            assert self._poll is not None
            self._poll.register(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        if self._epoll is not None:
            self._epoll.modify(fd, mask)
        else:
            assert self._poll is not None
            self._poll.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        if self._epoll is not None:
            # (a descriptor already closed has left the epoll set on its own)
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)
        else:
            assert self._poll is not None
            self._poll.unregister(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        """Ready descriptors and their events, waiting at most ``timeout`` seconds."""
        if self._epoll is not None:
            ready: list[tuple[int, int]] = self._epoll.poll(-1 if timeout is None else timeout)
            return ready
        assert self._poll is not None
        return self._poll.poll(None if timeout is None else timeout * 1000.0)

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()


class SelectorInbox:
    """An inbox whose ``get`` also waits on pipes, sentinels and a deadline.

    The owning actor calls :meth:`set_waitables` (connections and process sentinels) and sets
    :attr:`timeout_fn` (seconds until its next deadline, or None) from its own thread only.
    Producers on other threads append and, if the owner sleeps, write one byte to a wake-up
    pipe; the owner sets the sleeping flag before its final emptiness check, so a wake-up is
    never lost. The poll object persists between waits (``multiprocessing.connection.wait``
    would build and fill a new one on every call, on the dispatcher's hottest path), and is
    an epoll set where there is one (see :class:`_Poller`).
    """

    def __init__(self) -> None:
        self._queue: deque[Any] = deque()
        self._sleeping = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._poll = _Poller()
        self._poll.register(self._rfd, select.POLLIN)
        self._by_fd: dict[int, Any] = {}
        self._writing: dict[int, Any] = {}  # fds with output waiting for room
        self.timeout_fn: Callable[[], float | None] = lambda: None
        # Until this time (monotonic), only messages wake the owner, not its waitables
        # (see ``quiet``); the poll set of the wake-up pipe alone, for those waits.
        self._quiet_until: float | None = None
        self._wake_only = _Poller()
        self._wake_only.register(self._rfd, select.POLLIN)
        self._tick_owed = False  # a deadline passed and the waitables were read first

    def set_waitables(self, waitables: list[Any]) -> None:
        """Wait on these objects (anything with ``fileno()``, or an int fd) from now on."""
        wanted = {(w if isinstance(w, int) else w.fileno()): w for w in waitables}
        for fd in list(self._by_fd):
            if fd not in wanted:
                self._poll.unregister(fd)
                del self._by_fd[fd]
                self._writing.pop(fd, None)
        for fd, obj in wanted.items():
            known = self._by_fd.get(fd)
            if known is None:
                self._poll.register(fd, select.POLLIN)
            elif known is not obj:  # a number reused by a new pipe: register the new one
                self._poll.unregister(fd)
                self._writing.pop(fd, None)
                self._poll.register(fd, select.POLLIN)
            self._by_fd[fd] = obj

    def want_write(self, waitable: Any, on: bool) -> None:
        """Also report (as :class:`Writable`) when ``waitable`` can take more output.

        Until called again with ``on`` False. ``waitable`` is one of the waitables. This is
        how the owner finishes a write that a full pipe cut short, without ever blocking.
        """
        fd = waitable.fileno()
        if fd not in self._by_fd:
            return
        if on:
            self._writing[fd] = waitable
            self._poll.modify(fd, select.POLLIN | select.POLLOUT)
        elif self._writing.pop(fd, None) is not None:
            self._poll.modify(fd, select.POLLIN)

    def quiet(self, until: float | None) -> None:
        """Leave the waitables unread until ``until`` (``time.monotonic``; None: no longer).

        For the owner, from its own thread. Messages and deadlines still wake it; what the
        waitables carry meanwhile (results in pipes) waits there and is read in one go. The
        dispatcher does this while results it holds back wait for their commit anyway, and
        only as long as every busy worker has work queued (``Transport.slack``): one wake-up
        then reads several results instead of one each.
        """
        self._quiet_until = until

    def put(self, envelope: Any) -> None:
        self._queue.append(envelope)
        if self._sleeping:
            try:
                os.write(self._wfd, b"\0")
            except (BlockingIOError, OSError):
                pass  # the pipe is already full of wake-ups, or closed at shutdown

    def empty(self) -> bool:
        return not self._queue

    def take(self, match: Callable[[Any], bool]) -> list[Any]:
        """Remove and return the queued messages ``match`` accepts; the rest stay, in order.

        For the owner once it has stopped (see ``_unstarted.left_in_inbox``). Producers may
        still append meanwhile: each ``popleft`` is atomic, and what is kept goes back in
        front of anything appended since.
        """
        q = self._queue
        kept: list[Any] = []
        taken: list[Any] = []
        while True:
            try:
                envelope = q.popleft()
            except IndexError:
                break
            (taken if match(envelope.message) else kept).append(envelope)
        q.extendleft(reversed(kept))
        return [e.message for e in taken]

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
            if timeout is None or timeout > 0:
                self._tick_owed = False  # no deadline has passed (or it was dealt with)
            else:
                self._sleeping = False
                if not self._tick_owed:
                    # A deadline: what the waitables hold first (a result that beat its
                    # deadline is read before the deadline is judged), then the tick.
                    self._tick_owed = True
                    ready = self._ready()
                    if ready is not None:
                        return ready
                self._tick_owed = False
                return _Envelope(_TICK)
            quiet = self._quiet_until
            if quiet is not None:
                left = quiet - time.monotonic()
                if left > 0:
                    wait = left if timeout is None else min(left, timeout)
                    try:
                        woken = self._wake_only.poll(wait)
                    except InterruptedError:
                        woken = []
                    self._sleeping = False
                    if woken:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._rfd, 4096)
                    continue  # a message, a deadline, or the end of the quiet time
                self._quiet_until = None
            try:
                events = self._poll.poll(timeout)
            except InterruptedError:
                events = []
            self._sleeping = False
            if not events:
                if timeout is not None:
                    return _Envelope(_TICK)
                continue
            envelope = self._translate(events)
            if envelope is not None:
                return envelope

    def _ready(self) -> _Envelope | None:
        """Poll without waiting; the waitables that are ready as ``IoReady``, or None."""
        try:
            events = self._poll.poll(0.0)
        except InterruptedError:
            return None
        return self._translate(events)

    def _translate(self, events: list[tuple[int, int]]) -> _Envelope | None:
        by_fd = self._by_fd
        io: list[Any] = []
        for fd, mask in events:
            if fd == self._rfd:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._rfd, 4096)
                continue
            if fd not in by_fd:
                continue
            if mask & _READ_EVENTS:
                io.append(by_fd[fd])
            if mask & select.POLLOUT and fd in self._writing:
                io.append(Writable(self._writing[fd]))
        return _Envelope(IoReady(tuple(io))) if io else None

    def close(self) -> None:
        """Close the wake-up pipe (after the actor stopped)."""
        self._poll.close()
        self._wake_only.close()
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
