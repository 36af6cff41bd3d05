"""Schedules from outside: pause one, resume it, or start one of its runs now.

The leader's :class:`~actorflow.triggers._schedules.Schedules` (in the engine's background
work) keeps each schedule's record; a follower forwards these calls to the leader as it
forwards ``schedules()``, through the channel's ``call`` (safe to repeat against the next
leader: a pause or resume twice is one, and a run triggered now is keyed by its instant,
chosen here, so the next leader starts it only if the last one did not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actorflow.engine._handle import RunHandle, _value, _wait
from actorflow.engine._reading import Reading
from actorflow.errors import ClientError, ScheduleNotFound
from actorflow.runtime.kernel._promise import Promise, then

if TYPE_CHECKING:
    from actorflow.triggers._schedules import Schedules

__all__ = ["Scheduling"]

#: Characters a pause's note may have (it is kept in the schedule's record).
_MAX_NOTE = 1000


class Scheduling(Reading):
    """Pausing, resuming and triggering schedules (see the engine package).

    A schedule's name is ``"<workflow>#<n>"``: the workflow's id and the schedule's position
    among that workflow's ``on_schedule`` / ``on_interval`` calls, from 0 (``"report#0"``).
    ``engine.schedules()`` lists them under ``"name"``.
    """

    def pause_schedule(self, name: str, *, note: str | None = None) -> None:
        """Pause a schedule: none of its slots fires until :meth:`resume_schedule`.

        The pause is kept in the schedule's record in the store before this returns, so it
        survives a restart (a crash included). Slots that come while it is paused are
        counted as skipped; pausing a paused schedule replaces its note.

        Args:
            name: the schedule's name (``"report#0"``: see :meth:`schedules`).
            note: why, shown by :meth:`schedules` (``"note"``) until it is resumed.

        Raises:
            ScheduleNotFound: no schedule has this name (the message lists those that do).
            ClientError: ``name`` or ``note`` is not a string (``note``: of at most 1000
                characters).
            EngineNotRunning: the engine is not running.
        """
        self._pause_schedule(name, note).result()

    async def pause_schedule_async(self, name: str, *, note: str | None = None) -> None:
        """Awaitable twin of :meth:`pause_schedule`."""
        await _wait(self._offload(self._pause_schedule, name, note))

    def resume_schedule(self, name: str) -> None:
        """Resume a paused schedule (a schedule that is not paused is left as it is).

        The slots missed while it was paused do not fire, as Temporal's unpause does not
        backfill: they are counted as skipped, and its next slot is the first one after now.
        A slot queued before the pause (``overlap="queue"``) whose run has ended starts now.
        Durable before this returns.

        Args:
            name: the schedule's name.

        Raises:
            ScheduleNotFound: no schedule has this name.
            ClientError: ``name`` is not a string.
            EngineNotRunning: the engine is not running.
        """
        self._resume_schedule(name).result()

    async def resume_schedule_async(self, name: str) -> None:
        """Awaitable twin of :meth:`resume_schedule`."""
        await _wait(self._offload(self._resume_schedule, name))

    def trigger_schedule(self, name: str) -> RunHandle:
        """Start one run of a schedule now, as a slot would; returns once it is durable.

        Its payload is a slot's (``{"scheduled_at": now, "schedule": ...}``) and its
        idempotency key ``schedule:<n>:now:<ms>``, so a call repeated within the same
        millisecond (a retried request) is the same run. It works while the schedule is
        paused, and leaves the schedule's slots as they are (its last and next slot, its
        ``fired`` count); it counts in ``"triggered"``, and as the schedule's active run for
        ``overlap`` (with ``"skip"``, a slot that comes while it runs is skipped).

        Args:
            name: the schedule's name.

        Raises:
            ScheduleNotFound: no schedule has this name.
            ClientError: ``name`` is not a string.
            EngineNotRunning: the engine is not running (or is stopping).
        """
        run_id, workflow = self._trigger_schedule(name, None).result()
        return RunHandle(self._facade, run_id, workflow)

    async def trigger_schedule_async(self, name: str) -> RunHandle:
        """Awaitable twin of :meth:`trigger_schedule`."""
        run_id, workflow = await _value(self._offload(self._trigger_schedule, name, None))
        return RunHandle(self._facade, run_id, workflow)

    # -- the promises (a follower's go to the leader) ----------------------------------------

    def _pause_schedule(self, name: str, note: str | None) -> Promise[None]:
        _check_name(name)
        if note is not None and (not isinstance(note, str) or len(note) > _MAX_NOTE):
            raise ClientError(
                f"note: expected a string of at most {_MAX_NOTE} characters or None, got "
                f"{note!r:.80}"
            )
        follower = self._follower
        if follower is not None:
            return follower.request("call", "pause_schedule", (name,), {"note": note})
        return self._schedule_table(name).pause(name, note)

    def _resume_schedule(self, name: str) -> Promise[None]:
        _check_name(name)
        follower = self._follower
        if follower is not None:
            return follower.request("call", "resume_schedule", (name,), {})
        return self._schedule_table(name).resume(name)

    def _trigger_schedule(self, name: str, at: float | None) -> Promise[tuple[str, str]]:
        """(run id, workflow) once the run is durable; ``at``: its instant (None: now)."""
        _check_name(name)
        when = self.clock.now() if at is None else at
        follower = self._follower
        if follower is not None:
            return follower.request("call", "_triggered_schedule", (name, when), {})
        self._require_core(new_work=True)
        workflow, run_id, durable = self._schedule_table(name).trigger_now(name, when)
        out: Promise[tuple[str, str]] = then(durable, (run_id, workflow))
        return out

    def _triggered_schedule(self, name: str, at: float) -> tuple[str, str]:
        """A follower's :meth:`trigger_schedule`, run by the leader (on its pool of calls)."""
        found: tuple[str, str] = self._trigger_schedule(name, at).result()
        return found

    def _schedule_table(self, name: str) -> Schedules:
        self._require_core()
        background = self._background
        if background is None:
            raise ScheduleNotFound(name)
        return background.schedules


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ClientError(
            f"name: expected a schedule's name such as 'report#0' (engine.schedules() lists "
            f"them), got {name!r}"
        )
