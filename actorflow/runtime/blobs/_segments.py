"""The engine's shared-memory segments: created, pooled for reuse, unlinked.

The engine creates and unlinks every segment (workers only map them). A segment freed by
its value goes back to the pool and is reused for a buffer of about its size (sizes are
rounded up to classes at most ~6% apart, so they fit); segments idle in the pool for a while
are unlinked. New segments are refused past ``max_bytes``, or when ``/dev/shm`` is short
of free space (read at each new segment: it is often far smaller than the memory, and
shared with other processes), and the caller then sends the value through the pipe.

Where shared memory is no directory to list, each name is logged beside the store before
the segment exists (``SegmentLog``), so the next engine can sweep what a killed one left.

Not thread-safe on its own: the blob manager (``_manager.py``) calls it under its lock,
since choosing a segment and recording the blob that uses it are one step.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actorflow import _platform
from actorflow.workers._shm import (
    SegmentLog,
    create_segment,
    segment_prefix,
    shm_headroom,
    shm_space,
    unlink_segment,
)

__all__ = ["IDLE", "Segment", "SegmentPool", "size_class"]

log = logging.getLogger("actorflow.blobs")

_MIB = 1 << 20
_PAGE = mmap.PAGESIZE
#: Free segments unused for this long are unlinked.
IDLE = 10.0


def size_class(size: int) -> int:
    """A segment size for a buffer of ``size`` bytes, rounded up to a size class.

    At most ~6% larger, so that freed segments fit later buffers of about the same size.
    """
    step = max(_MIB, 1 << max(0, size.bit_length() - 4))
    return max(_PAGE, -(-size // step) * step)


class Segment:
    """One shared-memory segment the engine holds open."""

    __slots__ = ("fd", "idle_since", "name", "size")

    def __init__(self, name: str, size: int, fd: int) -> None:
        self.name = name
        self.size = size
        self.fd = fd
        self.idle_since = 0.0


class SegmentPool:
    """Every segment of one store's engine, and the free ones kept for reuse.

    Args:
        token: the store's blob token (segment names start with its prefix).
        store_path: the store's directory, for the segment log where shared memory is no
            directory (None: a memory store, whose token dies with it).
        max_bytes: most bytes of segments at once.
        read_only: the store is read-only (no log is kept beside it).
    """

    def __init__(
        self, token: str, store_path: Any, max_bytes: int, read_only: bool = False
    ) -> None:
        self.max_bytes = max_bytes
        self.prefix = segment_prefix(token)
        self._names = itertools.count(1)
        self.log = (
            SegmentLog(store_path / "shm-segments")
            if not _platform.SHM_FILES and isinstance(store_path, Path) and not read_only
            else None
        )
        self.segments: dict[str, Segment] = {}
        self.free: list[Segment] = []
        self.bytes = 0
        self._unlinked: list[str] = []
        #: Called when segments were unlinked (workers drop their mappings).
        self.notify: Callable[[], None] | None = None

    def take_free(self, want: int) -> Segment | None:
        """The smallest free segment of ``want`` to ``want * 1.25`` bytes, taken from the pool."""
        best: Segment | None = None
        for seg in self.free:  # the pool is small: a scan is cheap
            if want <= seg.size <= want + (want >> 2) and (best is None or seg.size < best.size):
                best = seg
        if best is not None:
            self.free.remove(best)
        return best

    def fits(self, want: int) -> bool:
        """Room for a new segment of ``want`` bytes: within ``max_bytes`` and ``/dev/shm``.

        Within what ``/dev/shm`` has free now, less a headroom for its other users (64 MB
        in a Docker container by default): read at each new segment (a ``statvfs``).
        """
        if self.bytes + want > self.max_bytes:
            return False
        total, free = shm_space()
        return total == 0 or want <= free - shm_headroom(total)

    def create(self, want: int) -> Segment | None:
        """A new segment of ``want`` bytes (a size class), or None if it cannot be made."""
        while True:
            name = f"{self.prefix}{os.getpid()}_{next(self._names)}"
            try:
                if self.log is not None:
                    self.log.add(name)  # before: a kill in between leaves nothing unknown
                fd = create_segment(name, want)
                break
            except FileExistsError:
                if self.log is not None:
                    self.log.remove(name)
                continue
            except OSError as exc:
                if self.log is not None:
                    self.log.remove(name)
                log.warning("cannot create a shared-memory segment of %d bytes: %s", want, exc)
                return None
        seg = Segment(name, want, fd)
        self.segments[name] = seg
        self.bytes += want
        return seg

    def release(self, seg: Segment, stopping: bool) -> None:
        """``seg`` is free: back to the pool (unlinked if the engine is stopping)."""
        seg.idle_since = time.monotonic()
        if stopping:
            self.unlink(seg)
        else:
            self.free.append(seg)

    def unlink(self, seg: Segment) -> None:
        """Close and unlink ``seg`` (a no-op if it is gone already)."""
        if self.segments.pop(seg.name, None) is None:
            return
        if seg in self.free:
            self.free.remove(seg)
        self.bytes -= seg.size
        try:
            os.close(seg.fd)
        except OSError:
            pass
        unlink_segment(seg.name)
        if self.log is not None:
            self.log.remove(seg.name)
        self._unlinked.append(seg.name)
        notify = self.notify
        if notify is not None:
            notify()

    def unlink_largest_free(self) -> None:
        """Make room: unlink the largest free segment."""
        self.unlink(max(self.free, key=lambda s: s.size))

    def trim(self, now: float) -> None:
        """Unlink free segments idle for longer than :data:`IDLE`."""
        for seg in [s for s in self.free if now - s.idle_since > IDLE]:
            self.unlink(seg)

    def take_unlinked(self) -> list[str]:
        """Names unlinked since the last call."""
        names, self._unlinked = self._unlinked, []
        return names

    def unlink_all(self) -> None:
        """Unlink every segment, and forget the log (the engine stops)."""
        for seg in list(self.segments.values()):
            self.unlink(seg)
        if self.log is not None:
            self.log.reset()
        self.free.clear()
