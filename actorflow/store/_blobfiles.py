"""Durable copies of large values' out-of-band buffers ("blobs"), one file each.

The LMDB store keeps them as files under ``data_dir/blobs`` rather than in the environment:
LMDB has one writer, and a 50 MB value would hold it (and every other run's commit) for a
hundred milliseconds. A file is written under a temporary name, fsynced when the store is in
``sync`` mode, then renamed, so a blob is either whole or absent. Which blobs exist, and for
which run, is recorded in the ``blobs`` database (see ``runtime/blobs/_manager.py``).

Copies go from a shared-memory segment to the file and back with ``sendfile``, inside the
kernel: the engine never maps the data to store it. Where a segment is no file (macOS: no
``read``, ``write`` or ``sendfile`` on it; see :mod:`actorflow._platform`) they go through a
mapping of the segment instead (:func:`segment_read`, :func:`segment_write`). With a codec
chain configured the files are sealed in chunks instead, by
:class:`actorflow.store._sealing.SealedBlobs`, over this class; such a file starts with
:data:`SEALED_MAGIC`.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path

from actorflow import _platform
from actorflow.errors import StoreError

__all__ = ["SEALED_MAGIC", "BlobFiles", "MemoryBlobs", "segment_read", "segment_write"]

_CHUNK = 8 << 20  # copy in pieces, so a cancelled write stops early
#: How a sealed blob file starts (then a format version byte); see ``_sealedblobs``.
SEALED_MAGIC = b"\xafactorflow.blob"


def _never() -> bool:
    return False


def _discard(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _copy(src: int, dst: int, size: int, cancelled: Callable[[], bool]) -> bool:
    """Copy ``size`` bytes from offset 0 of ``src`` to ``dst`` (at its position)."""
    done = 0
    while done < size:
        if cancelled():
            return False
        n = os.sendfile(dst, src, done, min(_CHUNK, size - done))
        if n == 0:
            raise _short(done, size)
        done += n
    return True


def _short(done: int, size: int) -> StoreError:
    return StoreError(f"blob copy: source ended after {done} of {size} bytes")


def _map(segment: int, size: int, writable: bool) -> mmap.mmap:
    """The first ``size`` bytes of a segment, mapped (a segment smaller than that: error)."""
    have = os.fstat(segment).st_size
    if have < size:
        raise StoreError(f"blob copy: a segment of {have} bytes cannot hold {size}")
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    return mmap.mmap(segment, max(size, 1), prot=prot)


def segment_read(segment: int, size: int, offset: int = 0) -> bytes:
    """``size`` bytes of a segment from ``offset`` (fewer at its end), as ``os.pread``."""
    if _platform.SHM_FILES:
        return os.pread(segment, size, offset)
    end = min(offset + size, os.fstat(segment).st_size)
    if end <= offset:
        return b""
    with _map(segment, end, writable=False) as m:
        return m[offset:end]


def segment_write(segment: int, data: bytes | memoryview, offset: int = 0) -> None:
    """Write all of ``data`` into a segment at ``offset`` (it must be large enough)."""
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if _platform.SHM_FILES:
        done = 0
        while done < view.nbytes:
            done += os.pwrite(segment, view[done:], offset + done)
        return
    if view.nbytes:
        with _map(segment, offset + view.nbytes, writable=True) as m:
            m[offset : offset + view.nbytes] = view


def _from_segment(segment: int, out: int, size: int, cancelled: Callable[[], bool]) -> bool:
    """Copy the first ``size`` bytes of a segment to the file ``out``."""
    if _platform.SHM_FILES:
        return _copy(segment, out, size, cancelled)
    with _map(segment, size, writable=False) as m, memoryview(m) as whole:
        done = 0
        while done < size:
            if cancelled():
                return False
            done += os.write(out, whole[done : min(size, done + _CHUNK)])
    return True


def _to_segment(src: int, segment: int, size: int) -> None:
    """Copy the ``size`` bytes of the file ``src`` to the start of a segment."""
    if _platform.SHM_FILES:
        os.lseek(segment, 0, os.SEEK_SET)
        _copy(src, segment, size, _never)
        return
    if size == 0:
        return
    with _map(segment, size, writable=True) as m, memoryview(m) as whole:
        done = 0
        while done < size:
            n = os.readv(src, [whole[done : min(size, done + _CHUNK)]])
            if n == 0:
                raise _short(done, size)
            done += n


class BlobFiles:
    """Blobs as files in a directory.

    Args:
        path: the directory (created on first write).
        sync: fsync each blob (and the directory) before it counts as written.
        read_only: refuse writes.
    """

    def __init__(self, path: Path, sync: bool, read_only: bool = False) -> None:
        self.path = path
        self.sync = sync
        self.read_only = read_only
        self._made = False

    def file(self, blob_id: str) -> Path:
        """The path of blob ``blob_id``'s file.

        Raises:
            StoreError: the id could name a file outside the directory.
        """
        if not blob_id or "/" in blob_id or blob_id.startswith("."):
            raise StoreError(f"invalid blob id {blob_id!r}")
        return self.path / blob_id

    def write_from(
        self, blob_id: str, fd: int, size: int, cancelled: Callable[[], bool] = _never
    ) -> bool:
        """Store ``size`` bytes from the start of ``fd`` as ``blob_id``.

        Returns:
            False if ``cancelled()`` turned true first (nothing is left behind).

        Raises:
            StoreError: the write failed (disk full...); nothing is left behind.
        """
        return self.write_with(blob_id, lambda out: _from_segment(fd, out, size, cancelled))

    def write_with(self, blob_id: str, fill: Callable[[int], bool]) -> bool:
        """Store as ``blob_id`` what ``fill(fd)`` writes to a new file (False: cancelled).

        The file is whole or absent: written under a temporary name, fsynced in ``sync``
        mode, then renamed.

        Raises:
            StoreError: the write failed (disk full...); nothing is left behind.
        """
        if self.read_only:
            raise StoreError("store is open read-only")
        final = self.file(blob_id)
        if not self._made:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._made = True
        tmp = self.path / f".{blob_id}.{threading.get_ident()}.tmp"
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                if not fill(out):
                    os.unlink(tmp)
                    return False
                if self.sync:
                    os.fsync(out)
            finally:
                os.close(out)
            os.rename(tmp, final)
            if self.sync:
                dir_fd = os.open(self.path, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            _discard(tmp)
            raise StoreError(f"cannot write blob {blob_id}: {exc}") from exc
        except BaseException:  # ``fill`` failed in another way: still leave nothing behind
            _discard(tmp)
            raise
        return True

    def read_into(self, blob_id: str, fd: int) -> int | None:
        """Copy blob ``blob_id`` to the start of ``fd``; return its size (None: no such blob)."""
        try:
            src = os.open(self.file(blob_id), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(src).st_size
            _to_segment(src, fd, size)
            return size
        except OSError as exc:
            raise StoreError(f"cannot read blob {blob_id}: {exc}") from exc
        finally:
            os.close(src)

    def read(self, blob_id: str) -> bytes | None:
        """The bytes of blob ``blob_id`` (None: no such blob)."""
        try:
            return self.file(blob_id).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read blob {blob_id}: {exc}") from exc

    def size(self, blob_id: str) -> int | None:
        """The size of blob ``blob_id``, or None if it is not stored."""
        try:
            return self.file(blob_id).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, blob_id: str) -> None:
        """Remove blob ``blob_id`` (no error if absent)."""
        try:
            self.file(blob_id).unlink()
        except FileNotFoundError:
            pass

    def ids(self) -> list[str]:
        """Every stored blob id (leftover temporary files are removed)."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith("."):
                if not self.read_only:
                    try:
                        os.unlink(self.path / name)
                    except OSError:
                        pass
                continue
            out.append(name)
        return sorted(out)


class MemoryBlobs:
    """Blobs in this process's memory (for the in-memory store)."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.read_only = False

    def write_from(
        self, blob_id: str, fd: int, size: int, cancelled: Callable[[], bool] = _never
    ) -> bool:
        if cancelled():
            return False
        data = segment_read(fd, size)
        if len(data) != size:
            raise StoreError(f"blob copy: source ended after {len(data)} of {size} bytes")
        with self._lock:
            self._data[blob_id] = data
        return True

    def read_into(self, blob_id: str, fd: int) -> int | None:
        with self._lock:
            data = self._data.get(blob_id)
        if data is None:
            return None
        segment_write(fd, data)
        return len(data)

    def read(self, blob_id: str) -> bytes | None:
        with self._lock:
            return self._data.get(blob_id)

    def size(self, blob_id: str) -> int | None:
        with self._lock:
            data = self._data.get(blob_id)
        return None if data is None else len(data)

    def delete(self, blob_id: str) -> None:
        with self._lock:
            self._data.pop(blob_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._data)
