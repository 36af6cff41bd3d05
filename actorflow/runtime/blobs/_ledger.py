"""The blob ledger: each blob's segment and holders, and lending, adopting, wiring values.

``BlobManager`` is built of two parts: ``BlobLedger`` (this module: which blobs exist, where
each is resident, who holds it; segments for values the engine encodes and for workers'
outputs, ``B`` values turned into ``S`` for a worker and back) <- ``BlobManager``
(``_manager.py``: the blobs' durability: records with the first record that refers to them,
files written later on the writer thread, clean-ups when runs end, start and stop).
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from actorflow.errors import StoreCorrupted
from actorflow.runtime.blobs._segments import IDLE, Segment, SegmentPool, size_class
from actorflow.runtime.blobs._values import Blob, BlobStats, BlobValue
from actorflow.store._blobfiles import segment_write
from actorflow.store._codec import (
    TAG_BLOB,
    TAG_SHARED,
    decode_value,
    encode_in_band,
    pack_large,
    unpack_large,
)
from actorflow.store._protocol import Op, Store

__all__ = ["BlobLedger"]

log = logging.getLogger("actorflow.blobs")


def _finished(b: Blob) -> bool:
    """Nothing more to write for ``b``.

    A function, so that checks after a wait are not narrowed away by the type checker.
    """
    return b.stored or b.deleted


def _missing(blob_id: str, got: int | None, size: int) -> str:
    if got is not None:
        return (
            f"large value: blob {blob_id} holds {got} bytes, expected {size} (its file is "
            "damaged, or sealed by codecs this engine is not configured with)"
        )
    return (
        f"large value: blob {blob_id} is missing from the store (its run may have been "
        "cleaned up, or the machine stopped before the blob reached the disk)"
    )


class BlobLedger:
    """Which blobs exist, where, and who holds them (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        token: str,
        threshold: int,
        max_bytes: int,
        write_delay: float,
        submit: Callable[[list[Op], Callable[[], Any]], None],
    ) -> None:
        self.store = store
        self.token = token
        self.threshold = threshold
        self.max_bytes = max_bytes
        self.write_delay = write_delay
        self._submit = submit
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._gc_wake = threading.Condition(self._lock)
        # Where shared memory is no directory to list, the next engine's sweep finds a killed
        # engine's segments by the names recorded beside the store (a memory store has none
        # to find: its token dies with it).
        self._pool = SegmentPool(token, getattr(store, "path", None), max_bytes, store.read_only)
        self._ids = itertools.count(1)
        self._id_base = f"{token}.{os.getpid():x}{int(time.time() * 1000):x}"
        self._blobs: dict[str, Blob] = {}
        #: Stored blobs nobody holds, still resident: a cache, oldest first; evictable.
        self._cached: OrderedDict[str, Blob] = OrderedDict()
        self._lent: dict[int, dict[str, Segment]] = {}
        self._task_holds: dict[int, list[Blob]] = {}
        self._writes: list[tuple[float, str]] = []
        self._jobs: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self._gc_thread: threading.Thread | None = None
        self._stopping = False
        self.stats = BlobStats()
        #: What :meth:`recover` found: (blobs saved from segments, blobs lost, segments swept).
        self.recovered = (0, 0, 0)

    def _alloc(self, size: int) -> Segment | None:
        """A segment of at least ``size`` bytes: pooled if one fits, else new.

        A cached blob (stored, resident, held by nobody) gives up its segment before a new
        one is made, and the oldest cached blobs and the largest free segments go first when
        there is no room. None when a new one would pass ``max_bytes`` or ``/dev/shm``.
        """
        pool, want = self._pool, size_class(size)
        seg = pool.take_free(want)
        if seg is not None:
            self.stats.reused += 1
            return seg
        for bid, blob in self._cached.items():  # evict the oldest cached blob that fits
            held = blob.seg
            if held is not None and want <= held.size <= want + (want >> 2):
                del self._cached[bid]
                self._blobs.pop(bid, None)
                blob.seg = None
                self.stats.reused += 1
                return held
        while not pool.fits(want) and (pool.free or self._cached):
            if pool.free:
                pool.unlink_largest_free()
            else:
                bid, blob = self._cached.popitem(last=False)
                self._blobs.pop(bid, None)
                if blob.seg is not None:
                    pool.unlink(blob.seg)
                    blob.seg = None
        seg = pool.create(want) if pool.fits(want) else None
        if seg is None:
            self.stats.refused += 1
        return seg

    def _release_segment(self, seg: Segment) -> None:
        self._pool.release(seg, self._stopping)

    def take_unlinked(self) -> list[str]:
        """Names unlinked since the last call (workers should drop their mappings)."""
        with self._lock:
            return self._pool.take_unlinked()

    def _settle(self, b: Blob) -> None:
        """``b`` lost a holder: free what nothing needs any more."""
        if b.holds or self._stopping:
            return
        if b.deleted or (not b.committed and not b.owners):
            self._blobs.pop(b.id, None)
            self._cached.pop(b.id, None)
            if b.seg is not None:
                self._release_segment(b.seg)
                b.seg = None
        elif b.stored and b.seg is not None:
            b.seg.idle_since = time.monotonic()
            self._cached[b.id] = b  # resident, evictable
            self._cached.move_to_end(b.id)

    def _disown(self, ids: list[str]) -> None:
        with self._lock:
            for bid in ids:
                b = self._blobs.get(bid)
                if b is not None:
                    b.owners -= 1
                    self._settle(b)

    def _new_blob(self, size: int, seg: Segment) -> Blob:
        bid = f"{self._id_base}.{next(self._ids):x}"
        b = Blob(bid, size, seg)
        self._blobs[bid] = b
        return b

    def _owned(self, blobs: list[Blob], inband: bytes | memoryview) -> BlobValue:
        value = BlobValue(pack_large(TAG_BLOB, [(b.id, b.size) for b in blobs], inband))
        for b in blobs:
            b.owners += 1
        value._mgr = self  # type: ignore[attr-defined]
        value._ids = [b.id for b in blobs]  # type: ignore[attr-defined]
        return value

    def place(self, inband: bytes, buffers: list[memoryview], what: str) -> bytes | None:
        """Put buffers of a value the engine encodes into segments (:func:`encode_value`)."""
        with self._lock:
            segs: list[Segment] = []
            for buf in buffers:
                seg = self._alloc(buf.nbytes)
                if seg is None:
                    for s in segs:
                        self._release_segment(s)
                    return None
                segs.append(seg)
            blobs = []
            for seg, buf in zip(segs, buffers, strict=True):
                segment_write(seg.fd, buf)
                blobs.append(self._new_blob(buf.nbytes, seg))
            return self._owned(blobs, inband)

    def buffer(self, blob_id: str, size: int) -> Any:
        """A read-only buffer of blob ``blob_id``, for a value decoded in this process.

        A view of its segment (no copy; the blob is held until the last object using it
        goes), or its bytes read from the store.
        """
        with self._lock:
            b = self._blobs.get(blob_id)
            if b is not None and b.seg is not None:
                mm = mmap.mmap(b.seg.fd, b.seg.size, prot=mmap.PROT_READ)
                b.holds += 1
                self._cached.pop(blob_id, None)
                weakref.finalize(mm, self._unhold, b)
                with memoryview(mm) as whole:
                    return whole[:size].toreadonly()
        data = self.store.blobs.read(blob_id)
        if data is None or len(data) != size:
            raise StoreCorrupted(_missing(blob_id, None if data is None else len(data), size))
        return data

    def _unhold(self, b: Blob) -> None:
        with self._lock:
            b.holds -= 1
            self._settle(b)

    def lend(self, task_id: int, sizes: list[int]) -> list[str] | None:
        """Segments for a task's output buffers (None: full; it uses the pipe instead)."""
        with self._lock:
            segs: list[Segment] = []
            for size in sizes:
                if not isinstance(size, int) or size <= 0:
                    raise ValueError(f"segment size: expected a positive integer, got {size!r}")
                seg = self._alloc(size)
                if seg is None:
                    for s in segs:
                        self._release_segment(s)
                    return None
                segs.append(seg)
            lent = self._lent.setdefault(task_id, {})
            for seg in segs:
                lent[seg.name] = seg
            self.stats.lent += len(segs)
            return [s.name for s in segs]

    def adopt(self, task_id: int, data: bytes) -> BlobValue:
        """A worker's ``S`` output (in segments lent to ``task_id``) as a ``B`` value.

        Raises:
            ValueError: it names a segment that was not lent to this task.
        """
        entries, inband = unpack_large(data)
        with self._lock:
            lent = self._lent.get(task_id, {})
            blobs = []
            for name, size in entries:
                seg = lent.pop(name, None)
                if seg is None or size > seg.size:
                    raise ValueError(f"worker output names segment {name!r} not lent to it")
                blobs.append(self._new_blob(size, seg))
            return self._owned(blobs, inband)

    def wire(self, value: bytes, task_id: int) -> bytes:
        """A ``B`` value as a worker receives it (``S``); its blobs are held for the task.

        When shared memory has no room to load a blob that is not resident, the value is
        sent in band instead (``P``: through the pipe).

        Raises:
            StoreCorrupted: a blob is missing.
        """
        entries, inband = unpack_large(value)
        with self._lock:
            held = self._task_holds.setdefault(task_id, [])
            out = []
            loaded: list[Blob] = []
            for bid, size in entries:
                b = self._blobs.get(bid)
                if b is None or b.seg is None:
                    b = self._load(bid, size)
                    if b is None:  # no shared memory for it: the value goes in band
                        for got in loaded:
                            got.holds -= 1
                            held.remove(got)
                            self._settle(got)
                        return self._in_band(value)
                b.holds += 1
                self._cached.pop(bid, None)
                held.append(b)
                loaded.append(b)
                assert b.seg is not None
                out.append((b.seg.name, size))
        return pack_large(TAG_SHARED, out, inband)

    def _in_band(self, value: bytes) -> bytes:
        """The ``B`` value ``value`` with its buffers in band (``P``), read from the store.

        For when shared memory has no room to load it: the worker then gets it through its
        pipe (slower, but it gets it).
        """
        return encode_in_band(decode_value(value, "large value"), "large value")

    def resident(self, value: bytes) -> bool:
        """True if every blob of the ``B`` value ``value`` is in a segment now."""
        with self._lock:
            for bid, _ in unpack_large(value)[0]:
                b = self._blobs.get(bid)
                if b is None or b.seg is None:
                    return False
        return True

    def _load(self, bid: str, size: int) -> Blob | None:
        """Blob ``bid`` read from the store into a segment (None: no room for one)."""
        seg = self._alloc(size)
        if seg is None:
            return None
        try:
            got = self.store.blobs.read_into(bid, seg.fd)
        except BaseException:  # a damaged or undecryptable blob: the segment is not lost
            self._release_segment(seg)
            raise
        if got != size:
            self._release_segment(seg)
            raise StoreCorrupted(_missing(bid, got, size))
        b = self._blobs.get(bid)
        if b is None:
            b = self._blobs[bid] = Blob(bid, size, seg)
        b.seg = seg
        b.committed = b.stored = True
        self.stats.loaded += 1
        return b

    def end_task(self, task_id: int) -> None:
        """A task ended (in any way): release what it held and the segments it did not use."""
        with self._lock:
            lent = self._lent.pop(task_id, None)
            if lent:
                for seg in lent.values():
                    self._release_segment(seg)
            held = self._task_holds.pop(task_id, None)
            if held:
                for b in held:
                    b.holds -= 1
                    self._settle(b)

    def _trim(self, now: float) -> None:
        self._pool.trim(now)
        while self._cached:
            bid, blob = next(iter(self._cached.items()))
            held = blob.seg
            if held is not None and now - held.idle_since <= IDLE:
                break
            del self._cached[bid]
            self._blobs.pop(bid, None)
            if held is not None:
                blob.seg = None
                self._pool.unlink(held)

    def statistics(self) -> dict[str, Any]:
        """Segments, bytes and blob counters."""
        with self._lock:
            s = self.stats
            return {
                "threshold": self.threshold,
                "segments": len(self._pool.segments),
                "free_segments": len(self._pool.free),
                "bytes": self._pool.bytes,
                "max_bytes": self.max_bytes,
                "blobs": len(self._blobs),
                "in_use": len(self._pool.segments)
                - len(self._pool.free)
                - sum(1 for b in self._cached.values() if b.seg is not None),
                "pending_writes": sum(
                    1 for b in self._blobs.values() if b.committed and not b.stored
                ),
                "lent": s.lent,
                "reused": s.reused,
                "refused": s.refused,
                "loaded": s.loaded,
                "blobs_written": s.blobs_written,
                "bytes_written": s.bytes_written,
            }
