"""Large values: the engine's shared-memory segments and their durable copies (blobs).

A value whose pickle exposes buffers above ``shm_threshold`` is encoded as ``B`` (stored form:
in-band pickle + blob ids) or ``S`` (wire form: + segment names); see
:mod:`actorflow.store._codec`. This module owns both ends:

- **Segments.** The engine creates, lends, reuses and unlinks every segment (workers only map
  them). A worker asks for segments for a step's output (:meth:`BlobManager.lend`), writes
  the buffers in place, and its ``DONE`` names them; the dispatcher turns that into a ``B``
  value (:meth:`adopt`). To send a ``B`` value to a worker the dispatcher turns it back into
  ``S`` (:meth:`wire`), loading a blob from the store into a segment if it is not resident.
  A free segment goes back to a pool and is reused for a buffer of about its size; segments
  idle for a while are unlinked, and all of them when the engine stops.
- **Lifetime.** A blob lives while something needs it: a ``B`` value made here and not yet
  recorded (:class:`BlobValue`, released when the object goes), a task that was sent it, a
  value the engine decoded from it (zero-copy, released when the last view goes), or a
  record in the store. When a run completes, its blobs other than its result's are deleted;
  a cancelled or continued run's all of them; a failed run keeps them.
- **Durability.** The store writer records a blob (``blobs`` database: run, size, segment)
  in the same transaction as the first record that refers to it, so a step's output is
  committed before the next step starts, as always. Its bytes reach the blob file
  ``blob_write_delay`` seconds later (sealed, if the store has codecs), on this module's
  thread, off the hot path (if the run has already deleted it by then, it never touches
  the disk). Until then the segment is the copy: it survives a crash of the engine
  process, and at the next start :meth:`recover` writes every recorded blob still missing a
  file from its segment, then unlinks every segment the store's previous engines left. Only
  a crash of the machine inside that window loses a blob; reading it then fails with
  :class:`~actorflow.errors.StoreCorrupted`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import mmap
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from actorflow import _platform
from actorflow.errors import StoreCorrupted
from actorflow.store import _keys as K
from actorflow.store._blobfiles import segment_write
from actorflow.store._codec import (
    TAG_BLOB,
    TAG_SHARED,
    decode_value,
    encode_in_band,
    pack_large,
    set_resolver,
    unpack_large,
)
from actorflow.store._protocol import Op, Store
from actorflow.workers._shm import (
    SegmentLog,
    create_segment,
    segment_prefix,
    shm_headroom,
    shm_space,
    store_segments,
    unlink_segment,
)

__all__ = ["BlobManager", "BlobStats", "BlobValue"]

log = logging.getLogger("actorflow.blobs")

_MIB = 1 << 20
#: Free segments unused for this long are unlinked.
_IDLE = 10.0
_PAGE = mmap.PAGESIZE


def _round(size: int) -> int:
    """A segment size for a buffer of ``size`` bytes, rounded up to a size class.

    At most ~6% larger, so that freed segments fit later buffers of about the same size.
    """
    step = max(_MIB, 1 << max(0, size.bit_length() - 4))
    return max(_PAGE, -(-size // step) * step)


class _Segment:
    __slots__ = ("fd", "idle_since", "name", "size")

    def __init__(self, name: str, size: int, fd: int) -> None:
        self.name = name
        self.size = size
        self.fd = fd
        self.idle_since = 0.0


class _Blob:
    __slots__ = ("committed", "deleted", "holds", "id", "owners", "seg", "size", "stored")

    def __init__(self, blob_id: str, size: int, seg: _Segment | None) -> None:
        self.id = blob_id
        self.size = size
        self.seg = seg
        self.holds = 0  # tasks sent it, zero-copy views in this process, a write in progress
        self.owners = 0  # live BlobValue objects (they keep an unrecorded blob alive)
        self.committed = False  # recorded in the store
        self.stored = False  # its file is written
        self.deleted = False


class BlobValue(bytes):
    """An encoded ``B`` value made in this engine: while it lives, so do its blobs.

    It is plain bytes to everyone else; once a record refers to its blobs, the store keeps
    them and this object no longer matters.
    """

    def __del__(self) -> None:
        try:
            self._mgr._disown(self._ids)  # type: ignore[attr-defined]
        except Exception:  # never raise from a finalizer (e.g. at interpreter exit)
            pass


class BlobStats:
    """Counters for ``engine.statistics()["shm"]``."""

    __slots__ = ("blobs_written", "bytes_written", "lent", "loaded", "refused", "reused")

    def __init__(self) -> None:
        self.lent = 0  # segments lent to workers for outputs
        self.reused = 0  # of which, pooled segments reused
        self.refused = 0  # requests refused (shm_max_bytes reached): sent through the pipe
        self.loaded = 0  # blobs read back from the store into a segment
        self.blobs_written = 0
        self.bytes_written = 0


_managers: dict[str, BlobManager] = {}
_managers_lock = threading.Lock()


def _resolve_blob(blob_id: str, size: int) -> Any:
    """The process-wide resolver of ``B`` values: the running engine of the blob's store."""
    token = blob_id.partition(".")[0]
    manager = _managers.get(token)
    if manager is None:
        raise StoreCorrupted(
            f"large value: blob {blob_id} belongs to a store with no running engine here"
        )
    return manager.buffer(blob_id, size)


