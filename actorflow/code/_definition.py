"""Code workflows as defined: ``@engine.workflow(id)`` on an ``async def f(ctx, *args)``."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from actorflow.definition._builder import Triggers
from actorflow.definition._options import Duration, Retry, parse_duration
from actorflow.definition._spec import describe_common, fingerprint
from actorflow.errors import DefinitionError

__all__ = ["CodeWorkflow", "CodeWorkflowSpec", "PanicPolicy"]


@dataclass(frozen=True)
class PanicPolicy:
    """What happens when a code workflow's own code fails unexpectedly (it *panics*).

    A panic is an exception from the workflow function that is not a failure (a bug such as
    a ``TypeError``), or a :class:`~actorflow.NondeterminismError` during replay. The run is
    marked ``panicked``, its in-flight steps are stopped, and it is restarted from its
    history after ``delay``, up to ``max_restarts`` times; then it stays panicked (not
    failed: its history is intact) until ``engine.restart(run_id)`` or a cancel. Deploy a
    fix, then restart it.

    Args:
        max_restarts: automatic restarts before the run waits for a manual one (0: none).
        delay: wait before each automatic restart (a duration).
    """

    max_restarts: int = 3
    delay: Duration = 5.0

    def __post_init__(self) -> None:
        problems = []
        n = self.max_restarts
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            problems.append(f"panic.max_restarts: expected an integer >= 0, got {n!r}")
        try:
            object.__setattr__(
                self, "delay", parse_duration(self.delay, "panic.delay", allow_zero=True)
            )
        except DefinitionError as exc:
            problems.extend(exc.problems)
        if problems:
            raise DefinitionError(problems)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible description."""
        return {"max_restarts": self.max_restarts, "delay": self.delay}


