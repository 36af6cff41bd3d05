"""Driving a workflow test: the engine in memory, the clock moved, the script delivered.

After each step the driver waits until the engine is idle (nothing in any actor's inbox, no
step running), then delivers what the test scripted (an approval, an event, a signal) if
the run waits for it, or else moves the manual clock straight to the next timer, so a long
sleep takes no time. It stops when the run has finished, or waits for something the test
has not sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Self

from actorflow.definition._options import parse_duration
from actorflow.engine._engine import Engine
from actorflow.runtime.dispatch._executors import InlineExecutor
from actorflow.runtime.kernel._inbox import Tick
from actorflow.testing._base import (
    _code,
)
from actorflow.testing._expect import base_name
from actorflow.testing._mocks import Mocking
from actorflow.views import RunDetails

__all__ = ["Driving"]


class Driving(Mocking):
    """Running the workflow under test (see the module docstring)."""

    def approve(self, name: str, payload: Any = None) -> Self:
        """Resume the approval ``name`` (``human_in_the_loop``) when the run waits at it.

        ``payload`` is the approval's output. For a code workflow, this sends the signal
        ``name``. If the run already waits, it goes on at once.
        """
        if self._is_code():
            return self.signal(name, payload)
        self._script.approvals.append((name, payload))
        return self._continue()

    def send_event(self, event: str, payload: Any = None, *, key: str | None = None) -> Self:
        """Publish ``event`` when the run waits for it.

        An event with a ``key`` is published at once: the engine keeps it for the wait.
        """
        self._script.events.append((event, payload, key))
        return self._continue()

    def signal(
        self,
        name: str,
        payload: Any = None,
        *,
        args: list[Any] | None = None,
        run_id: str | None = None,
    ) -> Self:
        """Send the signal ``name`` to the run (a code workflow keeps it until it waits).

        ``payload`` is the handler's one argument; ``args`` instead, its list of arguments
        (as ``RunHandle.signal``).
        """
        self._script.signals.append((name, payload, args, run_id))
        return self._continue()

    def advance(self, duration: Any) -> Self:
        """Move the clock forward (``"2h"`` or seconds) and let the engine react."""
        seconds = parse_duration(duration, "advance: duration", allow_zero=True)
        self.clock.advance(seconds)
        if self._engine is not None:
            self._tick()
            self._drive()
        return self

    def run(self, *args: Any, idempotency_key: str | None = None) -> Self:
        """Trigger the workflow with ``args`` and drive it, skipping time, until it stops.

        A graph workflow takes one payload. Whenever the engine is idle, the harness gives
        the run a scripted input it waits for, or else moves the clock to the next timer (a
        sleep, a backoff, a wait's timeout). It returns when the run has finished, or waits
        for an input the test has not given and no timer is left.

        Returns:
            This harness (inspect :attr:`status`, :attr:`output`, use ``expect_*``).

        Raises:
            TimeoutError: the engine did not settle within ``timeout`` wall-clock seconds
                (a step that really blocks).
        """
        self._skipping = True
        return self._trigger(args, idempotency_key)

    def start(self, *args: Any, idempotency_key: str | None = None) -> Self:
        """Trigger the workflow and drive it until it is idle, without moving the clock.

        Then give inputs (each drives the run on, still without moving the clock), move
        time with :meth:`advance`, or skip to the end with :meth:`finish`. Use this to act
        while the run waits at something that has a timeout.
        """
        self._skipping = False
        return self._trigger(args, idempotency_key)

    def finish(self) -> Self:
        """Drive the started run to its end as :meth:`run` does (skipping time)."""
        self._handle()
        self._skipping = True
        self._drive()
        return self

    def _trigger(self, args: tuple[Any, ...], idempotency_key: str | None) -> Self:
        engine = self._ensure_engine()
        self._first_call = len(self.calls)
        self.handle = engine.trigger(self.workflow.id, *args, idempotency_key=idempotency_key)
        self._drive()
        return self

    def _continue(self) -> Self:
        if self.handle is not None and self._engine is not None:
            self._drive()
        return self

    def _ensure_engine(self) -> Engine:
        if self._engine is not None:
            return self._engine
        # Time skips by days here: finished runs are kept unless the test asks for retention
        # (a workflow's own retention still applies).
        settings = {"workers": 4, "shm_threshold": 0, "retention": 0, **self._settings}
        cache: dict[tuple[str, str], Any] = {}
        declared: set[str] = set()
        for wid, wf in self._definitions.items():
            for service in wf.build().services:
                declared.add(service.id)
                if service.id in self._services:
                    cache[(wid, service.id)] = self._services[service.id]
        unknown = sorted(set(self._services) - declared)
        if unknown:
            raise ValueError(
                f"mock_service: no workflow of this test declares {', '.join(map(repr, unknown))} "
                f"(declared: {sorted(declared) or 'none'})"
            )
        # Steps run inline, through the mocks, sharing the mocked services.
        executor = InlineExecutor()
        executor._intercept = self._intercept
        executor._services = cache
        engine = Engine(
            store="memory", executor=executor, clock=self.clock, schedules=False, **settings
        )
        with engine._lock:  # through the registry: its versions stay whole
            for wf in self._definitions.values():
                engine._register(wf)
        engine._activity = self._activity
        for wf in self._definitions.values():
            # Breakers are shared objects: each test starts with them closed.
            spec = wf.build()
            for service in spec.services:
                for breaker in service.service.breakers.values():
                    breaker.reset()
            for step in () if _code(wf) else spec.steps:
                if step.breaker is not None:
                    step.breaker.reset()
        engine.start()
        self._engine = engine
        return engine

    def _tick(self) -> None:
        engine = self._engine
        core = engine._core if engine is not None else None
        if core is not None and core.scheduler is not None:
            core.scheduler.tell(Tick())

    def _next_due(self) -> float | None:
        engine = self._engine
        core = engine._core if engine is not None else None
        if core is None or core.scheduler is None:
            return None
        due: float | None = core.scheduler.proxy().next_due(True).get(timeout=self._timeout)
        return due

    def _drive(self) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._activity.wait_idle(left):
                raise TimeoutError(
                    f"WorkflowTest: the engine did not settle within {self._timeout:g}s of "
                    f"wall-clock time (a step that really blocks?)\n{self._story()}"
                )
            if self._deliver():
                continue
            if self._handle().status().terminal or not self._skipping:
                return
            due = self._next_due()
            if due is None:
                return  # the run waits for an input the test has not given (yet)
            now = self.clock.now()
            if due > now:
                self.clock.advance(due - now)
            self._tick()

    def _deliver(self) -> bool:
        """Give the run one scripted input it can take now; True if one was given."""
        engine = self.engine
        script = self._script
        for i, (name, payload, args, run_id) in enumerate(script.signals):
            del script.signals[i]
            target = engine.run(run_id) if run_id else self._handle()
            target.signal(name, payload, args=args)
            return True
        if script.approvals:
            waiting = engine.approvals(status="waiting")
            for i, (name, payload) in enumerate(script.approvals):
                for approval in waiting:
                    if base_name(approval["step"]) == name:
                        del script.approvals[i]
                        engine.resume(approval["token"], payload)
                        return True
        for i, (event, payload, key) in enumerate(script.events):
            delivered = engine.publish(event, payload, key=key)
            if delivered or key is not None:
                del script.events[i]
                return True
        return False

    @property
    def engine(self) -> Engine:
        """The test's engine (started at the first :meth:`run`)."""
        return self._ensure_engine()

    @property
    def details(self) -> RunDetails:
        """Everything recorded about the run (``engine.inspect``)."""
        return self.engine.inspect(self.run_id)

    def _statuses(self, name: str) -> Callable[[], list[str]]:
        def statuses() -> list[str]:
            steps = self.details.steps
            return [str(s.status) for s in steps if s.name == name or base_name(s.path) == name]

        return statuses

    def _story(self) -> str:
        try:
            d = self.details
        except Exception:
            return ""
        lines = [f"run {d.id} of {d.workflow_id!r}: {d.status}"]
        if d.error is not None:
            lines.append(f"  error: {d.error.type}: {d.error.message}")
        for s in d.steps:
            lines.append(f"  {s.path:<24} {s.status}")
        return "\n".join(lines)
