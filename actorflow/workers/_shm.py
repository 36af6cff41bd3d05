"""Shared-memory segments: how large buffers move between the engine and its workers.

A value whose pickle (protocol 5) exposes buffers above ``shm_threshold`` travels as an ``S``
value (:mod:`actorflow.store._codec`): the in-band pickle plus the names of POSIX shared-memory
segments holding the buffers. The engine owns every segment (``runtime/_blobs.py``): it
creates them, lends them to a worker for an output, reuses them, and unlinks them. Workers
only map them.

Segments are opened with ``_posixshmem`` and ``mmap`` directly rather than through
``multiprocessing.shared_memory.SharedMemory``: before Python 3.13 the latter registers every
segment it touches with the resource tracker, which unlinks it when *that* process exits, even
if the engine still needs it.

Names are ``/af_<store token>_<pid>_<n>``: the store token lets an engine sweep, at start-up,
the segments a killed engine of the same store left behind, and only those.
"""

from __future__ import annotations

import _posixshmem  # type: ignore[import-not-found]
import mmap
import os
from typing import Any

from actorflow.store._codec import TAG_SHARED, pack_large

__all__ = [
    "SHM_DIR",
    "Maps",
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
    fit fails here, and the value takes another way.

    Raises:
        FileExistsError: a segment of that name exists.
        OSError: ``/dev/shm`` has no room for it (ENOSPC), or the segment cannot be made.
    """
    fd: int = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, size)
        os.posix_fallocate(fd, 0, size)
    except OSError:
        os.close(fd)
        unlink_segment(name)
        raise
    return fd


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
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 0, 0
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def shm_headroom(total: int) -> int:
    """Bytes of ``/dev/shm`` the engine leaves free for other users of it."""
    return max(8 << 20, total // 16)


def store_segments(token: str) -> list[str]:
    """Names of the segments that exist for the store ``token``."""
    prefix = segment_prefix(token)
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except OSError:
        return []


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