@dataclass(frozen=True)
class CodeWorkflowSpec:
    """A validated code workflow (what the engine runs and stores).

    Attributes:
        id: the workflow id.
        fn: the ``async def f(ctx, *args)``.
        retry: default retry policy of its steps (None: run once).
        timeout: seconds a run may take, or None.
        concurrency: most runs active at once, or None.
        description: free text.
        panic: its :class:`PanicPolicy`.
        failure_types: exceptions that fail the run instead of panicking it.
        retention: seconds its finished runs are kept (0: forever; None: the engine's).
        version: its version (several may be defined at once; runs keep theirs).
        queue: the :class:`~actorflow.Queue` whose limits it shares, or None.
    """

    id: str
    fn: Callable[..., Awaitable[Any]]
    retry: Retry | None
    timeout: float | None
    concurrency: int | None
    description: str
    panic: PanicPolicy
    failure_types: tuple[type[BaseException], ...] = ()
    services: tuple[Any, ...] = ()
    rate_limit: tuple[int, float] | None = None
    webhooks: tuple[Any, ...] = ()
    schedules: tuple[Any, ...] = ()
    retention: float | None = None
    version: int = 1
    queue: Any = None
    events: tuple[Any, ...] = ()
    polls: tuple[Any, ...] = ()
    on_error: None = None  # graph workflows only
    kind: str = "code"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible description (no code), for the stored definition."""
        module = getattr(self.fn, "__module__", "?")
        return {
            "id": self.id,
            "kind": "code",
            "function": f"{module}:{getattr(self.fn, '__qualname__', repr(self.fn))}",
            "description": self.description,
            "timeout": self.timeout,
            "concurrency": self.concurrency,
            "retry": self.retry.to_dict() if self.retry else None,
            "panic": self.panic.to_dict(),
            "failure_types": [f"{t.__module__}.{t.__qualname__}" for t in self.failure_types],
            **describe_common(self),
            "nodes": [],
        }

    @property
    def fingerprint(self) -> str:
        """A short hash of the definition, stored with the definition record."""
        return fingerprint(self.to_dict())


class CodeWorkflow(Triggers):
    """A code workflow under definition: returned by ``@engine.workflow(id)``.

    It stays callable as the function it wraps, so it can be tested and replayed directly
    (``af.testing.replay(history, etl)``). Add triggers with :meth:`on_webhook`,
    :meth:`on_schedule`, :meth:`on_interval`, :meth:`on_event` and :meth:`on_poll` before the
    engine starts: each starts the function with the trigger's payload as its one argument.
    """

    def __init__(
        self,
        workflow_id: str,
        fn: Callable[..., Awaitable[Any]],
        *,
        retry: Retry | None = None,
        timeout: Any = None,
        concurrency: int | None = None,
        description: str = "",
        panic: PanicPolicy | None = None,
        failure_types: Sequence[type[BaseException]] = (),
        services: Sequence[Any] = (),
        rate_limit: str | None = None,
        retention: Any = None,
        version: int = 1,
        queue: Any = None,
    ) -> None:
        self._id: Any = workflow_id
        self.fn = fn
        self._queue: Any = queue
        self._retry: Any = retry
        self._timeout: Any = timeout
        self._concurrency: Any = concurrency
        self._description: Any = description
        self._panic: Any = panic
        self._failure_types: Any = failure_types
        self._services: Any = services
        self._rate_limit: Any = rate_limit
        self._retention: Any = retention
        self._version: Any = version
        self._lock = threading.Lock()
        self._frozen = False
        self._webhooks: list[tuple[Any, ...]] = []
        self._schedules: list[tuple[Any, ...]] = []
        self._event_triggers: list[tuple[Any, ...]] = []
        self._polls: list[tuple[Any, ...]] = []
        self._spec: CodeWorkflowSpec | None = None
        self.__name__ = getattr(fn, "__name__", str(workflow_id))
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    @property
    def id(self) -> str:
        """The workflow id."""
        return str(self._id)

    def __call__(self, ctx: Any, *args: Any) -> Awaitable[Any]:
        return self.fn(ctx, *args)

    def build(self) -> CodeWorkflowSpec:
        """Validate everything and return the spec (cached).

        Raises:
            DefinitionError: listing every problem found.
        """
        spec: CodeWorkflowSpec = super().build()
        return spec

    def _build(self) -> CodeWorkflowSpec:
        problems: list[str] = []
        common = self._common(problems)
        if not inspect.iscoroutinefunction(self.fn):
            problems.append(
                f"@engine.workflow: expected an `async def f(ctx, *args)`, got {self.fn!r}"
            )
        if self._retry is not None and not isinstance(self._retry, Retry):
            problems.append(f"retry: expected af.Retry(...), got {self._retry!r}")
        panic = self._panic if self._panic is not None else PanicPolicy()
        if not isinstance(panic, PanicPolicy):
            problems.append(f"panic: expected af.PanicPolicy(...), got {panic!r}")
            panic = PanicPolicy()
        raw_types = self._failure_types
        if isinstance(raw_types, type):
            raw_types = (raw_types,)
        failure_types: list[type[BaseException]] = []
        for t in raw_types if isinstance(raw_types, Sequence) else [raw_types]:
            if isinstance(t, type) and issubclass(t, Exception):
                failure_types.append(t)
            else:
                problems.append(f"failure_types: expected exception classes, got {t!r}")
        if problems:
            raise DefinitionError(problems, self._id if isinstance(self._id, str) else None)
        return CodeWorkflowSpec(
            id=self._id,
            fn=self.fn,
            retry=self._retry,
            timeout=common.timeout,
            concurrency=common.concurrency,
            description=self._description,
            panic=panic,
            failure_types=tuple(failure_types),
            services=common.services,
            rate_limit=common.rate_limit,
            webhooks=common.webhooks,
            schedules=common.schedules,
            retention=common.retention,
            queue=common.queue,
            events=common.events,
            polls=common.polls,
            version=common.version,
        )

    def __repr__(self) -> str:
        return f"<CodeWorkflow {self._id!r}: {getattr(self.fn, '__qualname__', self.fn)}>"
