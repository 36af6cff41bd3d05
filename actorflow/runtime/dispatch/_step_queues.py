"""Steps given an :class:`~actorflow.Queue`: held in the dispatcher until their queue has room.

Data flow. A step defined with ``queue=q`` (``.step(..., queue=q)``, ``ctx.step(...,
queue=q)``) is recorded and dispatched like any step; its task carries the queue. The
dispatcher asks :meth:`StepQueues.admit` before it gives the task to the transport: with
room (fewer than ``concurrency`` of the queue's tasks out, and the rate window not full)
it goes at once and holds a slot; else it waits here, in the task table but not sent, so
it is not late (deadlines count from a step's start) and not an attempt yet. When a task
that holds a slot leaves the table (it finished, failed, timed out, was cancelled or given
back), :meth:`release` frees the slot, and the dispatcher sends what :meth:`ready` lets go,
oldest first (lowest run priority first on a queue with ``priority=True``). A full rate
window sets :meth:`next_due`, which the dispatcher waits for like a deadline.

Why here and not in the supervisors: the limit is over every run of every workflow, and the
dispatcher is the one place every task passes, on one thread. Nothing here is stored: after
a restart, recovery dispatches the steps again and they queue the same way, so the limit
holds across restarts; a rate window starts empty.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from actorflow.runtime.dispatch._transport import Task

__all__ = ["StepQueues"]


class _Lane:
    """One queue's slots and waiting tasks."""

    __slots__ = ("active", "limit", "priority", "rate", "starts", "waiting")

    def __init__(self, queue: Any) -> None:
        self.limit: int | None = queue.concurrency
        self.rate: tuple[int, float] | None = queue.rate
        self.priority: bool = queue.priority
        self.active: set[int] = set()  # ids of the tasks holding a slot
        self.waiting: list[tuple[int, int, int]] = []  # (rank, arrival, task id): a heap
        self.starts: deque[float] = deque()

    def room(self, now: float) -> float:
        """0 if a task may go now; else when the window has room (inf: not by time)."""
        if self.limit is not None and len(self.active) >= self.limit:
            return float("inf")
        if self.rate is None:
            return 0.0
        count, window = self.rate
        starts = self.starts
        while starts and starts[0] <= now - window:
            starts.popleft()
        return 0.0 if len(starts) < count else starts[0] + window


class StepQueues:
    """The queues of the steps given one (see the module docstring); one dispatcher's own.

    Args:
        clock: seconds, monotonic (the dispatcher's deadlines' clock).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lanes: dict[str, _Lane] = {}
        self._held: dict[int, Task] = {}  # task id -> a task waiting for its queue
        self._arrival = itertools.count()
        self._due: float | None = None  # the earliest full rate window's end
        self.dirty = False  # a slot was freed (or a window may have room): call ready()

    def _lane(self, queue: Any) -> _Lane:
        lane = self._lanes.get(queue.name)
        if lane is None:
            lane = self._lanes[queue.name] = _Lane(queue)
        return lane

    def admit(self, task: Task) -> bool:
        """True: ``task`` may go now (it holds a slot); False: it waits here."""
        spec = task.spec
        lane = self._lane(spec.queue)
        if not lane.waiting:
            now = self._clock()
            room = lane.room(now)
            if room == 0.0:
                self._take(lane, task.id, now)
                return True
            self._wait_until(room)
        rank = spec.rank if lane.priority else 0
        heapq.heappush(lane.waiting, (rank, next(self._arrival), task.id))
        self._held[task.id] = task
        return False

    def held(self, task: Task) -> bool:
        """Whether ``task`` waits here (it was never sent)."""
        return task.id in self._held

    def release(self, task: Task) -> None:
        """``task`` left the table: free its slot, or forget it if it was waiting."""
        if self._held.pop(task.id, None) is not None:
            return  # its heap entry is skipped when it comes up
        lane = self._lanes.get(task.spec.queue.name)
        if lane is not None and task.id in lane.active:
            lane.active.discard(task.id)
            self.dirty = True

    def ready(self) -> list[Task]:
        """The waiting tasks that may go now, each holding a slot (oldest first)."""
        self.dirty = False
        self._due = None
        now = self._clock()
        out: list[Task] = []
        held = self._held
        for lane in self._lanes.values():
            waiting = lane.waiting
            while waiting:
                task = held.get(waiting[0][2])
                if task is None:
                    heapq.heappop(waiting)  # cancelled while it waited
                    continue
                room = lane.room(now)
                if room != 0.0:
                    self._wait_until(room)
                    break
                heapq.heappop(waiting)
                del held[task.id]
                self._take(lane, task.id, now)
                out.append(task)
        return out

    def take_all(self) -> list[Task]:
        """Every waiting task, removed (a drain: none of them will start)."""
        tasks = list(self._held.values())
        self._held.clear()
        for lane in self._lanes.values():
            lane.waiting.clear()
        return tasks

    def next_due(self) -> float | None:
        """When a full rate window has room again (monotonic seconds), or None."""
        return self._due

    def _take(self, lane: _Lane, task_id: int, now: float) -> None:
        lane.active.add(task_id)
        if lane.rate is not None:
            lane.starts.append(now)

    def _wait_until(self, due: float) -> None:
        if due != float("inf") and (self._due is None or due < self._due):
            self._due = due
