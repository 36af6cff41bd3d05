"""Attempts that were recorded but never started: what a stopping engine leaves exact.

Record before dispatch means a step's attempt is in the store (status ``running``, attempt
``n``) before its task reaches the dispatcher, and the store says nothing about when, or
whether, a worker took it up: recording every start would cost a commit per step. So a
recovered run cannot tell an attempt that ran and was cut off by the engine's end from one
that was still waiting for a worker, and recovery records both as ``interrupted``. That is
right after a crash or a kill, but a stop knows better: when the engine stops (drained or
not), every task that no worker started is known, because it is in one of these places:

- the dispatcher's queue, or its inbox (sent by the writer after the stop began);
- a worker's own queue (prefetched): the worker says so (``SKIPPED``) when it is told to
  stop or to drop it, and a worker that dies without saying so started at most the first
  of the tasks it had not finished (it runs them in order);
- an inline or Dask task whose step has not asked to start (:class:`StartGate`);
- a write whose tasks the writer could no longer hand to a stopped dispatcher.

For each, the engine commits a marker (``values``: run id NUL NUL task step, the attempt
number) and never sends the task. At the next start, recovery finds the run's markers: a
step still recorded as running with the marked attempt is dispatched again *with the same
attempt number* and no ``interrupted`` attempt (it never ran, so it does not count against
``max_interruptions``); a chunk of for_each items that never started is forgotten, its
items go out again as if never sent. The markers are deleted in the same write as that new
dispatch record. Why this keeps the durability invariants:

- *Record before dispatch*: a marker only ever says "not started"; the re-dispatch writes
  the step record again before its task is sent, as any dispatch.
- *Completed steps never run again*: a marker applies only to a step still recorded as
  running with that very attempt. A step whose record changed after the marker was written
  (its run was cancelled or timed out while the engine stopped) stays as recorded, and the
  marker is deleted unused. A marker never makes a started attempt look unstarted, so no
  attempt that ran can run again under its own number.
- *Recovery re-enqueues*: recovery is unchanged (running and queued runs are activated);
  the marker changes only how an in-flight attempt is counted.
- A marker is written only for a task the engine will never send in this life (it is
  stopping), and is committed after the record it refers to (the task existed only once
  its record was durable). When unsure (a worker killed between two tasks, a message that
  raced the stop), no marker is written: the attempt is recorded as interrupted, as after a
  crash, which is the safe side.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable
from typing import Any

from actorflow.runtime.kernel._inbox import tell
from actorflow.runtime.kernel._messages import Dispatch, TaskSpec, Write
from actorflow.store import _keys as K
from actorflow.store._protocol import Op, Store
from actorflow.store._records import dump_record, load_record

__all__ = ["StartGate", "left_in_inbox", "marker_ops", "record", "take"]


def marker_ops(tasks: Iterable[TaskSpec]) -> list[Op]:
    """The store ops that mark ``tasks`` as never started."""
    return [
        (K.VALUES, K.unstarted_key(t.run_id, t.step), dump_record({"attempt": t.attempt}))
        for t in tasks
    ]


def record(writer: Any, tasks: Iterable[TaskSpec]) -> None:
    """Have the store writer commit markers for ``tasks`` (none if it is gone)."""
    ops = marker_ops(tasks)
    if ops and writer is not None:
        tell(writer, Write(ops))


def left_in_inbox(inbox: Any) -> list[TaskSpec]:
    """The tasks of ``Dispatch`` messages still in a stopped dispatcher's inbox.

    pykka drops what is left in a stopped actor's inbox; a ``Dispatch`` the writer sent just
    as the stop began would be lost without a trace. Other messages stay for pykka.
    """
    take = getattr(inbox, "take", None)
    if take is None:
        return []
    return [t for m in take(lambda m: type(m) is Dispatch) for t in m.tasks]


def take(store: Store, run_id: str, ops: list[Op]) -> dict[str, int]:
    """A run's markers (task step -> attempt), read at its recovery; ``ops`` deletes them.

    ``ops`` should be the recovery's own write (the one with the new dispatch records).
    """
    prefix = K.unstarted_prefix(run_id)
    found: dict[str, int] = {}
    for key, raw in store.scan(K.VALUES, prefix):
        ops.append((K.VALUES, key, None))
        try:
            found[key[len(prefix) :].decode()] = int(load_record(raw, "marker")["attempt"])
        except (KeyError, TypeError, ValueError):
            continue  # unreadable: the attempt counts as interrupted
    return found


class StartGate:
    """Which tasks sent to another executor have started, decided once, across threads.

    A step asks to start (:meth:`begin`, on the thread that runs it) before it calls the
    user's function; the dispatcher closes the gate when it drains or stops. After
    :meth:`close`, no step starts, so the tasks it does not list as begun never ran.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._begun: set[Hashable] = set()
        self._closed = False

    def begin(self, key: Hashable) -> bool:
        """May task ``key`` start? True once per task, until the gate closes."""
        with self._lock:
            if self._closed:
                return False
            self._begun.add(key)
            return True

    def started(self, key: Hashable) -> bool:
        """Whether task ``key`` was let start."""
        with self._lock:
            return key in self._begun

    def end(self, key: Hashable) -> None:
        """Task ``key`` is over (forget it)."""
        with self._lock:
            self._begun.discard(key)

    def close(self) -> frozenset[Hashable]:
        """Let no task start from now on; the tasks that had started (and not ended)."""
        with self._lock:
            self._closed = True
            return frozenset(self._begun)