set_resolver(TAG_BLOB, _resolve_blob)


class BlobManager:
    """The engine's segments and blobs (see the module docstring).

    Args:
        store: the store (its ``blobs`` hold the durable copies).
        token: the store's blob token.
        threshold: ``shm_threshold``: buffers above it go through shared memory.
        max_bytes: most bytes of segments at once; beyond it values go through the pipe.
        write_delay: ``blob_write_delay``: seconds before a recorded blob is written.
        submit: ``submit(ops, then)`` writes ``ops`` through the store writer.
    """

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
        self._prefix = segment_prefix(token)
        self._names = itertools.count(1)
        # Where shared memory is no directory to list, the next engine's sweep finds a killed
        # engine's segments by the names recorded beside the store (a memory store has none
        # to find: its token dies with it).
        where = getattr(store, "path", None)
        self._log = (
            SegmentLog(where / "shm-segments")
            if not _platform.SHM_FILES and isinstance(where, Path) and not store.read_only
            else None
        )
        self._ids = itertools.count(1)
        self._id_base = f"{token}.{os.getpid():x}{int(time.time() * 1000):x}"
        self._segments: dict[str, _Segment] = {}
        self._free: list[_Segment] = []
        self._bytes = 0
        self._blobs: dict[str, _Blob] = {}
        #: Stored blobs nobody holds, still resident: a cache, oldest first; evictable.
        self._cached: OrderedDict[str, _Blob] = OrderedDict()
        self._lent: dict[int, dict[str, _Segment]] = {}
        self._task_holds: dict[int, list[_Blob]] = {}
        self._writes: list[tuple[float, str]] = []
        self._jobs: list[Callable[[], None]] = []
        self._unlinked: list[str] = []
        self._notify: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._gc_thread: threading.Thread | None = None
        self._stopping = False
        self.stats = BlobStats()
        #: What :meth:`recover` found: (blobs saved from segments, blobs lost, segments swept).
        self.recovered = (0, 0, 0)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, notify: Callable[[], None] | None = None) -> None:
        """Serve this store's ``B`` values in this process; start the writer thread.

        Args:
            notify: called (from any thread) when segments were unlinked, so that workers
                can be told to drop their mappings (:meth:`take_unlinked`).
        """
        self._notify = notify
        with _managers_lock:
            _managers[self.token] = self
        self._thread = threading.Thread(target=self._loop, name="actorflow-blobs", daemon=True)
        self._thread.start()
        # Clean-ups on their own thread: a slow disk write never holds them back, and a
        # clean-up cancels the pending writes of the blobs it deletes.
        self._gc_thread = threading.Thread(
            target=self._gc_loop, name="actorflow-blobs-gc", daemon=True
        )
        self._gc_thread.start()

    def stop(self) -> None:
        """Stop the thread and unlink every segment.

        Recorded blobs not yet written are written first, so nothing recorded is lost.
        """
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            self._gc_wake.notify_all()
        for thread in (self._thread, self._gc_thread):
            if thread is not None:
                thread.join(60.0)
        with self._lock:
            for bid in [b for b in self._blobs.values() if b.committed and not b.stored]:
                self._write(bid)
            for seg in list(self._segments.values()):
                self._unlink(seg)
            if self._log is not None:
                self._log.reset()
            self._blobs.clear()
            self._cached.clear()
            self._free.clear()
        with _managers_lock:
            if _managers.get(self.token) is self:
                del _managers[self.token]

    def recover(self) -> tuple[int, int, int]:
        """At start-up, before any run: save what a killed engine left in shared memory.

        Recorded blobs still missing a file are written from their segments; blobs of runs
        that ended are dropped; then every segment of this store is unlinked.

        Returns:
            (blobs saved from segments, blobs lost, segments unlinked).
        """
        from actorflow.views import blob_keep  # a cycle at import time otherwise

        saved = lost = 0
        store, files = self.store, self.store.blobs
        records = store.scan(K.BLOBS, b"b\x00")
        ended: dict[str, frozenset[str] | None] = {}
        doomed: list[tuple[str, str]] = []
        for key, raw in records:
            bid = key[2:].decode()
            rec = orjson.loads(raw)
            run = rec.get("run", "")
            if run not in ended:
                ended[run] = blob_keep(store, run)
            keep = ended[run]
            if keep is not None and bid not in keep:
                doomed.append((run, bid))
                continue
            if files.size(bid) == rec.get("size"):
                continue
            seg = rec.get("seg")
            if seg and self._save_segment(bid, seg, int(rec["size"])):
                saved += 1
            else:
                lost += 1
                log.error(
                    "blob %s of run %s was lost (the machine stopped before it reached the "
                    "disk); reading that value will fail",
                    bid,
                    run,
                )
        if doomed:
            ops: list[Op] = []
            for run, bid in doomed:
                ops.append((K.BLOBS, K.blob_key(bid), None))
                ops.append((K.BLOBS, K.blob_run_key(run, bid), None))
            store.write(ops)
            for _, bid in doomed:
                files.delete(bid)
        known = {key[2:].decode() for key, _ in records}
        for bid in files.ids():  # files whose record was never committed or was deleted
            if bid not in known:
                files.delete(bid)
        names = store_segments(self.token, self._log)
        for name in names:
            unlink_segment(name)
        if self._log is not None:
            self._log.reset()
        self.recovered = (saved, lost, len(names))
        return self.recovered

    def _save_segment(self, bid: str, name: str, size: int) -> bool:
        from actorflow.workers._shm import open_segment

        try:
            fd = open_segment(name, writable=False)
        except OSError:
            return False
        try:
            if os.fstat(fd).st_size < size:
                return False
            return self.store.blobs.write_from(bid, fd, size)
        finally:
            os.close(fd)

    # -- segments ----------------------------------------------------------------------------

    def _alloc(self, size: int) -> _Segment | None:
        """A segment of at least ``size`` bytes: pooled if one fits, else new.

        None when that would pass ``max_bytes``.
        """
        want = _round(size)
        best: _Segment | None = None
        for seg in self._free:  # the pool is small: a scan is cheap
            if want <= seg.size <= want + (want >> 2) and (best is None or seg.size < best.size):
                best = seg
        if best is not None:
            self._free.remove(best)
            self.stats.reused += 1
            return best
        for bid, blob in self._cached.items():  # evict the oldest cached blob that fits
            held = blob.seg
            if held is not None and want <= held.size <= want + (want >> 2):
                del self._cached[bid]
                self._blobs.pop(bid, None)
                blob.seg = None
                self.stats.reused += 1
                return held
        while not self._fits(want) and (self._free or self._cached):
            if self._free:
                self._unlink(max(self._free, key=lambda s: s.size))
            else:
                bid, blob = self._cached.popitem(last=False)
                self._blobs.pop(bid, None)
                if blob.seg is not None:
                    self._unlink(blob.seg)
                    blob.seg = None
        if not self._fits(want):
            self.stats.refused += 1
            return None
        while True:
            name = f"{self._prefix}{os.getpid()}_{next(self._names)}"
            try:
                if self._log is not None:
                    self._log.add(name)  # before: a kill in between leaves nothing unknown
                fd = create_segment(name, want)
                break
            except FileExistsError:
                if self._log is not None:
                    self._log.remove(name)
                continue
            except OSError as exc:
                if self._log is not None:
                    self._log.remove(name)
                log.warning("cannot create a shared-memory segment of %d bytes: %s", want, exc)
                self.stats.refused += 1
                return None
        seg = _Segment(name, want, fd)
        self._segments[name] = seg
        self._bytes += want
        return seg

    def _fits(self, want: int) -> bool:
        """Room for a new segment of ``want`` bytes.

        Within ``max_bytes``, and within what ``/dev/shm`` has free now (less a headroom for
        its other users): it is often much smaller than the memory (64 MB in a Docker
        container by default), and other processes use it too, so its free space is read at
        each new segment (a ``statvfs``; pooled segments are reused without one).
        """
        if self._bytes + want > self.max_bytes:
            return False
        total, free = shm_space()
        return total == 0 or want <= free - shm_headroom(total)

    def _release_segment(self, seg: _Segment) -> None:
        seg.idle_since = time.monotonic()
        if self._stopping:
            self._unlink(seg)
        else:
            self._free.append(seg)

    def _unlink(self, seg: _Segment) -> None:
        if self._segments.pop(seg.name, None) is None:
            return
        if seg in self._free:
            self._free.remove(seg)
        self._bytes -= seg.size
        try:
            os.close(seg.fd)
        except OSError:
            pass
        unlink_segment(seg.name)
        if self._log is not None:
            self._log.remove(seg.name)
        self._unlinked.append(seg.name)
        notify = self._notify
        if notify is not None:
            notify()

    def take_unlinked(self) -> list[str]:
        """Names unlinked since the last call (workers should drop their mappings)."""
        with self._lock:
            names, self._unlinked = self._unlinked, []
        return names

    def _settle(self, b: _Blob) -> None:
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

    def _new_blob(self, size: int, seg: _Segment) -> _Blob:
        bid = f"{self._id_base}.{next(self._ids):x}"
        b = _Blob(bid, size, seg)
        self._blobs[bid] = b
        return b

    def _owned(self, blobs: list[_Blob], inband: bytes | memoryview) -> BlobValue:
        value = BlobValue(pack_large(TAG_BLOB, [(b.id, b.size) for b in blobs], inband))
        for b in blobs:
            b.owners += 1
        value._mgr = self  # type: ignore[attr-defined]
        value._ids = [b.id for b in blobs]  # type: ignore[attr-defined]
        return value

    # -- the engine's own values (a BufferSink) ---------------------------------------------

    def place(self, inband: bytes, buffers: list[memoryview], what: str) -> bytes | None:
        """Put buffers of a value the engine encodes into segments (:func:`encode_value`)."""
        with self._lock:
            segs: list[_Segment] = []
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

    def _unhold(self, b: _Blob) -> None:
        with self._lock:
            b.holds -= 1
            self._settle(b)

    # -- workers ---------------------------------------------------------------------------

    def lend(self, task_id: int, sizes: list[int]) -> list[str] | None:
        """Segments for a task's output buffers (None: full; it uses the pipe instead)."""
        with self._lock:
            segs: list[_Segment] = []
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
            loaded: list[_Blob] = []
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

    def _load(self, bid: str, size: int) -> _Blob | None:
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
            b = self._blobs[bid] = _Blob(bid, size, seg)
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

    # -- durability ----------------------------------------------------------------------

    def meta_ops(self, ops: list[Op]) -> tuple[list[Op], list[str]]:
        """Records for the blobs that ``ops`` refer to for the first time (same transaction)."""
        extra: list[Op] = []
        ids: list[str] = []
        if not self._blobs:  # nothing unrecorded in memory: no op can be a first reference
            return extra, ids
        values = K.VALUES
        for db, key, value in ops:
            if db != values or not value or value[0] != TAG_BLOB:
                continue
            run = key.partition(b"\x00")[0].decode()
            with self._lock:
                for bid, size in unpack_large(value)[0]:
                    b = self._blobs.get(bid)
                    if b is None or b.committed or b.deleted or bid in ids:
                        continue
                    seg = b.seg.name if b.seg is not None else None
                    rec = orjson.dumps({"run": run, "size": size, "seg": seg})
                    extra.append((K.BLOBS, K.blob_key(bid), rec))
                    extra.append((K.BLOBS, K.blob_run_key(run, bid), b""))
                    ids.append(bid)
        return extra, ids

    def committed(self, ids: list[str]) -> None:
        """The records of ``ids`` are durable: write their bytes after ``write_delay``."""
        due = time.monotonic() + self.write_delay
        with self._lock:
            for bid in ids:
                b = self._blobs.get(bid)
                if b is not None:
                    b.committed = True
                    heapq.heappush(self._writes, (due, bid))
            self._wake.notify()

    def run_ended(self, run_id: str) -> None:
        """Delete the blobs ``run_id`` no longer needs (on this module's thread)."""
        with self._lock:
            self._jobs.append(lambda: self._collect(run_id))
            self._gc_wake.notify()

    def _collect(self, run_id: str) -> None:
        from actorflow.views import blob_keep

        keep = blob_keep(self.store, run_id)
        if keep is None:
            return  # not ended, or failed: a failed run may be retried
        prefix = K.blob_run_prefix(run_id)
        ids = [key[len(prefix) :].decode() for key, _ in self.store.scan(K.BLOBS, prefix)]
        doomed = [bid for bid in ids if bid not in keep]
        if not doomed:
            return
        with self._lock:
            for bid in doomed:  # stop pending writes now; nothing reads them any more
                b = self._blobs.get(bid)
                if b is not None:
                    b.deleted = True
        ops: list[Op] = []
        for bid in doomed:
            ops.append((K.BLOBS, K.blob_key(bid), None))
            ops.append((K.BLOBS, K.blob_run_key(run_id, bid), None))
        self._submit(ops, lambda: self._deleted(doomed))

    def pruned(self, ids: list[str]) -> None:
        """The records of ``ids`` were deleted with their runs (retention): drop the files.

        Called once that deletion is durable; a write still pending for one of them stops
        (or deletes the file it has just written).
        """
        self._deleted(ids)

    def _deleted(self, ids: list[str]) -> None:
        for bid in ids:
            self.store.blobs.delete(bid)
        with self._lock:
            for bid in ids:
                b = self._blobs.get(bid)
                if b is not None:
                    b.deleted = True
                    self._settle(b)

    def _write(self, b: _Blob) -> None:
        """Write ``b``'s file from its segment (the lock is released while copying)."""
        seg = b.seg
        if seg is None or _finished(b):
            return
        b.holds += 1
        self._lock.release()
        try:
            ok = self.store.blobs.write_from(b.id, seg.fd, b.size, lambda: b.deleted)
        except Exception as exc:
            ok = False
            log.error("cannot write blob %s (%d bytes); will retry: %s", b.id, b.size, exc)
            if not self._stopping:
                with self._lock:
                    heapq.heappush(self._writes, (time.monotonic() + 1.0, b.id))
        finally:
            self._lock.acquire()
        b.holds -= 1
        if ok:
            b.stored = True
            self.stats.blobs_written += 1
            self.stats.bytes_written += b.size
            if b.deleted:
                self.store.blobs.delete(b.id)
        self._settle(b)

    def _loop(self) -> None:
        with self._lock:
            while not self._stopping:
                if self._writes and self._writes[0][0] <= time.monotonic():
                    _, bid = heapq.heappop(self._writes)
                    b = self._blobs.get(bid)
                    if b is not None:
                        self._write(b)
                    continue
                self._trim(time.monotonic())
                wait = 1.0
                if self._writes:
                    wait = min(wait, max(0.0, self._writes[0][0] - time.monotonic()))
                self._wake.wait(wait)

    def _gc_loop(self) -> None:
        with self._lock:
            while not self._stopping:
                if not self._jobs:
                    self._gc_wake.wait(1.0)
                    continue
                job = self._jobs.pop(0)
                self._lock.release()
                try:
                    job()
                except Exception:
                    log.exception("blob clean-up failed")
                finally:
                    self._lock.acquire()

    def _trim(self, now: float) -> None:
        for seg in [s for s in self._free if now - s.idle_since > _IDLE]:
            self._unlink(seg)
        while self._cached:
            bid, blob = next(iter(self._cached.items()))
            held = blob.seg
            if held is not None and now - held.idle_since <= _IDLE:
                break
            del self._cached[bid]
            self._blobs.pop(bid, None)
            if held is not None:
                blob.seg = None
                self._unlink(held)

    # -- statistics ------------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """Segments, bytes and blob counters."""
        with self._lock:
            s = self.stats
            return {
                "threshold": self.threshold,
                "segments": len(self._segments),
                "free_segments": len(self._free),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "blobs": len(self._blobs),
                "in_use": len(self._segments)
                - len(self._free)
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


def _finished(b: _Blob) -> bool:
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
