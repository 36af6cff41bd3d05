"""Shared-memory segments: how large buffers move between the engine and its workers.

A value whose pickle (protocol 5) exposes buffers above ``shm_threshold`` travels as an ``S``
value (:mod:`actorflow.store._codec`): the in-band pickle plus the names of POSIX shared-memory
segments holding the buffers. The engine owns every segment (``runtime/blobs/_manager.py``): it
creates them, lends them to a worker for an output, reuses them, and unlinks them. Workers
only map them.

Segments are opened with ``_posixshmem`` and ``mmap`` directly rather than through
``multiprocessing.shared_memory.SharedMemory``, on every Python. Before 3.13 the latter
registers every segment it touches with the resource tracker, which unlinks it when *that*
process exits, even if the engine still needs it. 3.13's ``SharedMemory(track=False)`` ends
that, but still cannot do what the engine needs: it hands out no descriptor (only the private
``_fd``), and the engine works on descriptors, never mapping a segment to fill it or to store
it (``pwrite``, ``sendfile``) and reserving its pages with ``posix_fallocate``; and it keeps
a descriptor open for as long as it maps a segment (a worker maps many; macOS allows 256 open
files by default), while its ``close`` fails, and its finaliser prints that failure, as long as
a step still holds a view of the segment, which :class:`Maps` allows.

Names are ``/af_<store token>_<pid>_<n>``: the store token lets an engine sweep, at start-up,
the segments a killed engine of the same store left behind, and only those. Where shared memory
is not a directory to list (macOS: see :mod:`actorflow._platform`), the engine records the
names of its live segments in a :class:`SegmentLog` beside the store instead.
"""

from __future__ import annotations

import _posixshmem  # type: ignore[import-not-found]
import errno
import mmap
import os
import threading
from pathlib import Path
from typing import Any

from actorflow import _platform
from actorflow.store._codec import TAG_SHARED, pack_large

__all__ = [
    "SHM_DIR",
    "Maps",
    "SegmentLog",
    "WorkerSink",
    "create_segment",
    "open_segment",
    "segment_prefix",
    "shm_headroom",
    "shm_space",
    "store_segments",
    "unlink_segment",
]

#: Where Linux shows POSIX shared memory.
SHM_DIR = "/dev/shm"


def segment_prefix(token: str) -> str:
    """The name prefix (without the slash) of every segment of the store ``token``."""
    return f"af_{token}_"


def create_segment(name: str, size: int) -> int:
    """Create segment ``name`` of ``size`` bytes (owner-only); return its descriptor.

    The segment's memory is reserved at once (``posix_fallocate``): a segment only
    ``ftruncate``d has no pages on tmpfs, and a process writing into it when ``/dev/shm`` is
    full (Docker gives containers 64 MB) dies with SIGBUS. Reserved, a segment that does not
    fit fails here, and the value takes another way. Without ``posix_fallocate``, see
    :func:`_reserve`.

    Raises:
        FileExistsError: a segment of that name exists.
        OSError: ``/dev/shm`` has no room for it (ENOSPC), or the segment cannot be made.
    """
    fd: int = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, size)
        if _platform.FALLOCATE:
            os.posix_fallocate(fd, 0, size)
        else:
            _reserve(fd, size)
    except OSError:
        os.close(fd)
        unlink_segment(name)
        raise
    return fd


#: Zeros written at a time where a segment's pages are reserved by writing.
_ZEROS = bytes(1 << 20)


def _reserve(fd: int, size: int) -> None:
    """Reserve a segment's pages by writing zeros into them (no ``posix_fallocate``).

    On a tmpfs a ``write`` that finds no room fails with ENOSPC: an error here, where a write
    through the mapping would be a SIGBUS later. Where a segment is no file (macOS: ``write``
    fails with ENXIO or the like) it is left as it is: such shared memory is the kernel's
    anonymous memory, backed by swap rather than by a size-limited file system, so a write
    into it waits for memory instead of faulting.
    """
    done = 0
    try:
        while done < size:
            done += os.pwrite(fd, memoryview(_ZEROS)[: min(len(_ZEROS), size - done)], done)
    except OSError as exc:
        if done == 0 and exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM):
            return  # not a file: nothing to reserve (see above)
        raise


def open_segment(name: str, writable: bool = True) -> int:
    """Open the existing segment ``name``; return its descriptor.

    Raises:
        FileNotFoundError: there is no such segment.
    """
    fd: int = _posixshmem.shm_open("/" + name, os.O_RDWR if writable else os.O_RDONLY, 0o600)
    return fd


def unlink_segment(name: str) -> None:
    """Remove segment ``name`` (its memory goes once no process maps it)."""
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass


def shm_space() -> tuple[int, int]:
    """(total, free) bytes of ``/dev/shm``; (0, 0) where it cannot be read."""
    if not _platform.SHM_FILES:
        return 0, 0  # no file system to ask: ``shm_max_bytes`` is the only budget
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 0, 0
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def shm_headroom(total: int) -> int:
    """Bytes of ``/dev/shm`` the engine leaves free for other users of it."""
    return max(8 << 20, total // 16)


def store_segments(token: str, log: SegmentLog | None = None) -> list[str]:
    """Names of the segments that exist for the store ``token``.

    Listed from ``/dev/shm`` where it is a directory; elsewhere the names ``log`` recorded
    (none without a log).
    """
    prefix = segment_prefix(token)
    if not _platform.SHM_FILES:
        return sorted(n for n in log.read() if n.startswith(prefix)) if log is not None else []
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except OSError:
        return []


class SegmentLog:
    """The names of a store's live segments, in a file beside the store.

    Where shared memory cannot be listed, this is how the next engine finds the segments a
    killed one left: ``+name`` is appended before a segment is created, ``-name`` after it is
    unlinked. Nothing is fsynced: segments do not outlive the machine, and a written line
    outlives the process. Once dead lines outnumber live names, the file is rewritten with
    the live names alone (under a temporary name, then renamed).

    Args:
        path: the file (created on the first name).
    """

    __slots__ = ("_fd", "_lines", "_live", "_lock", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._live: set[str] = set()
        self._lines = 0
        self._fd = -1

    def read(self) -> list[str]:
        """The names recorded as live (what a killed engine may have left)."""
        try:
            text = self.path.read_text("ascii", errors="replace")
        except FileNotFoundError:
            return []
        live: dict[str, None] = {}
        for line in text.splitlines():
            if line[:1] == "+":
                live[line[1:]] = None
            elif line[:1] == "-":
                live.pop(line[1:], None)
        return list(live)

    def reset(self) -> None:
        """Forget every name (after a sweep unlinked them, or at a clean stop)."""
        with self._lock:
            self._close()
            self._live.clear()
            self._lines = 0
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def add(self, name: str) -> None:
        """Record ``name`` before its segment is created (OSError if that cannot be done)."""
        with self._lock:
            self._append(f"+{name}\n")
            self._live.add(name)

    def remove(self, name: str) -> None:
        """Record that segment ``name`` was unlinked."""
        with self._lock:
            if name not in self._live:
                return
            self._live.discard(name)
            try:
                if self._lines > 2 * len(self._live) + 64:
                    self._rewrite()
                else:
                    self._append(f"-{name}\n")
            except OSError:
                pass  # at worst the next engine tries to unlink a segment that is gone

    def _append(self, line: str) -> None:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._fd, line.encode("ascii"))
        self._lines += 1

    def _rewrite(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, "".join(f"+{n}\n" for n in sorted(self._live)).encode("ascii"))
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._close()
        self._lines = len(self._live)

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Maps:
    """A process's mappings of segments, kept open so a reused segment costs no page faults.

    The engine says which segments it unlinked (``drop``); a mapping still viewed by a live
    object (a numpy array a step kept) stays valid until that object goes.
    """

    __slots__ = ("_maps",)

    def __init__(self) -> None:
        self._maps: dict[str, mmap.mmap] = {}

    def _map(self, name: str, size: int) -> mmap.mmap:
        m = self._maps.get(name)
        if m is None or len(m) < size:
            fd = open_segment(name)
            try:
                m = mmap.mmap(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            self._maps[name] = m
        return m

    def view(self, name: str, size: int) -> memoryview:
        """A read-only view of the first ``size`` bytes of segment ``name`` (no copy)."""
        with memoryview(self._map(name, size)) as whole:
            return whole[:size].toreadonly()

    def write(self, name: str, data: memoryview) -> None:
        """Copy ``data`` to the start of segment ``name``."""
        m = self._map(name, data.nbytes)
        m[: data.nbytes] = data.cast("B") if data.format != "B" or data.ndim != 1 else data

    def drop(self, names: list[str]) -> None:
        """Forget segments the engine unlinked."""
        for name in names:
            m = self._maps.pop(name, None)
            if m is not None:
                try:
                    m.close()
                except BufferError:
                    pass  # still viewed by a live object: unmapped when that goes


class WorkerSink:
    """Puts a step's large output buffers in segments the engine lends (a worker's sink).

    Args:
        threshold: buffers above this many bytes leave the pickle.
        maps: this worker's mappings.
        ask: ``ask(sizes)`` asks the engine for one segment per size; None when it refuses
            (shared memory full): the value then goes through the pipe.
    """

    __slots__ = ("_ask", "maps", "threshold")

    def __init__(self, threshold: int, maps: Maps, ask: Any) -> None:
        self.threshold = threshold
        self.maps = maps
        self._ask = ask

    def place(self, inband: bytes, buffers: list[memoryview], what: str) -> bytes | None:
        sizes = [b.nbytes for b in buffers]
        names: list[str] | None = self._ask(sizes)
        if not names:
            return None
        for name, buf in zip(names, buffers, strict=True):
            self.maps.write(name, buf)
        return pack_large(TAG_SHARED, list(zip(names, sizes, strict=True)), inband)
