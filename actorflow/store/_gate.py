"""Who may use the store's files at a time: readers against a resize, and the engine lock.

:class:`ReadGate` lets any number of readers in except while one holder has it exclusively
(the writer resizing the map; a follower swapping its read-only store for the writable one
when it takes over). ``engine.lock`` is the file whose ``flock`` says which process is the
store's engine (:func:`open_engine_lock` opens it; :class:`EngineLock` is the writable
store's hold on it, and the sharing code locks it while a follower waits to take over).
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from actorflow.errors import StoreError, StoreInUse

__all__ = ["EngineLock", "ReadGate", "open_engine_lock"]


class ReadGate:
    """Lets any number of readers in, except while one holder has it exclusively.

    Here: the writer resizing the map. A follower engine uses one too, to swap its
    read-only store for the writable one when it takes over (``engine/_follower.py``).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._resizing = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            self._leave()

    def _leave(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0 and self._resizing:
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


def open_engine_lock(path: Path) -> int:
    """A descriptor of the store's ``engine.lock`` (created owner-only), not locked yet."""
    try:
        return os.open(path / "engine.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open the lock of the store at {path}: {exc}") from exc


class EngineLock:
    """A writable store's exclusive ``flock`` on ``engine.lock``, with the holder's pid in it.

    The pid is what :class:`StoreInUse` names for the next process that tries; closing the
    descriptor (:meth:`release`, or the process dying) drops the lock.
    """

    def __init__(self, fd: int) -> None:
        """Own ``fd``, a descriptor on which the caller already holds the ``flock``."""
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd: int | None = fd

    @classmethod
    def take(cls, path: Path) -> EngineLock:
        """Lock the store at ``path`` now, or raise :class:`StoreInUse` naming the holder."""
        fd = open_engine_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreInUse(
                    f"store at {path} is in use by another engine (pid {holder}); "
                    "open it read-only or stop that engine"
                ) from None
            raise StoreError(f"cannot lock store at {path}: {exc}") from exc
        return cls(fd)

    def release(self) -> None:
        """Drop the lock (closing the descriptor drops the ``flock``); idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
