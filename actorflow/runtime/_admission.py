"""Admission: which new runs may start now, under workflows' and queues' limits.

Data flow. A new run's supervisor asks :meth:`Admission.try_acquire` before it records the
run: admitted, it is recorded running and begins; not, it is recorded queued (durably, so
it survives a restart) and waits here. A run that finishes calls :meth:`Admission.release`
(through ``core.on_run_finished``), which returns the queued runs admitted in its place,
each with the time it was admitted; the engine sends each an ``ActivateRun`` carrying that
time, which becomes the run's ``started_at``. The time is read under the admission lock, so
runs admitted one after another start one after another in their records too, even when
their shards take them up in another order. A rate window that is full arms a timer through
``on_wait``; when it fires, :meth:`Admission.admit_ready` admits what the window allows.

Limits belong to a *group*: a workflow with its own ``concurrency`` / ``rate_limit`` is a
group of one (keyed by its id), and every workflow given one :class:`~actorflow.Queue`
shares the queue's group (keyed ``queue/<name>``, which no workflow id can be). A group
admits in trigger order, or, when its queue has ``priority=True``, lowest priority first
and then in trigger order. Recovery rebuilds the groups from the store: running runs are
adopted (they hold their slots), queued ones are offered again in run-id (= trigger) order
with the priority their record keeps. Rate windows are in memory only: after a restart a
window starts empty.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Admission"]

_INF = float("inf")


class _Group:
    """One set of limits and the runs it holds (under the admission lock)."""

    __slots__ = ("active", "dropped", "limit", "priority", "rate", "starts", "waiting")

    def __init__(self, limit: int | None, rate: tuple[int, float] | None, priority: bool) -> None:
        self.limit = limit
        self.rate = rate
        self.priority = priority
        self.active: set[str] = set()
        #: (priority, arrival, run id): a heap; ``priority`` is 0 unless the queue orders by it.
        self.waiting: list[tuple[int, int, str]] = []
        #: Waiting runs that ended (cancelled while queued): skipped when they come up.
        self.dropped: set[str] = set()
        self.starts: deque[float] = deque()  # start times within the rate window

    def __len__(self) -> int:
        return len(self.waiting) - len(self.dropped)


class Admission:
    """Workflows' and queues' limits: how many runs may be active, how many start per window.

    Args:
        limits: workflow -> most active runs (None: no limit).
        rates: workflow -> (runs, window seconds) (None: no limit).
        clock: measures rate windows.
    """

    def __init__(
        self,
        limits: dict[str, int | None],
        rates: dict[str, tuple[int, float] | None] | None = None,
        clock: Any = None,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._groups: dict[str, _Group] = {}
        self._of: dict[str, str] = {}  # workflow -> its group's key (limited workflows only)
        self._arrival = itertools.count()
        rates = rates or {}
        for workflow in {*limits, *rates}:
            self.set_limit(workflow, limits.get(workflow), rates.get(workflow))
        #: ``on_wait(group, due)``: queued runs wait for the rate window until ``due``.
        self.on_wait: Callable[[str, float], Any] | None = None

    def set_limit(
        self,
        workflow: str,
        limit: int | None,
        rate: tuple[int, float] | None = None,
        queue: Any = None,
    ) -> None:
        """Record a workflow's limits: its own (None: unlimited), or its queue's.

        A group that exists keeps the runs it holds; only its limits change.
        """
        if queue is not None:
            key, limits = queue.group, (queue.concurrency, queue.rate, queue.priority)
        elif limit is not None or rate is not None:
            key, limits = workflow, (limit, rate, False)
        else:
            with self._lock:
                self._of.pop(workflow, None)
            return
        with self._lock:
            self._of[workflow] = key
            group = self._groups.get(key)
            if group is None:
                self._groups[key] = _Group(*limits)
            else:
                group.limit, group.rate, group.priority = limits

    def group_of(self, workflow: str) -> str | None:
        """The key of the group that limits ``workflow``'s runs, or None (no limit)."""
        return self._of.get(workflow)

    def orders_by_priority(self, workflow: str) -> bool:
        """Whether ``workflow``'s queued runs start by priority (its queue's ``priority``)."""
        with self._lock:
            key = self._of.get(workflow)
            return key is not None and self._groups[key].priority

    def groups(self) -> list[str]:
        """The keys of every limited group."""
        with self._lock:
            return list(self._groups)

    def _room(self, group: _Group) -> float:
        """0 if a run may start now, else when the rate window has room (inf: not by time)."""
        if group.limit is not None and len(group.active) >= group.limit:
            return _INF
        if group.rate is None:
            return 0.0
        count, window = group.rate
        now = self._clock.now()
        starts = group.starts
        while starts and starts[0] <= now - window:
            starts.popleft()
        if len(starts) < count:
            return 0.0
        return starts[0] + window

    def _now(self) -> float:
        return self._clock.now() if self._clock is not None else time.time()

    def _admit(self, group: _Group, run_id: str) -> None:
        group.active.add(run_id)
        if group.rate is not None:
            group.starts.append(self._now())

    def try_acquire(self, workflow: str, run_id: str, priority: int = 0) -> bool:
        """Admit a new run now (True), or queue it behind earlier ones (False).

        ``priority`` orders it among the queued runs when its queue orders by priority
        (lowest first); elsewhere it is ignored.
        """
        due: float | None = None
        with self._lock:
            key = self._of.get(workflow)
            if key is None:
                return True
            group = self._groups[key]
            if not len(group):
                room = self._room(group)
                if room == 0.0:
                    self._admit(group, run_id)
                    return True
                if room != _INF:
                    due = room
            rank = priority if group.priority else 0
            heapq.heappush(group.waiting, (rank, next(self._arrival), run_id))
        if due is not None and self.on_wait is not None:
            self.on_wait(key, due)
        return False

    def adopt(self, workflow: str, run_id: str) -> None:
        """Count a recovered (or continued) running run against its workflow's limit."""
        with self._lock:
            key = self._of.get(workflow)
            if key is not None and self._groups[key].limit is not None:
                self._groups[key].active.add(run_id)

    def release(self, workflow: str, run_id: str) -> list[tuple[str, float]]:
        """A run finished: free its slot; return the queued runs admitted in its place.

        Returns:
            (run id, when it was admitted) for each, in admission order.
        """
        with self._lock:
            key = self._of.get(workflow)
            if key is None:
                return []
            group = self._groups[key]
            if run_id in group.active:
                group.active.discard(run_id)
            else:
                if any(entry[2] == run_id for entry in group.waiting):
                    group.dropped.add(run_id)  # ended while queued (cancelled)
                return []
        return self.admit_ready(key)

    def admit_ready(self, key: str) -> list[tuple[str, float]]:
        """Admit a group's queued runs while its limits allow; arm a wait if the window is full.

        ``key`` is a group's key (a limited workflow's id names its own group).

        Returns:
            (run id, when it was admitted) for each, in admission order.
        """
        admitted: list[tuple[str, float]] = []
        due: float | None = None
        with self._lock:
            group = self._groups.get(key)
            if group is None:
                return admitted
            waiting = group.waiting
            while waiting:
                if waiting[0][2] in group.dropped:
                    group.dropped.discard(heapq.heappop(waiting)[2])
                    continue
                room = self._room(group)
                if room != 0.0:
                    if room != _INF:
                        due = room
                    break
                nxt = heapq.heappop(waiting)[2]
                self._admit(group, nxt)
                admitted.append((nxt, self._now()))
        if due is not None and self.on_wait is not None:
            self.on_wait(key, due)
        return admitted

    def queued(self, workflow: str) -> int:
        """Runs waiting for admission in ``workflow``'s group (its queue's, if it has one)."""
        with self._lock:
            key = self._of.get(workflow)
            return len(self._groups[key]) if key is not None else 0

    def active(self, workflow: str) -> int:
        """Runs holding a slot in ``workflow``'s group (its queue's, if it has one)."""
        with self._lock:
            key = self._of.get(workflow)
            return len(self._groups[key].active) if key is not None else 0
