"""Schedules: start runs at cron or interval slots, one run per slot, across restarts.

Each schedule (workflow id and its position among the workflow's schedules, named
``"<workflow>#<n>"``) has a record in the ``schedules`` db: the last slot handled, the run it
started, slots queued behind it, whether it is paused. A slot's run is triggered with the
idempotency key ``schedule:<n>:<slot ms>``, so even if the engine dies between starting the
run and recording the slot, the slot never starts a second run: that is what "a restart never
double-fires a slot" rests on. At start, slots missed while no engine ran are fired per
``catch_up``; a schedule seen for the first time (or whose expression changed) starts from
now.

A paused schedule's timer still comes at each slot, and the slot is counted as skipped (the
cursor moves past it): so on resume nothing is left to fire, as Temporal's unpause does not
backfill, and the next slot is the first after now. The pause is in the record, written
before ``pause`` answers: it survives any restart (slots missed meanwhile are skipped too,
whatever ``catch_up`` says). A run triggered now (``trigger_now``) has the key
``schedule:<n>:now:<ms>``, leaves the cursor where it is, and counts as the schedule's
active run for ``overlap``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from actorflow._types import RunStatus
from actorflow.definition._triggers import ScheduleSpec
from actorflow.errors import EngineNotRunning, ScheduleNotFound
from actorflow.runtime._core import Core
from actorflow.runtime.kernel._messages import Write
from actorflow.runtime.kernel._promise import Promise, resolved
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._protocol import Op
from actorflow.store._records import dump_record, load_record
from actorflow.triggers._cron import next_fire, next_interval, slots_between

__all__ = ["Schedules"]

log = logging.getLogger("actorflow.schedules")

#: Most missed slots fired at start with ``catch_up="all"`` (the latest ones).
MAX_CATCH_UP = 1000


class _Entry:
    __slots__ = ("index", "key", "manual", "name", "pending", "rec", "spec", "workflow")

    def __init__(self, workflow: str, index: int, spec: ScheduleSpec, rec: dict[str, Any]) -> None:
        self.workflow = workflow
        self.index = index
        self.name = f"{workflow}#{index}"
        self.key = K.schedule_key(workflow, index)
        self.spec = spec
        self.rec = rec
        self.pending: Promise[None] | None = None  # the last run's trigger, until durable
        self.manual: Promise[None] | None = None  # the same, of the last run triggered now


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
                        old = rec or {}
                        rec = {
                            "spec": spec.describe(),
                            "anchor": now,
                            "last": now,
                            "run": None,
                            "queued": [],
                            "fired": 0,
                            "skipped": 0,
                            # A pause is the schedule's (its name), not its expression's.
                            "paused": bool(old.get("paused")),
                            "note": old.get("note"),
                        }
                    assert rec is not None
                    entry = _Entry(workflow, index, spec, rec)
                    self._entries[entry.name] = entry
                    if not fresh and rec.get("paused"):
                        self._skip(entry, now)  # missed while stopped and paused: skipped
                    elif not fresh:
                        self._catch_up(entry, now)
                    self._save(entry)
                    self._arm_next(entry, max(now, rec["last"]))

    def stop(self) -> None:
        """Fire nothing more."""
        with self._lock:
            self._stopped = True

    def describe(self) -> list[dict[str, Any]]:
        """Each schedule: name, workflow, spec, pause, last and next slot, counts."""
        now = self._core.clock.now()
        with self._lock:
            return [
                {
                    "name": e.name,
                    "workflow": e.workflow,
                    **e.spec.describe(),
                    "paused": bool(e.rec.get("paused")),
                    "note": e.rec.get("note"),
                    "last": e.rec["last"],
                    "next": None if e.rec.get("paused") else self._next(e, max(now, e.rec["last"])),
                    "last_run": e.rec.get("run"),
                    "fired": e.rec.get("fired", 0),
                    "skipped": e.rec.get("skipped", 0),
                    "queued": len(e.rec.get("queued", [])),
                    "triggered": e.rec.get("triggered", 0),
                }
                for e in self._entries.values()
            ]

    def pause(self, name: str, note: str | None) -> Promise[None]:
        """Pause ``name`` (again: a new note); the promise completes once that is durable.

        Raises:
            ScheduleNotFound: no schedule has this name.
        """
        with self._lock:
            entry = self._entry(name)
            entry.rec["paused"] = True
            entry.rec["note"] = note
            return self._save(entry, durable=True)

    def resume(self, name: str) -> Promise[None]:
        """Unpause ``name``: slots up to now are skipped, the next is the first after now.

        A slot queued before the pause (``overlap="queue"``) whose run has ended since starts
        now, as it would have when that run ended. The promise completes once it is durable.

        Raises:
            ScheduleNotFound: no schedule has this name.
        """
        with self._lock:
            entry = self._entry(name)
            if not entry.rec.get("paused"):
                return resolved(None)
            now = self._core.clock.now()
            self._skip(entry, now)
            entry.rec["paused"] = False
            entry.rec["note"] = None
            queued = entry.rec.get("queued")
            if queued and not self._stopped and not self._previous_active(entry):
                self._fire(entry, queued.pop(0))
            done = self._save(entry, durable=True)
            self._arm_next(entry, max(now, entry.rec["last"]))
            return done

    def trigger_now(self, name: str, at: float) -> tuple[str, str, Promise[None]]:
        """Start a run of ``name`` for the instant ``at``, paused or not, cursor untouched.

        Returns:
            (workflow, run id, a promise completed once the run is durable). The same
            ``at`` (to the millisecond) is the same run.

        Raises:
            ScheduleNotFound: no schedule has this name.
        """
        with self._lock:
            entry = self._entry(name)
            key = f"schedule:{entry.index}:now:{round(at * 1000)}"
            run_id, fut = self._start(entry, at, key)
            if entry.rec.get("manual") != run_id:  # not a repeat of the same instant
                entry.manual = fut
                entry.rec["manual"] = run_id
                entry.rec["triggered"] = entry.rec.get("triggered", 0) + 1
                self._save(entry)
            return entry.workflow, run_id, fut

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
            if entry.rec.get("paused"):
                self._skip(entry, now)  # the slots come, and none fires
            else:
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
                if entry.workflow != workflow or run_id not in (
                    entry.rec.get("run"),
                    entry.rec.get("manual"),
                ):
                    continue
                if entry.rec.get("paused"):
                    continue  # the queue waits for the resume
                if entry.rec.get("queued") and not self._previous_active(entry):
                    slot = entry.rec["queued"].pop(0)
                    self._fire(entry, slot)
                    self._save(entry)

    # -- internals (under the lock) --------------------------------------------------------

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise ScheduleNotFound(name, list(self._entries))
        return entry

    def _skip(self, entry: _Entry, until: float) -> None:
        """Count every slot in (last, ``until``] as skipped (a paused schedule's) and move past."""
        rec = entry.rec
        t, n = rec["last"], 0
        while (slot := self._next(entry, t)) <= until:
            t, n = slot, n + 1
        if n:
            rec["last"] = t
            rec["skipped"] = rec.get("skipped", 0) + n
            log.debug("schedule %s: paused, %d slot(s) skipped up to %s", entry.name, n, _iso(t))

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
        """The schedule's last run, or the last one triggered now, is active."""
        return self._active(entry.rec.get("run"), entry.pending) or self._active(
            entry.rec.get("manual"), entry.manual
        )

    def _active(self, run_id: str | None, pending: Promise[None] | None) -> bool:
        if run_id is None:
            return False
        raw = self._core.store.get(K.RUNS, K.run_key(run_id))
        if raw is None:  # triggered, not yet durable: active unless its trigger failed
            return pending is not None and not pending.done()
        return not RunStatus(load_record(raw, "run")["status"]).terminal

    def _start(self, entry: _Entry, slot: float, key: str) -> tuple[str, Promise[None]]:
        """Start the run of ``slot`` (the payload every run of the schedule gets)."""
        spec = entry.spec
        payload = {
            "scheduled_at": _iso(slot),
            "schedule": spec.cron if spec.cron else f"every {spec.interval:g}s",
        }
        data = self._core.input_for(entry.workflow, encode_value(payload, "payload"))
        return self._core.submit(entry.workflow, data, key)

    def _fire(self, entry: _Entry, slot: float) -> None:
        key = f"schedule:{entry.index}:{round(slot * 1000)}"
        try:
            run_id, fut = self._start(entry, slot, key)
        except Exception:
            log.exception("schedule %s: could not start the run of %s", entry.name, _iso(slot))
            return
        entry.pending = fut
        entry.rec["run"] = run_id
        entry.rec["fired"] = entry.rec.get("fired", 0) + 1

    def _save(self, entry: _Entry, durable: bool = False) -> Promise[None]:
        """Write the record; the promise completes once it is durable (if ``durable``)."""
        done: Promise[None] = Promise()
        writer = self._core.writer
        if writer is None:
            done.set_exception(EngineNotRunning("the engine is not running"))
            return done
        ops: list[Op] = [(K.SCHEDULES, entry.key, dump_record(entry.rec))]
        if not durable:
            writer.tell(Write(ops))
            done.set_result(None)
            return done
        writer.tell(
            Write(
                ops, then=(functools.partial(done.set_result, None),), on_error=done.set_exception
            )
        )
        return done


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
