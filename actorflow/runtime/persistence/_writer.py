"""The store writer: the only actor that writes the store, with group commit.

Writes from every actor queue up in this actor's inbox. Whenever the inbox is empty (or the
batch is full) everything collected so far is committed in one transaction, and only then are
the senders' callbacks run: a sender is acknowledged only after its write is durable. While one
group commits (an fsync takes a few hundred microseconds), the next group gathers, so the
commit rate adapts to the load by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import pykka

from actorflow import _faults
from actorflow.errors import StoreFull, WriteRejected
from actorflow.runtime.kernel._counts import BATCH_BUCKETS, COMMIT_BUCKETS, Histogram
from actorflow.runtime.kernel._inbox import Actor, tell
from actorflow.runtime.kernel._messages import AddTimers, CancelTasks, Dispatch, Write
from actorflow.runtime.persistence._unstarted import marker_ops
from actorflow.store._protocol import Op, Store

__all__ = ["StoreWriter", "Targets", "WriterStats"]

log = logging.getLogger("actorflow.store")

_SYNC_EVERY = 1.0  # seconds between fsyncs in "fast" mode
_RETRY_FIRST, _RETRY_MAX = 0.05, 2.0  # seconds between commit attempts on a full store


class _RetryCommit:
    """Try the writes held back by a full store again."""


_RETRY = _RetryCommit()


class Targets(Protocol):
    """Where the writer delivers a group's effects (the engine core)."""

    dispatcher: Any
    scheduler: Any


class WriterStats:
    """Counters of the writer, read by ``engine.statistics()`` and tests."""

    __slots__ = (
        "batch_sizes",
        "batches",
        "commit_seconds",
        "largest_batch",
        "ops",
        "rejected",
        "writes",
    )

    def __init__(self) -> None:
        self.batches = 0  # transactions committed
        self.writes = 0  # Write messages acknowledged
        self.ops = 0  # key writes and deletes
        self.largest_batch = 0  # most Write messages in one transaction
        self.rejected = 0  # Write messages the store refused for their content
        self.commit_seconds = Histogram(COMMIT_BUCKETS)  # for the metrics
        self.batch_sizes = Histogram(BATCH_BUCKETS)

    def as_dict(self) -> dict[str, float]:
        """The counters, with the mean batch size."""
        return {
            "commits": self.batches,
            "writes": self.writes,
            "ops": self.ops,
            "largest_batch": self.largest_batch,
            "rejected": self.rejected,
            "mean_batch": self.writes / self.batches if self.batches else 0.0,
        }


