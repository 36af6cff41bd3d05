"""The engine's own timed work: schedules, polls, rate windows, sweeps, retention.

Retention (pruning finished runs) only wakes its own thread here: see ``_retention.py``.

These are timers with an empty run id in the scheduler's heap, kept in memory only: at start
they are recomputed from the store (schedule records, queued runs), so nothing here needs a
durable timer of its own. Handlers run on the scheduler's thread and must not block: they
only tell other actors and hand writes to the store writer.
"""

from __future__ import annotations

import logging
from typing import Any

import pykka

from actorflow.runtime._core import Core
from actorflow.runtime.kernel._messages import ActivateRun, AddTimers, Flush, Write
from actorflow.runtime.kernel._promise import Promise
from actorflow.runtime.persistence._retention import Pruner
from actorflow.triggers._polls import Polls
from actorflow.triggers._schedules import Schedules

__all__ = ["Background"]

log = logging.getLogger("actorflow.runtime")


class Background:
    """Arms and handles the engine's own timers.

    Args:
        core: the engine core (its scheduler must be started).
    """

    def __init__(self, core: Core) -> None:
        self._core = core
        self._armed: dict[str, float] = {}  # admit timers already in the heap
        self.schedules = Schedules(core, self._arm)
        self.polls = Polls(core, self._arm)
        self.pruner = Pruner(core)
        core.admission.on_wait = self._rate_wait

    def start(self) -> None:
        """Arm the first sweep, retention and the schedules (firing slots missed while stopped)."""
        due = self._core.clock.now() + self._core.config.sweep_interval
        self._arm("sweep", due)
        self.pruner.start()
        self._arm("prune", due)
        if self._core.config.schedules:
            self.schedules.start()
            self.polls.start()
        for group in self._core.admission.groups():
            self._admit(group)  # runs queued behind a rate window before a restart

    def stop(self) -> None:
        """Stop firing (timers left in the heap are ignored) and pruning."""
        self.schedules.stop()
        self.polls.stop()
        self.pruner.stop()
        self._core.admission.on_wait = None

    def on_timer(self, name: str, due: float) -> None:
        """A timer of the engine's is due."""
        kind, _, arg = name.partition(":")
        if kind == "sweep":
            self.sweep()
            self._arm("sweep", self._core.clock.now() + self._core.config.sweep_interval)
        elif kind == "prune":
            self.pruner.kick()  # the pass runs on the pruner's thread
            self._arm("prune", self._core.clock.now() + self._core.config.sweep_interval)
        elif kind == "admit":
            self._armed.pop(arg, None)
            self._admit(arg)
        elif kind == "schedule":
            self.schedules.on_timer(arg, due)
        elif kind == "poll":
            self.polls.on_timer(arg)

    def run_finished(self, run_id: str, workflow: str) -> None:
        """A run's final state is durable (a schedule with queued slots may go on)."""
        self.schedules.run_finished(run_id, workflow)

    def sweep(self) -> None:
        """Delete expired state entries and buffered events; trim the sticky caches."""
        core = self._core
        if core.config.sticky_cache_ttl:
            for shard in core.shards:  # a shard trims its cache as it handles a message
                shard.tell(Flush(Promise()))
        removed = core.state.sweep()
        ops = core.events.expired()
        if ops and core.writer is not None:
            core.writer.tell(Write(ops))
        if removed or ops:
            log.debug("sweep: %d state entries, %d buffered events expired", removed, len(ops))

    def _admit(self, group: str) -> None:
        for run_id, at in self._core.admission.admit_ready(group):
            try:
                self._core.route(run_id).tell(ActivateRun(run_id, at))
            except pykka.ActorDeadError:
                return

    def _rate_wait(self, group: str, due: float) -> None:
        armed = self._armed.get(group)
        if armed is not None and armed <= due:
            return
        self._armed[group] = due
        self._arm("admit:" + group, due)

    def _arm(self, name: str, due: float) -> None:
        scheduler: Any = self._core.scheduler
        if scheduler is None:
            return
        try:
            scheduler.tell(AddTimers(((due, "", name),)))
        except pykka.ActorDeadError:
            pass
