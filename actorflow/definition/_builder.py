"""The workflow builder: a :class:`~actorflow.definition._flow.Flow` with an id and defaults.

``engine.define(...)`` returns a :class:`Workflow`; its methods record nodes and return the
builder, so definitions chain. :meth:`Workflow.build` (called by the engine at start, or at the
first trigger of a workflow defined later) checks everything at once and raises one
:class:`~actorflow.errors.DefinitionError` listing every problem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

from actorflow.definition._build import Context, _check_callable, _ref, build_flow, validate_name
from actorflow.definition._flow import Flow
from actorflow.definition._options import Retry, parse_duration
from actorflow.definition._spec import WorkflowSpec
from actorflow.errors import DefinitionError, GraphError

__all__ = ["Workflow", "validate_name"]


class Workflow(Flow):
    """A workflow under definition; chain steps and control-flow constructs on it.

    Created by :meth:`actorflow.Engine.define`; can also be made directly (for example to test
    a definition without an engine).

    Args:
        workflow_id: the workflow's id.
        retry: default retry policy of its steps (default: no retry).
        timeout: time the whole run may take (a duration); past it the run fails with
            :class:`~actorflow.errors.RunTimeout` and its running steps are killed.
        step_timeout: default timeout of each step.
        concurrency: most runs active at once; more are queued in trigger order.
        description: free text shown by the CLI.
        on_error: default handler for steps that fail for good and have none of their own.
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
        on_error: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(workflow_id if isinstance(workflow_id, str) else None)
        # Raw values, validated all at once by build(): callers may be untyped.
        self._id: Any = workflow_id
        self._retry: Any = retry
        self._timeout: Any = timeout
        self._step_timeout: Any = step_timeout
        self._concurrency: Any = concurrency
        self._description: Any = description
        self._on_error: Any = on_error
        self._spec: WorkflowSpec | None = None

    @property
    def id(self) -> str:
        """The workflow id."""
        return str(self._id)

    def _set_default_on_error(self, handler: Callable[[Any], Any]) -> Self:
        self._on_error = handler
        return self

    def build(self) -> WorkflowSpec:
        """Validate everything and return the immutable spec (cached after the first call).

        Raises:
            DefinitionError: listing every problem found.
        """
        with self._lock:
            if self._spec is None:
                self._spec = self._build()
                self._frozen = True
            return self._spec

    def _build(self) -> WorkflowSpec:
        ctx = Context()
        problems = ctx.problems
        if (p := validate_name(self._id, "workflow id")) is not None:
            problems.append(p)
        if self._retry is not None:
            if isinstance(self._retry, Retry):
                ctx.default_retry = self._retry
            else:
                problems.append(f"retry: expected af.Retry(...), got {self._retry!r}")
        timeout = self._duration(self._timeout, "timeout", problems)
        ctx.step_timeout = self._duration(self._step_timeout, "step_timeout", problems)
        concurrency = self._concurrency
        if concurrency is not None and (
            not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
        ):
            problems.append(f"concurrency: expected an integer >= 1, got {concurrency!r}")
            concurrency = None
        if not isinstance(self._description, str):
            problems.append(f"description: expected a string, got {self._description!r}")
        on_error = None
        if self._on_error is not None and _check_callable(
            self._on_error, 1, "on_error", "(ctx)", ctx
        ):
            on_error = _ref(self._on_error, "on_error", ctx)
        if not self._block:
            problems.append("has no steps: add one with .step(name, fn)")
        block = build_flow(self, ctx, "workflow")
        if problems:
            error = GraphError if ctx.structural else DefinitionError
            raise error(problems, self._id if isinstance(self._id, str) else None)
        return WorkflowSpec(
            id=self._id,
            block=block,
            timeout=timeout,
            concurrency=concurrency,
            description=self._description,
            on_error=on_error,
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
        return f"<Workflow {self._id!r}: {len(self._block)} nodes>"
