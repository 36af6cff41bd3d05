"""Disk space for the store's files: blocks given before LMDB may use them.

A full disk must show as ``ENOSPC`` when the engine grows the map, not as a ``SIGBUS`` on a
mapped page later; so each growth asks the file system for the blocks first
(:func:`allocate`: ``posix_fallocate`` where there is one, else zeros written into the
file's holes).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from actorflow import _platform

__all__ = ["allocate"]


def allocate(path: Path, size: int) -> None:
    """Give the first ``size`` bytes of ``path`` disk blocks (OSError if it cannot).

    ``posix_fallocate`` where there is one; elsewhere (macOS) :func:`_fill_holes`.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        if _platform.FALLOCATE:
            os.posix_fallocate(fd, 0, size)
        else:
            _fill_holes(fd, size)
    finally:
        os.close(fd)


_ZEROS = bytes(1 << 20)


def _fill_holes(fd: int, size: int) -> None:
    """Write zeros where the first ``size`` bytes of ``fd`` have no blocks (no fallocate).

    The holes of a sparse file read as zeros, so writing zeros into them changes no byte
    while making the file system find the blocks now: a full disk is an ENOSPC here, not a
    SIGBUS on a mapped page later. The holes are found with ``SEEK_HOLE`` / ``SEEK_DATA``
    (Linux, macOS); past the end of the file is all hole. Sound where no other process
    writes a hole meanwhile: ``data.mdb`` has one writer, this engine, which fills it before
    LMDB may use the range. In ``lock.mdb`` another process's reader could take its first
    slot on a page whose hole is being filled, and lose it; readers take the lowest free slot
    and a page holds about sixty, so that needs a page's worth of readers open elsewhere while
    the engine opens the store (docs/operations.md, "Platforms").
    """
    end = os.fstat(fd).st_size
    pos = 0
    while pos < min(end, size):
        try:
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
        except OSError:
            break  # no hole support: a file system without sparse files
        if hole >= min(end, size):
            break
        try:
            data = os.lseek(fd, hole, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            data = end  # a hole up to the end of the file
        _write_zeros(fd, hole, min(data, size))
        pos = data
    if size > end:
        _write_zeros(fd, end, size)


def _write_zeros(fd: int, start: int, stop: int) -> None:
    view = memoryview(_ZEROS)
    while start < stop:
        start += os.pwrite(fd, view[: min(len(_ZEROS), stop - start)], start)
