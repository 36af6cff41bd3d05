"""Poll triggers: ``wf.on_poll(fn, every="1m")`` starts a run when ``fn`` returns something new.

Data flow. At start each poll trigger (workflow id and its position among the workflow's
polls) loads its record from the ``schedules`` db (``K.poll_key``): the last value that
started a run (the *cursor*) and counters. A timer (``poll:<workflow>#<index>``) fires the
first poll at start and each next one ``every`` after the last ended, so polls of one
trigger never overlap. A poll runs ``fn`` on a helper thread (it may wait on the network);
a value that is None, or the same JSON as the cursor, starts nothing. Another value starts
a run with it as the payload, with the idempotency key ``poll:<index>:<digest of (cursor,
value)>``; once the run is durable the value becomes the cursor and the record is written.

Why the key holds the old cursor as well as the value: if the engine dies after the run is
recorded but before the cursor is, the next poll sees the same change (same cursor, same
value) and its run is the one already started; while a value that comes back later (A, B,
then A again) is a change of its own and starts a run of its own.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import orjson

from actorflow.definition._triggers import PollSpec
from actorflow.runtime._core import Core
from actorflow.runtime.kernel._messages import Write
from actorflow.store import _keys as K
from actorflow.store._codec import encode_value
from actorflow.store._records import dump_record, load_record

__all__ = ["Polls"]

log = logging.getLogger("actorflow.polls")


class _Entry:
    __slots__ = ("errors", "index", "key", "name", "polls", "rec", "spec", "workflow")

    def __init__(self, workflow: str, index: int, spec: PollSpec, rec: dict[str, Any]) -> None:
        self.workflow = workflow
        self.index = index
        self.name = f"{workflow}#{index}"
        self.key = K.poll_key(workflow, index)
        self.spec = spec
        self.rec = rec  # stored: the cursor, the last run it started, runs started
        self.polls = 0  # since this engine started
        self.errors = 0


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class Polls:
    """Runs every poll trigger of the engine's workflows (see the module docstring).

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
        """Load each trigger's record and arm its first poll (now)."""
        core = self._core
        now = core.clock.now()
        with self._lock:
            for workflow, compiled in core.workflows.items():
                for index, spec in enumerate(getattr(compiled.spec, "polls", ())):
                    raw = core.store.get(K.SCHEDULES, K.poll_key(workflow, index))
                    rec = load_record(raw, "poll") if raw is not None else None
                    if rec is None:
                        rec = {"cursor": None, "run": None, "runs": 0}
                    entry = _Entry(workflow, index, spec, rec)
                    self._entries[entry.name] = entry
                    self._arm("poll:" + entry.name, now)

    def stop(self) -> None:
        """Poll no more (a poll under way ends without starting a run)."""
        with self._lock:
            self._stopped = True

    def describe(self) -> list[dict[str, Any]]:
        """Each trigger's workflow, function, interval, last value, run and counts.

        ``runs`` counts every run it started; ``polls`` and ``errors`` count since this
        engine started.
        """
        with self._lock:
            return [
                {
                    "workflow": e.workflow,
                    **e.spec.describe(),
                    "last": e.rec.get("cursor"),
                    "last_run": e.rec.get("run"),
                    "runs": e.rec.get("runs", 0),
                    "polls": e.polls,
                    "errors": e.errors,
                }
                for e in self._entries.values()
            ]

    def on_timer(self, name: str) -> None:
        """A trigger's poll is due: run it on a helper thread."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or self._stopped:
                return
        self._core.background(self._poll, entry)

    def _poll(self, entry: _Entry) -> None:
        """Call ``fn``; start a run for a new value; arm the next poll (helper thread)."""
        spec = entry.spec
        try:
            self._check(entry, spec.fn(entry.rec.get("cursor")) if spec.takes_last else spec.fn())
        except Exception as exc:
            entry.errors += 1
            log.warning("poll %s: %s: %s", entry.name, type(exc).__name__, exc)
        finally:
            with self._lock:
                if not self._stopped:
                    self._arm("poll:" + entry.name, self._core.clock.now() + spec.every)
            # Counted once the next poll is armed: whoever sees the count sees it armed.
            entry.polls += 1

    def _check(self, entry: _Entry, value: Any) -> None:
        if value is None:
            return
        try:
            new = _canonical(value)
        except TypeError as exc:
            raise TypeError(f"fn returned {value!r}, which is not JSON ({exc})") from None
        cursor = entry.rec.get("cursor")
        old = _canonical(cursor)
        if new == old:
            return
        core = self._core
        digest = hashlib.sha256(old + b"\x00" + new).hexdigest()[:32]
        data = core.input_for(entry.workflow, encode_value(value, "payload"))
        with self._lock:
            if self._stopped:
                return
            run_id, fut = core.submit(entry.workflow, data, f"poll:{entry.index}:{digest}")
        fut.result(60.0)  # durable: now the value is the cursor (if not, the next poll retries)
        entry.rec.update(cursor=value, run=run_id, runs=entry.rec.get("runs", 0) + 1)
        writer = core.writer
        if writer is not None:
            writer.tell(Write([(K.SCHEDULES, entry.key, dump_record(entry.rec))]))
        log.info("poll %s: a new value started run %s", entry.name, run_id)
