"""The scheduler: fires durable timers (retry backoff, run deadlines) when they are due.

Timer records live in the store's ``timers`` database, written by supervisors together with the
state that needs them; this actor only keeps a heap of due times. At start it loads every stored
timer, so backoffs and deadlines survive restarts; timers already past are fired at once. A
timer that fires twice, or after its run moved on, is ignored by the supervisor, which is why
nothing here needs to be deleted.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from typing import Any

import pykka

from actorflow._clock import Clock
from actorflow.runtime.kernel._inbox import Actor, ClockInbox, Tick
from actorflow.runtime.kernel._messages import AddTimers, TimerFired
from actorflow.store import _keys as K
from actorflow.store._protocol import Store

__all__ = ["Scheduler", "stored_timers"]

log = logging.getLogger("actorflow.scheduler")


class Scheduler(Actor):
    """Keeps the heap of pending timers and tells supervisors when one is due.

    Args:
        clock: the clock timers are measured on.
        route: maps a run id to its shard's actor ref.
        engine_timer: called (on this actor's thread) for timers with an empty run id: the
            engine's own, kept in memory only (schedules, rate windows, sweeps).
    """

    @staticmethod
    def _create_actor_inbox() -> Any:
        return ClockInbox()

    def __init__(
        self,
        clock: Clock,
        route: Callable[[str], pykka.ActorRef[Any]],
        engine_timer: Callable[[str, float], Any] | None = None,
    ) -> None:
        super().__init__()
        self._clock = clock
        self._route = route
        self._engine_timer = engine_timer
        self._heap: list[tuple[float, str, str]] = []
        inbox: ClockInbox = self.actor_inbox  # type: ignore[assignment]
        inbox.clock = clock
        inbox.due_fn = self._next_due

    def _next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def on_receive(self, message: Any) -> None:
        if isinstance(message, Tick):
            self._fire_due()
        elif isinstance(message, AddTimers):
            for timer in message.timers:
                heapq.heappush(self._heap, timer)
        else:
            super().on_receive(message)

    def _fire_due(self) -> None:
        now = self._clock.now()
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, run_id, name = heapq.heappop(heap)
            if not run_id:  # the engine's own (schedules, rate windows, sweeps)
                if self._engine_timer is not None:
                    try:
                        self._engine_timer(name, due)
                    except Exception:
                        log.exception("engine timer %r failed", name)
                continue
            try:
                self._route(run_id).tell(TimerFired(run_id, name, due))
            except pykka.ActorDeadError:
                return  # shutting down; the timer is still in the store for next start

    def next_due(self, runs_only: bool = False) -> float | None:
        """The next timer's due time.

        With ``runs_only``, of a run's timer or a rate window, not the engine's periodic
        sweeps and schedules: the test harness skips to it.
        """
        if not runs_only:
            return self._next_due()
        dues = [due for due, run_id, name in self._heap if run_id or name.startswith("admit:")]
        return min(dues) if dues else None

    @property
    def pending(self) -> int:
        """Timers waiting in the heap."""
        return len(self._heap)

    @property
    def lag(self) -> float:
        """Seconds the most overdue timer is late (0 when none is due).

        A scheduler that keeps up fires timers as they fall due, so this stays near 0.
        """
        if not self._heap:
            return 0.0
        return max(0.0, self._clock.now() - self._heap[0][0])


def stored_timers(store: Store) -> AddTimers:
    """Every timer recorded in ``store``, as a message for a freshly started scheduler."""
    return AddTimers(tuple(K.decode_timer_key(key) for key, _ in store.scan(K.TIMERS)))
