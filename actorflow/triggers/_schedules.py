"""Schedules: start runs at cron or interval slots, one run per slot, across restarts.

Each schedule (workflow id and its position among the workflow's schedules) has a record in
the ``schedules`` db: the last slot handled, the run it started, slots queued behind it. A
slot's run is triggered with the idempotency key ``schedule:<n>:<slot ms>``, so even if the
engine dies between starting the run and recording the slot, the slot never starts a second
run: that is what "a restart never double-fires a slot" rests on. At start, slots missed while
no engine ran are fired per ``catch_up``; a schedule seen for the first time (or whose
expression changed) starts from now.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from actorflow._types import RunStatus
from actorflow.definition._triggers import ScheduleSpec
from actorflow.runtime._core import Core
from actorflow.runtime.kernel._messages import Write
from actorflow.runtime.kernel._promise import Promise
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._records import dump_record, load_record
from actorflow.triggers._cron import next_fire, next_interval, slots_between

__all__ = ["Schedules"]

log = logging.getLogger("actorflow.schedules")

#: Most missed slots fired at start with ``catch_up="all"`` (the latest ones).
MAX_CATCH_UP = 1000


class _Entry:
    __slots__ = ("index", "key", "name", "pending", "rec", "spec", "workflow")

    def __init__(self, workflow: str, index: int, spec: ScheduleSpec, rec: dict[str, Any]) -> None:
        self.workflow = workflow
        self.index = index
        self.name = f"{workflow}#{index}"
        self.key = K.schedule_key(workflow, index)
        self.spec = spec
        self.rec = rec
        self.pending: Promise[None] | None = None  # the last run's trigger, until durable


class Schedules:
    """Fires every schedule of the engine's workflows.

    Args:
        core: the engine core.
        arm: ``arm(name, due)`` adds an engine timer.
    """

    def __init__(self, core: Core, arm: Callable[[str, float], Any]) -> None:
        self._core = core
        self._arm = arm
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._stopped = False

    def start(self) -> None:
        """Load each schedule's record, fire missed slots per ``catch_up``, arm the next."""
        core = self._core
        now = core.clock.now()
        with self._lock:
            for workflow, compiled in core.workflows.items():
                for index, spec in enumerate(compiled.spec.schedules):
                    raw = core.store.get(K.SCHEDULES, K.schedule_key(workflow, index))
                    rec = load_record(raw, "schedule") if raw is not None else None
                    fresh = rec is None or rec.get("spec") != spec.describe()
                    if fresh:
                        rec = {
                            "spec": spec.describe(),
                            "anchor": now,
                            "last": now,
                            "run": None,
                            "queued": [],
                            "fired": 0,
                            "skipped": 0,
                        }
                    assert rec is not None
                    entry = _Entry(workflow, index, spec, rec)
                    self._entries[entry.name] = entry
                    if not fresh:
                        self._catch_up(entry, now)
                    self._save(entry)
                    self._arm_next(entry, max(now, rec["last"]))

    def stop(self) -> None:
        """Fire nothing more."""
        with self._lock:
            self._stopped = True

    def describe(self) -> list[dict[str, Any]]:
        """Each schedule: workflow, spec, last slot, next slot, runs fired and slots skipped."""
        now = self._core.clock.now()
        with self._lock:
            return [
                {
                    "workflow": e.workflow,
                    **e.spec.describe(),
                    "last": e.rec["last"],
                    "next": self._next(e, max(now, e.rec["last"])),
                    "last_run": e.rec.get("run"),
                    "fired": e.rec.get("fired", 0),
                    "skipped": e.rec.get("skipped", 0),
                    "queued": len(e.rec.get("queued", [])),
                }
                for e in self._entries.values()
            ]

    def on_timer(self, name: str, due: float) -> None:
        """A schedule's timer is due: handle every slot up to now, then arm the next."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or self._stopped:
                return
            now = self._core.clock.now()
            last = entry.rec["last"]
            if due <= last:
                return  # a stale timer: that slot was handled
            for slot in self._slots(entry, last, now, MAX_CATCH_UP):
                self._slot(entry, slot)
                entry.rec["last"] = slot
            self._save(entry)
            self._arm_next(entry, max(now, entry.rec["last"]))

    def run_finished(self, run_id: str, workflow: str) -> None:
        """A run ended: start the next queued slot of the schedule that started it."""
        with self._lock:
            if self._stopped:
                return
            for entry in self._entries.values():
                if entry.workflow != workflow or entry.rec.get("run") != run_id:
                    continue
                if entry.rec.get("queued"):
                    slot = entry.rec["queued"].pop(0)
                    self._fire(entry, slot)
                    self._save(entry)

    # -- internals (under the lock) --------------------------------------------------------

    def _catch_up(self, entry: _Entry, now: float) -> None:
        policy = entry.spec.catch_up
        missed = self._slots(entry, entry.rec["last"], now, MAX_CATCH_UP)
        if not missed:
            return
        if policy == "none":
            log.info(
                "schedule %s: %d slot(s) missed while stopped, skipped", entry.name, len(missed)
            )
        elif policy == "latest":
            self._slot(entry, missed[-1])
        else:
            # Every missed slot runs: with overlap "skip" they queue behind each other
            # rather than skip themselves (only "allow" runs them side by side).
            for slot in missed:
                self._slot(entry, slot, catching_up=True)
        entry.rec["last"] = missed[-1]

    def _slots(self, entry: _Entry, after: float, until: float, limit: int) -> list[float]:
        spec = entry.spec
        return slots_between(
            spec.cron, spec.interval, spec.tz, entry.rec["anchor"], after, until, limit
        )

    def _next(self, entry: _Entry, after: float) -> float:
        spec = entry.spec
        if spec.interval:
            return next_interval(spec.interval, entry.rec["anchor"], after)
        return next_fire(spec.cron or "", spec.tz, after)

    def _arm_next(self, entry: _Entry, after: float) -> None:
        self._arm("schedule:" + entry.name, self._next(entry, after))

    def _slot(self, entry: _Entry, slot: float, catching_up: bool = False) -> None:
        if entry.spec.overlap != "allow" and self._previous_active(entry):
            if entry.spec.overlap == "queue" or catching_up:
                entry.rec.setdefault("queued", []).append(slot)
            else:
                entry.rec["skipped"] = entry.rec.get("skipped", 0) + 1
                log.info(
                    "schedule %s: slot %s skipped, run %s is still active",
                    entry.name,
                    _iso(slot),
                    entry.rec.get("run"),
                )
            return
        self._fire(entry, slot)

    def _previous_active(self, entry: _Entry) -> bool:
        run_id = entry.rec.get("run")
        if run_id is None:
            return False
        raw = self._core.store.get(K.RUNS, K.run_key(run_id))
        if raw is None:  # triggered, not yet durable: active unless its trigger failed
            return entry.pending is not None and not entry.pending.done()
        return not RunStatus(load_record(raw, "run")["status"]).terminal

    def _fire(self, entry: _Entry, slot: float) -> None:
        spec = entry.spec
        payload = {
            "scheduled_at": _iso(slot),
            "schedule": spec.cron if spec.cron else f"every {spec.interval:g}s",
        }
        key = f"schedule:{entry.index}:{round(slot * 1000)}"
        try:
            data = self._core.input_for(entry.workflow, encode_value(payload, "payload"))
            run_id, fut = self._core.submit(entry.workflow, data, key)
        except Exception:
            log.exception("schedule %s: could not start the run of %s", entry.name, _iso(slot))
            return
        entry.pending = fut
        entry.rec["run"] = run_id
        entry.rec["fired"] = entry.rec.get("fired", 0) + 1

    def _save(self, entry: _Entry) -> None:
        writer = self._core.writer
        if writer is not None:
            writer.tell(Write([(K.SCHEDULES, entry.key, dump_record(entry.rec))]))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
