"""The blob ledger: the engine's large values, in shared-memory segments and blob files.

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
import threading
import time
from collections.abc import Callable

from actorflow.runtime.blobs import _recovery
from actorflow.runtime.blobs._ledger import BlobLedger, _finished, log
from actorflow.runtime.blobs._values import Blob, register, unregister
from actorflow.store import _keys as K
from actorflow.store._codec import (
    TAG_BLOB,
    unpack_large,
)
from actorflow.store._protocol import Op
from actorflow.store._records import dump_record

__all__ = ["BlobManager"]


class BlobManager(BlobLedger):
    """The engine's segments and blobs (see the module docstring).

    Args:
        store: the store (its ``blobs`` hold the durable copies).
        token: the store's blob token.
        threshold: ``shm_threshold``: buffers above it go through shared memory.
        max_bytes: most bytes of segments at once; beyond it values go through the pipe.
        write_delay: ``blob_write_delay``: seconds before a recorded blob is written.
        submit: ``submit(ops, then)`` writes ``ops`` through the store writer.
    """

    def start(self, notify: Callable[[], None] | None = None) -> None:
        """Serve this store's ``B`` values in this process; start the writer thread.

        Args:
            notify: called (from any thread) when segments were unlinked, so that workers
                can be told to drop their mappings (:meth:`take_unlinked`).
        """
        self._pool.notify = notify
        register(self.token, self)
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
            self._pool.unlink_all()
            self._blobs.clear()
            self._cached.clear()
        unregister(self.token, self)

    def recover(self) -> tuple[int, int, int]:
        """At start-up, before any run: save what a killed engine left in shared memory.

        See ``_recovery.py``: recorded blobs still missing a file are written from their
        segments, blobs of runs that ended are dropped, every segment is unlinked.

        Returns:
            (blobs saved from segments, blobs lost, segments unlinked).
        """
        self.recovered = _recovery.recover(self.store, self.token, self._pool.log)
        return self.recovered

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
                    rec = dump_record({"run": run, "size": size, "seg": seg})
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

    def _write(self, b: Blob) -> None:
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
