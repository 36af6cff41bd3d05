"""The fluent workflow builder.

``engine.define(...)`` returns a :class:`Workflow`; its methods record steps and return the
builder, so definitions chain. Nothing is validated piecemeal: :meth:`Workflow.build` (called by
the engine at start, or at the first trigger of a workflow defined later) checks everything at
once and raises one :class:`~actorflow.errors.DefinitionError` listing every problem.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from actorflow.definition._options import NO_RETRY, Retry, parse_duration
from actorflow.definition._spec import StepKind, StepSpec, WorkflowSpec, function_ref
from actorflow.errors import DefinitionError

__all__ = ["Workflow", "validate_name"]

_MAX_NAME = 200


def validate_name(name: Any, what: str) -> str | None:
    """Return a problem with ``name`` (a workflow id or step name), or None if it is fine."""
    if not isinstance(name, str) or not name.strip():
        return f"{what}: expected a non-empty string, got {name!r}"
    if len(name.encode()) > _MAX_NAME:
        return f"{what}: expected at most {_MAX_NAME} bytes, got {len(name.encode())}"
    if any(ord(c) < 32 for c in name):
        return f"{what}: must not contain control characters (NUL, newline...), got {name!r}"
    return None


@dataclass(frozen=True, slots=True)
class _RawStep:
    name: Any
    fn: Any
    kind: StepKind
    timeout: Any
    retry: Any
    position: int


class Workflow:
    """A workflow under definition; chain ``.step(...)`` and ``.action(...)`` calls.

    Created by :meth:`actorflow.Engine.define`; not meant to be constructed directly.

    Args:
        workflow_id: the workflow's id.
        retry: default retry policy of its steps (default: no retry).
        timeout: time the whole run may take (a duration); past it the run fails with
            :class:`~actorflow.errors.RunTimeout` and its running steps are killed.
        step_timeout: default timeout of each step.
        concurrency: most runs active at once; more are queued in trigger order.
        description: free text shown by the CLI.
    """

    def __init__(
        self,
        workflow_id: str,
        *,
        retry: Retry | None = None,
        timeout: Any = None,
        step_timeout: Any = None,
        concurrency: int | None = None,
        description: str = "",
    ) -> None:
        # Raw values, validated all at once by build(): callers may be untyped.
        self._id: Any = workflow_id
        self._retry: Any = retry
        self._timeout: Any = timeout
        self._step_timeout: Any = step_timeout
        self._concurrency: Any = concurrency
        self._description: Any = description
        self._steps: list[_RawStep] = []
        self._spec: WorkflowSpec | None = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        """The workflow id."""
        return str(self._id)

    def step(
        self,
        name: str,
        fn: Callable[[Any], Any],
        *,
        timeout: Any = None,
        retry: Retry | None = None,
    ) -> Self:
        """Add a step: ``fn(ctx)`` runs in a worker process; its return value is recorded.

        Args:
            name: unique within the workflow.
            fn: a function of one argument, the step context. ``async def`` works too.
            timeout: a duration; past it the worker is killed and the attempt fails.
            retry: overrides the workflow's retry policy.

        Returns:
            This builder, to chain further calls.
        """
        return self._add(name, fn, "step", timeout, retry)

    def action(
        self,
        name: str,
        fn: Callable[[Any], Any],
        *,
        timeout: Any = None,
        retry: Retry | None = None,
    ) -> Self:
        """Add an action: a side-effect step; ``ctx.last`` after it is still the last step's.

        Its return value is recorded like a step's (``ctx.steps[name].output``). Arguments are
        those of :meth:`step`.
        """
        return self._add(name, fn, "action", timeout, retry)

    def _add(self, name: Any, fn: Any, kind: StepKind, timeout: Any, retry: Any) -> Self:
        with self._lock:
            if self._spec is not None:
                raise DefinitionError(
                    "is already built (its engine has started or it was triggered); "
                    "define every step before that",
                    self._id,
                )
            self._steps.append(_RawStep(name, fn, kind, timeout, retry, len(self._steps)))
        return self

    def build(self) -> WorkflowSpec:
        """Validate everything and return the immutable spec (cached after the first call).

        Raises:
            DefinitionError: listing every problem found.
        """
        with self._lock:
            if self._spec is None:
                self._spec = self._build()
            return self._spec

    def _build(self) -> WorkflowSpec:
        problems: list[str] = []
        if (p := validate_name(self._id, "workflow id")) is not None:
            problems.append(p)
        default_retry = NO_RETRY
        if self._retry is not None:
            if isinstance(self._retry, Retry):
                default_retry = self._retry
            else:
                problems.append(f"retry: expected af.Retry(...), got {self._retry!r}")
        timeout = self._duration(self._timeout, "timeout", problems)
        step_timeout = self._duration(self._step_timeout, "step_timeout", problems)
        concurrency = self._concurrency
        if concurrency is not None and (
            not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
        ):
            problems.append(f"concurrency: expected an integer >= 1, got {concurrency!r}")
            concurrency = None
        if not isinstance(self._description, str):
            problems.append(f"description: expected a string, got {self._description!r}")
        if not self._steps:
            problems.append("has no steps: add one with .step(name, fn)")

        seen: dict[str, int] = {}
        specs: list[StepSpec] = []
        for raw in self._steps:
            where = f"step {raw.position + 1}"
            name_problem = validate_name(raw.name, f"{where}: name")
            if name_problem is not None:
                problems.append(name_problem)
                continue
            where = f"{raw.kind} {raw.name!r}"
            if raw.name in seen:
                problems.append(
                    f"{where}: duplicate name (steps {seen[raw.name] + 1} and "
                    f"{raw.position + 1}); step names must be unique"
                )
            else:
                seen[raw.name] = raw.position
            fn_problem = _check_fn(raw.fn)
            if fn_problem is not None:
                problems.append(f"{where}: {fn_problem}")
            step_t = self._duration(raw.timeout, f"{where}: timeout", problems)
            retry = default_retry
            if raw.retry is not None:
                if isinstance(raw.retry, Retry):
                    retry = raw.retry
                else:
                    problems.append(f"{where}: retry: expected af.Retry(...), got {raw.retry!r}")
            if fn_problem is None:
                try:
                    ref = function_ref(raw.fn)
                except Exception as exc:  # cloudpickle can fail on exotic closures
                    problems.append(f"{where}: fn cannot be sent to a worker: {exc}")
                    continue
                specs.append(
                    StepSpec(
                        name=raw.name,
                        kind=raw.kind,
                        fn=ref,
                        timeout=step_t if raw.timeout is not None else step_timeout,
                        retry=retry,
                    )
                )
        if problems:
            raise DefinitionError(problems, self._id if isinstance(self._id, str) else None)
        return WorkflowSpec(
            id=self._id,
            steps=tuple(specs),
            timeout=timeout,
            concurrency=concurrency,
            description=self._description,
        )

    @staticmethod
    def _duration(value: Any, what: str, problems: list[str]) -> float | None:
        if value is None:
            return None
        try:
            return parse_duration(value, what)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            return None

    def __repr__(self) -> str:
        names = ", ".join(str(s.name) for s in self._steps)
        return f"<Workflow {self._id!r}: {names}>"


def _check_fn(fn: Any) -> str | None:
    if not callable(fn):
        return f"fn: expected a callable taking the step context, got {fn!r}"
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # builtins without a signature: trust the caller
    try:
        sig.bind(None)
    except TypeError:
        return f"fn: expected a callable taking one argument (ctx), got signature {sig}"
    return None
