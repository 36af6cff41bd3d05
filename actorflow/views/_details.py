"""Runs and steps as users see them: the dataclasses the read side builds.

``RunDetails`` (``engine.inspect``), ``RunSummary`` (``engine.runs``), ``StepDetails``,
``AttemptDetails`` and ``ErrorDetails`` are plain frozen data, built from store records by
``views/_read.py`` and from JSON by the client; nothing here reads the store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from actorflow._types import RunStatus, StepStatus
from actorflow.errors import ClientError

__all__ = [
    "AttemptDetails",
    "ErrorDetails",
    "RunDetails",
    "RunSummary",
    "StepDetails",
    "parse_status",
]


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """A recorded failure.

    Attributes:
        kind: ``error``, ``timeout``, ``crash``, ``pool``, ``run_timeout``, ``internal``, or
            ``panic`` (a code workflow's function raised or diverged: the run is panicked).
        type: qualified exception type name.
        message: the message.
        traceback: the worker's traceback text, if any, in full.
        step: the failing step, if any.
        attempt: the failing attempt, if any.
        exitcode: a crashed worker's exit code.
        signal: the signal that killed a crashed worker.
        user_traceback: the same traceback without the engine's frames (actorflow's own,
            and the ``asyncio`` plumbing it put around the user's code): the user's frames,
            chained exceptions and the exception's line; ``traceback`` itself when it holds
            no frame of the user's, or for records written before it was kept.
    """

    kind: str
    type: str
    message: str
    traceback: str = ""
    step: str | None = None
    attempt: int | None = None
    exitcode: int | None = None
    signal: str | None = None
    user_traceback: str = ""


@dataclass(frozen=True, slots=True)
class AttemptDetails:
    """One execution of a step.

    Attributes:
        attempt: its number, from 1.
        status: ``succeeded``, ``failed``, ``interrupted`` (engine stopped) or ``cancelled``.
        kind: for failures, ``error``, ``timeout``, ``crash`` or ``pool``.
        started_at: wall-clock start in the worker, if known.
        ended_at: wall-clock end, if known.
        error: a one-line summary of the failure.
        pid: the worker process id.
    """

    attempt: int
    status: str
    kind: str | None
    started_at: float | None
    ended_at: float | None
    error: str | None
    pid: int | None


@dataclass(frozen=True, slots=True)
class StepDetails:
    """A node of a run (a step, or a control-flow construct) as recorded.

    Attributes:
        name: the node's name.
        kind: ``step``, ``action``, ``branch``, ``parallel``, ``race``, ``while``,
            ``for_each``, ``batch``, ``subflow``, ``sleep`` or ``cancel``.
        status: its :class:`~actorflow.StepStatus`.
        attempt: the current (or last) attempt number; 0 if never dispatched.
        failures: failed attempts so far.
        dispatched_at: when the current attempt was recorded as dispatched (seconds since
            the epoch, as are all times here).
        started_at: when the last attempt started in its worker. Once its attempt has
            ended, the start and end are kept to the microsecond after the dispatch.
        ended_at: when the last attempt ended.
        duration: ``ended_at - started_at`` in seconds, when both are known.
        next_retry_at: when a retrying step runs again.
        error: the last failure.
        attempts: every attempt so far.
        output: a short rendering of the output (JSON text, or a placeholder for pickles).
        path: where it is: its name, or ``lines[3]/price`` inside item 3 of for_each ``lines``.
        branch: for a branch, the arm it took (None: none matched).
        winner: for a race, the arm that won.
        items: for a for_each or batch, counts: total, succeeded, failed, cancelled, pending.
        iterations: for a while, the iterations started.
        child_run_id: for a subflow, the child run.
        recovered: its output came from its ``on_error`` handler.
        input: a short rendering of what its last attempt was given, as ``output`` is
            rendered (JSON text cut to 200 characters, or a placeholder for pickled and
            large values): a code workflow step's argument list (``["a", 2]``; a
            ``ctx.map`` item's ``[item]``), a graph step's ``ctx.last`` (the item, for the
            first step of a for_each body), a subflow's or child run's payload. Recorded
            with the dispatch; None for nodes that take no input and for steps recorded by
            a release before inputs were.
    """

    name: str
    kind: str
    status: StepStatus
    attempt: int
    failures: int
    dispatched_at: float | None
    started_at: float | None
    ended_at: float | None
    duration: float | None
    next_retry_at: float | None
    error: ErrorDetails | None
    attempts: tuple[AttemptDetails, ...]
    output: str | None
    path: str = ""
    branch: str | None = None
    winner: str | None = None
    items: dict[str, int] | None = None
    iterations: int | None = None
    child_run_id: str | None = None
    recovered: bool = False
    input: str | None = None


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run in a listing.

    Attributes:
        id: the run id.
        workflow_id: its workflow.
        status: its :class:`~actorflow.RunStatus`.
        created_at: when it was triggered.
        ended_at: when it finished, if it has.
        search_attributes: its indexed attributes (``trigger(search_attributes=)``,
            ``ctx.upsert_search_attributes``).
        started_at: when it was admitted and began (None while queued).
        duration: ``ended_at - created_at``, once finished (as :class:`RunDetails` has it).
        parent_run_id: for a child run (a subflow, ``ctx.child``), the run that started it.
        idempotency_key: the key given to ``trigger``, if any.
    """

    id: str
    workflow_id: str
    status: RunStatus
    created_at: float
    ended_at: float | None
    search_attributes: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    duration: float | None = None
    parent_run_id: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class RunDetails:
    """Everything recorded about a run.

    Attributes:
        id: the run id.
        workflow_id: its workflow.
        status: its :class:`~actorflow.RunStatus`.
        created_at: when it was triggered.
        started_at: when it was admitted and began.
        ended_at: when it finished.
        duration: ``ended_at - created_at``, when finished.
        idempotency_key: the key given to ``trigger``, if any.
        payload: a short rendering of the payload.
        result: a short rendering of the result, when completed.
        error: why it failed, when failed; why it panicked (kind ``panic``, with the
            exception's type, message and traceback), while panicked.
        cancel_reason: why it was cancelled, when cancelled.
        steps: its steps in workflow order (including those not yet started).
        parent_run_id: for a child run (a subflow, ``ctx.child``), the run that started it.
        depth: 0 for a top-level run, the parent's depth + 1 for a child run (bounded by
            ``max_run_depth``).
        held: while the status is ``waiting_for_definition``, why: what the code deployed
            now lacks (the workflow, its version, or a step the run's plan reaches).
        version: the version of its workflow it runs (``engine.define(id, version=N)``);
            None while queued: it takes the newest when it starts.
        search_attributes: its indexed attributes (``trigger(search_attributes=)``,
            ``ctx.upsert_search_attributes``), as they are now.
        memo: what ``trigger(memo=)`` kept with it, or None.
    """

    id: str
    workflow_id: str
    status: RunStatus
    created_at: float
    started_at: float | None
    ended_at: float | None
    duration: float | None
    idempotency_key: str | None
    payload: str
    result: str | None
    error: ErrorDetails | None
    cancel_reason: str | None
    steps: tuple[StepDetails, ...]
    parent_run_id: str | None = None
    depth: int = 0
    held: str | None = None
    version: int | None = 1
    search_attributes: dict[str, Any] = field(default_factory=dict)
    memo: dict[str, Any] | None = None

    def step(self, path: str) -> StepDetails:
        """The node at ``path`` (a name, or ``lines[3]/price`` inside a loop body).

        Raises:
            KeyError: no such node.
        """
        for s in self.steps:
            if s.path == path:
                return s
        for s in self.steps:
            if s.name == path and "/" not in s.path:
                return s
        raise KeyError(f"run {self.id} has no step {path!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return asdict(self)


def parse_status(status: str | RunStatus | None) -> RunStatus | None:
    """Validate a status filter.

    Raises:
        ClientError: not a run status.
    """
    if status is None or isinstance(status, RunStatus):
        return status
    try:
        return RunStatus(status)
    except ValueError:
        known = ", ".join(s.value for s in RunStatus)
        raise ClientError(f"status: expected one of {known}, got {status!r}") from None