class StoreWriter(Actor):
    """Commits batches of :class:`Write` messages.

    Args:
        store: the store to write.
        max_batch: most ops per transaction.
        periodic_sync: fsync at most every second (for the "fast" durability mode).
        on_failure: called once with the error if a commit fails for good; the engine then
            stops taking work, since the senders' state is ahead of the store.
        on_full: called with a ``StoreFull`` when commits start waiting for space (the disk,
            or max_map_size), and with None once they succeed again. Nothing is dropped
            meanwhile: the writes are held, in order, and retried with a growing delay.
        targets: where a group's dispatches, timers and cancels go.
        blobs: the large-value manager: a large value's blobs are recorded in the same
            transaction as the first record that refers to them (``runtime/blobs/_manager.py``).
    """

    def __init__(
        self,
        store: Store,
        max_batch: int,
        periodic_sync: bool,
        on_failure: Callable[[BaseException], Any],
        targets: Targets | None = None,
        blobs: Any = None,
        on_full: Callable[[BaseException | None], Any] | None = None,
    ) -> None:
        super().__init__()
        self._on_full = on_full
        self._held: list[Write] = []  # writes a full store refused, oldest first
        self._full = False  # commits wait for space
        self._retry_in = _RETRY_FIRST
        self._targets = targets
        self._blobs = blobs
        self._store = store
        self._max_batch = max_batch
        self._periodic_sync = periodic_sync
        self._on_failure = on_failure
        self._pending: list[Write] = []
        self._pending_ops = 0
        self._last_sync = time.monotonic()
        self._failed: BaseException | None = None
        self.stats = WriterStats()

    def on_receive(self, message: Any) -> None:
        if type(message) is Write:
            self._pending.append(message)
            self._pending_ops += len(message.ops)
            if self._held:
                return  # behind the held writes: they go first, at the next retry
            if self._pending_ops >= self._max_batch or self.actor_inbox.empty():
                self._flush()
        elif message is _RETRY:
            self._retry()
        else:
            super().on_receive(message)

    def _handle_receive(self, message: Any) -> Any:
        # Every message, pykka's own included (a proxy reading ``stats``), may be the one
        # that arrived while a Write waited for the inbox to empty: a Write is never left
        # pending behind a message that is not a Write.
        result = super()._handle_receive(message)
        if self._pending and not self._held and self.actor_inbox.empty():
            self._flush()
        return result

    def on_stop(self) -> None:
        if self._held:
            # One last try; writes that still cannot be committed were never acknowledged,
            # so recovery redoes their work at the next start (nothing acknowledged is lost).
            self._pending[:0], self._held = self._held, []
        self._flush()
        if self._pending:
            self._flush()  # the markers of tasks the stopped dispatcher could not take
        if self._periodic_sync and self._failed is None:
            self._store.sync()

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._pending_ops = 0
        if not batch:
            return
        if self._failed is not None:
            self._fail(batch, self._failed)
            return
        done, rest, exc = self._commit(batch)
        if exc is not None:
            if (
                isinstance(exc, StoreFull)
                and self._on_full is not None
                and self.actor_ref.is_alive()
            ):
                self._hold(rest, exc)
            else:
                if not isinstance(exc, StoreFull):
                    log.critical("store commit failed; the engine stops taking work: %s", exc)
                self._failed = exc
                self._fail(rest, exc)
                self._on_failure(exc)
        if not done:
            return
        if self._full and exc is None:
            self._full = False
            self._retry_in = _RETRY_FIRST
            log.warning("store writable again: held writes committed, new work accepted")
            if self._on_full is not None:
                self._on_full(None)
        self.stats.writes += len(done)
        if _faults.ACTIVE:
            _faults.crash_point("writer.after_commit")
        if self._periodic_sync:
            now = time.monotonic()
            if now - self._last_sync >= _SYNC_EVERY:
                self._store.sync()
                self._last_sync = now
        self._deliver(done)
        for w in done:
            for callback in w.then:
                try:
                    callback()
                except Exception:  # a stopped receiver at shutdown; never lose the others
                    log.debug("write callback failed", exc_info=True)

    def _commit(self, batch: list[Write]) -> tuple[list[Write], list[Write], BaseException | None]:
        """Commit ``batch``, leaving out exactly the writes the store rejects.

        One transaction if the store takes it all; if it rejects what the batch carries,
        parts that leave out exactly the rejected writes (their senders get the error). A
        rejection (:class:`WriteRejected`: a key LMDB cannot hold...) is about one write's
        content, so it must not cost the writes grouped with it: the group is split in
        halves until each rejected write is alone (``2 log2(n)`` extra commits for one bad
        write in ``n``), keeping the order of the others. Any other error stops there.

        Returns:
            The writes committed (in order), the writes not committed when a store error
            stopped it (in order), and that error (None if none).
        """
        done: list[Write] = []
        todo: deque[list[Write]] = deque([batch])
        while todo:
            part = todo.popleft()
            try:
                self._write(part)
            except WriteRejected as exc:
                if len(part) > 1:
                    half = len(part) // 2
                    todo.appendleft(part[half:])
                    todo.appendleft(part[:half])
                    continue
                self.stats.rejected += 1
                log.error(
                    "the store refused one write for its content (its sender is told; the "
                    "writes grouped with it are committed): %s",
                    exc,
                )
                self._fail(part, exc)
            except Exception as exc:
                return done, [w for p in (part, *todo) for w in p], exc
            else:
                done.extend(part)
        return done, [], None

    def _write(self, part: list[Write]) -> None:
        """One transaction for ``part`` (with the records of the blobs it refers to)."""
        ops: list[Op] = []
        for w in part:
            ops.extend(w.ops)
        if not ops:
            return
        blob_ids: list[str] = []
        if self._blobs is not None:
            try:
                extra, blob_ids = self._blobs.meta_ops(ops)
            except (KeyError, TypeError, ValueError) as exc:  # a malformed large value
                raise WriteRejected(f"a large value in this write is malformed: {exc}") from exc
            ops.extend(extra)
        began = time.perf_counter()
        self._store.write(ops)
        stats = self.stats
        stats.commit_seconds.observe(time.perf_counter() - began)
        stats.batches += 1
        stats.ops += len(ops)
        stats.batch_sizes.observe(len(part))
        if len(part) > stats.largest_batch:
            stats.largest_batch = len(part)
        if blob_ids:
            self._blobs.committed(blob_ids)

    def _hold(self, batch: list[Write], exc: StoreFull) -> None:
        """Keep ``batch`` (in order, before anything newer) and retry after a delay."""
        if not self._full:
            self._full = True
            log.error("%s: commits wait for space and are retried; new work is refused", exc)
            assert self._on_full is not None
            self._on_full(exc)
        self._held = batch
        delay = self._retry_in
        self._retry_in = min(delay * 2, _RETRY_MAX)
        timer = threading.Timer(delay, tell, (self.actor_ref, _RETRY))
        timer.daemon = True
        timer.start()

    def _retry(self) -> None:
        if not self._held:
            return
        self._pending[:0], self._held = self._held, []
        self._pending_ops = sum(len(w.ops) for w in self._pending)
        self._flush()

    def _deliver(self, batch: list[Write]) -> None:
        """Carry out the group's effects: one message per receiver for the whole group."""
        tasks = [t for w in batch for t in w.dispatch]
        timers = [t for w in batch for t in w.timers]
        cancels = [r for w in batch for r in w.cancel]
        stops = [t for w in batch for t in w.cancel_tasks]
        if not (tasks or timers or cancels or stops):
            return
        targets = self._targets
        if targets is None:
            raise RuntimeError("this writer has no dispatcher or scheduler to deliver to")
        try:
            # Dispatch before cancel: a run cancelled in the same group loses its new tasks.
            if tasks:
                try:
                    targets.dispatcher.tell(Dispatch(tuple(tasks)))
                except pykka.ActorDeadError:
                    # The engine stops: these tasks never start. Their markers go in the next
                    # commit (after this one, which holds their records): recovery sends
                    # them again as the same attempts, not as interrupted ones.
                    markers = marker_ops(tasks)
                    self._pending.append(Write(markers))
                    self._pending_ops += len(markers)
                    raise
            if cancels or stops:
                targets.dispatcher.tell(CancelTasks(tuple(cancels), tuple(stops)))
            if timers:
                targets.scheduler.tell(AddTimers(tuple(timers)))
        except pykka.ActorDeadError:
            log.debug("engine stopping: effects left to recovery")

    @staticmethod
    def _fail(batch: list[Write], exc: BaseException) -> None:
        for w in batch:
            if w.on_error is not None:
                try:
                    w.on_error(exc)
                except Exception:
                    log.debug("write error callback failed", exc_info=True)
