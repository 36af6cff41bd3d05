"""``WorkflowTest``: run a workflow in memory, in milliseconds, with time skipped.

The harness starts a real engine (the same supervisors, writer and evaluator as in
production) on the in-memory store, with steps run inline on threads of the test's process
and a :class:`~actorflow.ManualClock`. After each step it waits until the engine is idle
(nothing in any actor's inbox, no step running: ``runtime/kernel/_inbox.Activity``); then it
delivers what the test scripted (an approval, an event, a signal) if the run waits for it,
or else moves the clock straight to the next timer (a sleep, a retry backoff, a wait's
timeout), so a 24-hour sleep takes no time. It stops when the run has finished, or waits for
something the test has not sent yet.
"""

from __future__ import annotations

from typing import Any

from actorflow._types import RunStatus
from actorflow.errors import (
    ActorflowError,
    ResultTimeout,
)
from actorflow.testing._base import (
    _is,
)
from actorflow.testing._driver import Driving
from actorflow.testing._expect import CallExpectation, same

__all__ = ["WorkflowTest"]


class WorkflowTest(Driving):
    """Run a workflow in memory with mocks, scripted inputs and skipped time.

    ``wf.test(payload)`` is the short form: it builds this harness and runs it. The
    workflow's sibling workflows (defined on the same engine) come along, so subflows and
    child runs work; pass others with ``workflows=``.

    Example::

        t = WorkflowTest(orders)
        t.mock_step("score", returns=0.99)
        t.approve("approve", {"by": "grace"})     # given when the run asks for it
        t.run({"amount": 20_000})
        t.expect_status("completed")
        t.expect_step("score").times(1)

    Args:
        workflow: a graph workflow (``engine.define(...)``) or a code workflow
            (``@engine.workflow(...)``).
        workflows: more workflows to define on the test engine (children, subflows).
        start: the manual clock's start time (seconds since the epoch).
        timeout: wall-clock seconds a :meth:`run` may take before it fails (a step that
            really hangs).
        **settings: engine settings (``workers=``, ``event_ttl=``...).
    """

    def __enter__(self) -> WorkflowTest:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:  # the test failed already: its error is the one to see
            self._stop()

    def expect_status(self, status: str | RunStatus) -> WorkflowTest:
        """The run's status is ``status`` (``"completed"``, ``"failed"``...)."""
        got = self.status
        if got != RunStatus(status):
            raise AssertionError(f"expected the run to be {status}, it is {got}\n{self._story()}")
        return self

    def expect_output(self, value: Any) -> WorkflowTest:
        """The run completed with ``value`` (compared as stored)."""
        self.expect_status(RunStatus.COMPLETED)
        got = self.result()
        if same(got) != same(value):
            raise AssertionError(f"expected the run's output {value!r}, got {got!r}")
        return self

    def expect_error(
        self, exc_type: type[BaseException] = ActorflowError, match: str | None = None
    ) -> WorkflowTest:
        """The run ended with an error of ``exc_type``, whose message contains ``match``.

        The run's error and its causes (the step's own exception) are searched.
        """
        try:
            value = self.result()
        except ResultTimeout:
            raise AssertionError(f"expected the run to fail; it is {self.status}") from None
        except BaseException as exc:
            chain = [exc]
            while chain[-1].__cause__ is not None and len(chain) < 10:
                chain.append(chain[-1].__cause__)
            if not any(_is(e, exc_type) for e in chain):
                raise AssertionError(
                    f"expected {exc_type.__name__}, the run failed with "
                    + " <- ".join(f"{type(e).__name__}: {e}" for e in chain)
                ) from exc
            if match is not None and not any(match in str(e) for e in chain):
                raise AssertionError(f"expected an error matching {match!r}, got {exc}") from exc
            return self
        raise AssertionError(f"expected the run to fail; it completed with {value!r}")

    def expect_step(self, name: str) -> CallExpectation:
        """Assertions on the calls of the step ``name`` in the current run."""
        return CallExpectation(f"step {name!r}", self._calls_of(name), self._statuses(name))

    def expect_action(self, name: str) -> CallExpectation:
        """The action ``name`` ran in the current run; assertions on its calls."""
        expectation = CallExpectation(
            f"action {name!r}", self._calls_of(name), self._statuses(name)
        )
        return expectation.called()

    def expect_service(self, service_id: str, action: str) -> CallExpectation:
        """Assertions on the calls of a mocked service's action in the current run."""
        label = f"{service_id}.{action}"
        return CallExpectation(
            f"service action {label!r}", self._calls_of(label), self._statuses(label)
        )
