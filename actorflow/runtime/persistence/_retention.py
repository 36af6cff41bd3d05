"""Retention: the engine prunes finished runs past their workflow's retention.

Each workflow keeps its finished runs for its ``retention`` (``engine.define(...,
retention="7d")``), or the engine's (``EngineConfig.retention``, 30 days by default); 0 keeps
them forever. Retention counts from a run's end, on the engine's clock, and applies only to
finished runs (completed, failed, cancelled, continued as new).

The engine's ``prune`` timer (every ``sweep_interval``, on the scheduler's thread) only wakes
this module's thread, which does the pass: it reads the end-time index and the runs' records
and hands each batch of deletes to the store writer, waiting for it to be durable before it
reads the next. So the scheduler never waits, and each write is one short transaction among
the hot path's group commits. The deletes themselves are built by ``store/_prune.py``, which
``actorflow store prune`` uses too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka

from actorflow.definition._options import parse_duration
from actorflow.errors import ClientError, DefinitionError, StoreError
from actorflow.runtime._core import Core
from actorflow.runtime.kernel._messages import Write
from actorflow.runtime.kernel._promise import Promise
from actorflow.store._archive import RunArchive
from actorflow.store._protocol import Op
from actorflow.store._prune import PruneReport, Selection, indexed_workflows, prune

__all__ = ["Pruner", "retention_of"]

log = logging.getLogger("actorflow.retention")

#: Seconds a batch may wait for the writer (a full store holds every write) before the
#: pass gives up; the next pass starts again where this one stopped.
_WRITE_WAIT = 120.0


def retention_of(core: Core, workflow: str) -> float:
    """Seconds ``workflow`` keeps its finished runs (0: forever).

    Its own ``retention``, else the engine's (also for workflows not defined here).
    """
    compiled = core.workflows.get(workflow)
    own = getattr(compiled.spec, "retention", None) if compiled is not None else None
    return float((core.config.retention or 0.0) if own is None else own)


class Pruner:
    """Prunes the engine's finished runs, on its own thread or on a caller's.

    Args:
        core: the engine core (its writer must be running).
    """

    def __init__(self, core: Core) -> None:
        self._core = core
        self._pass = threading.Lock()  # one pass at a time: background or engine.prune()
        self._wake = threading.Condition()
        self._kicked = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: The last background pass's report.
        self.last: PruneReport | None = None
        self._pruned = self._passes = 0
        self._longest = 0.0

    def statistics(self) -> dict[str, Any]:
        """Runs pruned and passes made since start, and the longest write a pass made."""
        return {
            "pruned": self._pruned,
            "passes": self._passes,
            "longest_write_ms": round(self._longest * 1000, 3),
        }

    def start(self) -> None:
        """Start the thread that runs background passes."""
        self._thread = threading.Thread(target=self._loop, name="actorflow-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop at the next batch (a pass in progress ends after its current write)."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(_WRITE_WAIT)

    def _stopped(self) -> bool:
        # A method, not the attribute: the type checker would narrow a test of it after a wait.
        return self._stopping

    def kick(self) -> None:
        """Run a background pass soon (from the scheduler's thread: never blocks)."""
        with self._wake:
            self._kicked = True
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._kicked and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                self._kicked = False
            try:
                report = self.run(self._retained())
            except Exception:  # keep the thread: the next pass tries again
                if self._stopped():
                    return  # cut short by the stop: the next start's passes go on
                log.exception("retention pass failed")
                continue
            self.last = report
            if report.runs:
                log.info(
                    "retention: pruned %d finished runs (%d blobs, ~%d KiB) in %d writes",
                    report.runs,
                    report.blobs,
                    report.bytes // 1024,
                    report.batches,
                )

    def _retained(self) -> Selection:
        """Each workflow with finished runs, and the end time before which they go."""
        now = self._core.clock.now()
        out = []
        for workflow in indexed_workflows(self._core.store):
            keep = retention_of(self._core, workflow)
            if keep > 0:
                out.append((workflow, now - keep))
        return out

    def selection(self, older_than: Any, workflow: Any) -> Selection:
        """What ``engine.prune(older_than, workflow)`` prunes.

        Raises:
            ClientError: ``older_than`` is not a duration, or ``workflow`` not a string.
        """
        if workflow is not None and (not isinstance(workflow, str) or not workflow):
            raise ClientError(f"workflow: expected a workflow id or None, got {workflow!r}")
        workflows = [workflow] if workflow is not None else indexed_workflows(self._core.store)
        if older_than is None:
            retained = dict(self._retained())
            return [(w, retained[w]) for w in workflows if w in retained]
        try:
            seconds = parse_duration(older_than, "older_than", allow_zero=True)
        except DefinitionError as exc:
            raise ClientError("; ".join(exc.problems)) from None
        cutoff = self._core.clock.now() - seconds
        return [(w, cutoff) for w in workflows]

    def run(
        self, selection: Selection, dry_run: bool = False, archive: str | None = None
    ) -> PruneReport:
        """Prune ``selection`` now, on this thread; returns once every batch is durable."""
        with self._pass:
            if archive is None or dry_run:
                report = self._prune(selection, dry_run, None)
            else:
                with RunArchive(archive) as out:
                    report = self._prune(selection, dry_run, out)
            if not dry_run:
                self._pruned += report.runs
                self._passes += 1
                self._longest = max(self._longest, report.longest_write)
            return report

    def _prune(self, selection: Selection, dry_run: bool, archive: Any) -> PruneReport:
        core = self._core
        return prune(
            core.store,
            selection,
            self._submit,
            self._delete_files,
            dry_run=dry_run,
            archive=archive,
            pause=self._stopped,
        )

    def _submit(self, ops: list[Op]) -> Callable[[], None]:
        """Hand a batch to the store writer; the returned function waits until it is durable."""
        writer = self._core.writer
        if writer is None:
            raise StoreError("the engine is stopping: nothing more is pruned")
        done: Promise[None] = Promise()
        try:
            writer.tell(
                Write(ops, then=(lambda: done.set_result(None),), on_error=done.set_exception)
            )
        except pykka.ActorDeadError:
            raise StoreError("the engine is stopping: nothing more is pruned") from None

        def wait() -> None:
            deadline = time.monotonic() + _WRITE_WAIT
            while True:  # in slices: a stop must not wait behind a full store's held writes
                try:
                    done.result(0.25)
                    return
                except TimeoutError:
                    if self._stopped():
                        raise StoreError("the engine is stopping: nothing more is pruned") from None
                    if time.monotonic() > deadline:
                        raise StoreError(
                            f"retention: a batch of deletes was not durable within "
                            f"{_WRITE_WAIT:g}s (is the store full?); the next pass goes on "
                            "from there"
                        ) from None

        return wait

    def _delete_files(self, blob_ids: list[str]) -> None:
        core = self._core
        if core.config.durability == "fast":
            core.store.sync()  # the records' deletion is on disk before the files go
        blobs = core.blobs
        if blobs is not None:
            blobs.pruned(blob_ids)
        else:
            for blob_id in blob_ids:
                core.store.blobs.delete(blob_id)
