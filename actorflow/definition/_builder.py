"""The workflow builder: a :class:`~actorflow.definition._flow.Flow` with an id and defaults.

``engine.define(...)`` returns a :class:`Workflow`; its methods record nodes and return the
builder, so definitions chain. :meth:`Workflow.build` (called by the engine at start, or at the
first trigger of a workflow defined later) checks everything at once and raises one
:class:`~actorflow.errors.DefinitionError` listing every problem.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Self

from actorflow.definition._build import (
    Context,
    _check_callable,
    _ref,
    build_flow,
    path_problems,
    validate_name,
)
from actorflow.definition._flow import Flow
from actorflow.definition._options import Retry, parse_duration, parse_retention
from actorflow.definition._queue import Queue, parse_rate
from actorflow.definition._services import Service, ServiceInstance
from actorflow.definition._spec import HOOKS, FunctionRef, WorkflowSpec
from actorflow.definition._triggers import (
    EventTriggerSpec,
    PollSpec,
    ScheduleSpec,
    WebhookSpec,
    check_event_trigger,
    check_poll,
    check_schedule,
    check_webhook,
)
from actorflow.errors import DefinitionError, GraphError

__all__ = ["HARNESS", "Common", "Triggers", "Workflow", "check_version", "validate_name"]


class _Harness:
    """How ``wf.test()`` builds its harness (``actorflow.testing.WorkflowTest``).

    Why a hook and not an import: the harness runs the workflow on an engine, several layers
    above the definitions, and a layer imports only those below it. The root package, which
    sits above every layer, installs the factory when ``actorflow`` is imported (importing
    any ``actorflow.*`` module imports it first), and the factory imports the harness only
    when a test asks for it.
    """

    factory: Callable[..., Any] | None = None


HARNESS = _Harness()


class Common(NamedTuple):
    """The options graph and code workflows share, validated."""

    timeout: float | None
    concurrency: int | None
    services: tuple[ServiceInstance, ...]
    rate_limit: tuple[int, float] | None
    webhooks: tuple[WebhookSpec, ...]
    schedules: tuple[ScheduleSpec, ...]
    retention: float | None
    version: int
    queue: Queue | None = None
    events: tuple[EventTriggerSpec, ...] = ()
    polls: tuple[PollSpec, ...] = ()


def check_version(value: Any) -> str | None:
    """The problem with a workflow ``version`` (an integer >= 1), or None."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2**31:
        return None
    return f"version: expected an integer from 1 to 2**31, got {value!r}"


class Triggers:
    """What graph and code workflows share: triggers, the cached build, common options.

    The host class provides ``_lock``, ``_frozen``, ``_spec``, ``_build()`` and the raw
    options ``_id``, ``_timeout``, ``_concurrency``, ``_description``, ``_services``,
    ``_rate_limit``, ``_queue``, ``_retention``, ``_version``, ``_webhooks``,
    ``_schedules``, ``_event_triggers`` and ``_polls``.
    """

    _lock: Any
    _frozen: bool
    _spec: Any
    _id: Any
    _timeout: Any
    _concurrency: Any
    _description: Any
    _services: Any
    _rate_limit: Any
    _queue: Any = None
    _retention: Any = None
    _version: Any = 1
    _webhooks: list[tuple[Any, ...]]
    _schedules: list[tuple[Any, ...]]
    _event_triggers: list[tuple[Any, ...]]
    _polls: list[tuple[Any, ...]]
    #: Validates the host's own options and returns its spec (each host class defines it).
    _build: Callable[[], Any]
    #: The engine it was defined on (a weak reference), if any.
    _owner: Any = None

    def test(self, *args: Any, **options: Any) -> Any:
        """A test harness for this workflow (:class:`actorflow.testing.WorkflowTest`).

        ``wf.test(payload)`` runs it at once, in memory, with time skipped, and returns the
        harness to assert on; ``wf.test()`` returns it unstarted, to set up mocks first::

            wf.test({"amount": 5}).expect_status("completed")
            wf.test().mock_step("charge", returns={"ok": True}).run({"amount": 5})

        Args:
            *args: the run's payload (a code workflow's arguments); none: do not run yet.
            **options: :class:`~actorflow.testing.WorkflowTest` options.
        """
        factory = HARNESS.factory
        if factory is None:  # only a definitions-only import could get here
            raise RuntimeError("wf.test() needs the actorflow package imported (import actorflow)")
        harness = factory(self, **options)
        return harness.run(*args) if args else harness

    def build(self) -> Any:
        """Validate everything and return the immutable spec (cached after the first call).

        Raises:
            DefinitionError: listing every problem found.
        """
        with self._lock:
            if self._spec is None:
                self._spec = self._build()
                self._frozen = True
            return self._spec

    def _common(self, problems: list[str]) -> Common:
        """Check the options both kinds of workflow have; note each problem."""
        if (p := validate_name(self._id, "workflow id")) is not None:
            problems.append(p)
        timeout = self._duration(self._timeout, "timeout", problems)
        concurrency = self._concurrency
        if concurrency is not None and (
            not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
        ):
            problems.append(f"concurrency: expected an integer >= 1, got {concurrency!r}")
            concurrency = None
        if not isinstance(self._description, str):
            problems.append(f"description: expected a string, got {self._description!r}")
        webhooks = tuple(
            w for path, method, env, sig, schema in self._webhooks
            if (w := check_webhook(path, method, env, sig, schema, problems))
        )  # fmt: skip
        schedules = tuple(
            c for cron, every, tz, overlap, catch_up in self._schedules
            if (c := check_schedule(cron, every, tz, overlap, catch_up, problems))
        )  # fmt: skip
        events = tuple(
            e for event, key in self._event_triggers
            if (e := check_event_trigger(event, key, problems))
        )  # fmt: skip
        polls = tuple(x for fn, every in self._polls if (x := check_poll(fn, every, problems)))
        services = self._check_services(problems)
        rate = parse_rate(self._rate_limit, problems)
        queue = self._queue
        if queue is not None:
            if not isinstance(queue, Queue):
                problems.append(f"queue: expected af.Queue(...), got {queue!r}")
                queue = None
            elif concurrency is not None or rate is not None:
                problems.append(
                    f"queue: the workflow's runs are limited by queue {queue.name!r}: give "
                    "concurrency and rate_limit to the queue, not to the workflow as well"
                )
        retention = None
        if self._retention is not None:
            try:
                retention = parse_retention(self._retention)
            except DefinitionError as exc:
                problems.extend(exc.problems)
        version = self._version
        if (p := check_version(version)) is not None:
            problems.append(p)
            version = 1
        return Common(
            timeout,
            concurrency,
            services,
            rate,
            webhooks,
            schedules,
            retention,
            version,
            queue,
            events,
            polls,
        )

    def _check_services(self, problems: list[str]) -> tuple[ServiceInstance, ...]:
        raw = self._services
        if isinstance(raw, ServiceInstance | Service) or not isinstance(raw, Sequence):
            raw = [raw]
        out: list[ServiceInstance] = []
        seen: set[str] = set()
        for i, svc in enumerate(raw):
            if isinstance(svc, Service):
                try:
                    svc = svc.with_config()  # no configuration needed, or it says what is
                except DefinitionError as exc:
                    problems.extend(exc.problems)
                    continue
            if not isinstance(svc, ServiceInstance):
                problems.append(
                    f"services[{i}]: expected a service (af.define_service(...).with_config"
                    f"(...)), got {svc!r}"
                )
                continue
            if svc.id in seen:
                problems.append(f"services[{i}]: service {svc.id!r} is listed twice")
            seen.add(svc.id)
            out.append(svc)
        return tuple(out)

    @staticmethod
    def _duration(value: Any, what: str, problems: list[str]) -> float | None:
        if value is None:
            return None
        try:
            return parse_duration(value, what)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            return None

    def on_webhook(
        self,
        path: str,
        method: str = "POST",
        *,
        secret_env: str | None = None,
        signature: str | None = None,
        schema: Any = None,
    ) -> Self:
        """Start a run for each HTTP request to ``path`` on ``engine.asgi()``.

        The request body must be JSON; it becomes the run's payload. The request is answered
        ``202`` with the run id once the run is durably recorded; an ``Idempotency-Key``
        header makes repeated deliveries one run.

        Args:
            path: URL path, e.g. ``"/orders"``.
            method: HTTP method.
            secret_env: environment variable holding the signing secret.
            signature: ``"hmac-sha256"`` (header ``X-Signature: sha256=<hex>``), ``"github"``
                (``X-Hub-Signature-256``) or ``"stripe"`` (``Stripe-Signature``); default
                ``"hmac-sha256"`` when ``secret_env`` is given.
            schema: a JSON Schema (dict; needs the ``schemas`` extra, else building the
                workflow raises ``MissingExtra``), a pydantic model, or ``fn(body) -> payload``.
        """
        with self._lock:
            self._check_open()
            self._webhooks.append((path, method, secret_env, signature, schema))
        return self

    def on_schedule(
        self,
        cron: str,
        *,
        tz: str = "UTC",
        overlap: str = "skip",
        catch_up: str = "none",
    ) -> Self:
        """Start a run at each slot of a cron expression, read in time zone ``tz``.

        Fire times are recorded in the store: a restart never fires a slot twice, and slots
        missed while no engine ran are handled per ``catch_up``. Across daylight-saving
        changes a wall-clock time that does not exist fires once, at the shifted instant, and
        one that occurs twice fires once (jobs with ``*`` in the hour field run every real
        hour).

        Args:
            cron: five fields, e.g. ``"0 9 * * MON-FRI"``.
            tz: IANA time zone name.
            overlap: the previous run of this schedule is still active: ``"skip"`` the slot,
                ``"queue"`` it until that run ends, or ``"allow"`` both.
            catch_up: after downtime, fire ``"none"`` of the missed slots, the ``"latest"``
                only, or ``"all"`` of them.
        """
        with self._lock:
            self._check_open()
            self._schedules.append((cron, None, tz, overlap, catch_up))
        return self

    def on_interval(self, every: Any, *, overlap: str = "skip", catch_up: str = "none") -> Self:
        """Start a run every ``every`` (a duration such as ``"5m"``); see :meth:`on_schedule`."""
        with self._lock:
            self._check_open()
            self._schedules.append((None, every, "UTC", overlap, catch_up))
        return self

    def on_event(self, event: str, *, key: Callable[[Any], Any] | None = None) -> Self:
        """Start a run for each published event ``event``, with its payload as the payload.

        ``engine.publish(event, payload, key=...)`` (or ``POST /api/events/{event}``)
        records the runs it starts before it returns, as a webhook does, and a run is
        started once per event: its idempotency key is the event's identity, so publishing
        the same event again (a retry after a crash) starts nothing more.

        Args:
            event: the event's name, e.g. ``"order.created"``.
            key: ``key(payload) -> str``, the event's identity (e.g. ``lambda e:
                e["order_id"]``); it runs in the engine, at the publish, and must be quick.
                Default: the publish's ``key=``; without one, each publish is a new event.
        """
        with self._lock:
            self._check_open()
            self._event_triggers.append((event, key))
        return self

    def on_poll(self, fn: Callable[..., Any], *, every: Any) -> Self:
        """Call ``fn`` every ``every``; start a run when it returns something new.

        ``fn()`` (or ``fn(last)``, given the value that started the previous run) returns
        a JSON value, or None for "nothing this time". A value other than the last one
        starts a run with it as the payload and becomes the new last value, kept in the
        store: a restart goes on from it, and a value that was there before the restart
        starts nothing. ``fn`` runs on a helper thread of the engine (it may wait on the
        network); the next poll starts ``every`` after one ends, so polls never overlap.
        An exception is logged and the next poll comes as usual.

        Args:
            fn: the function polled.
            every: the time between polls (a duration such as ``"30s"``).
        """
        with self._lock:
            self._check_open()
            self._polls.append((fn, every))
        return self

    def _check_open(self) -> None:
        if self._frozen:
            raise DefinitionError(
                "is already built (its engine has started); add triggers before that",
                str(self._id),
            )


class Workflow(Flow, Triggers):
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
        on_cancel: ``handler(ctx)`` run as the step ``on_cancel`` (in a worker) when a run
            is cancelled: its steps are stopped first, and the run ends cancelled once the
            handler has ended (succeeded or failed).
        on_success: ``hook(ctx)`` run as the step ``on_success`` (in a worker) once a run
            has completed; the run ends completed once it has ended (succeeded or failed).
        on_failure: ``hook(ctx)`` run as the step ``on_failure`` once a run has failed
            (``ctx.error`` is the run's error); the run ends failed once it has ended.
        services: configured services (``svc.with_config(...)``) its steps reach as
            ``ctx.services.<id>``.
        rate_limit: most runs started per time window, e.g. ``"100/m"`` or ``"5/10s"``;
            later runs queue durably and start in order as the window allows.
        retention: how long its finished runs are kept after they end (a duration such as
            ``"7d"``; 0 or ``"forever"``: always); None: the engine's ``retention``.
        version: which version of the workflow this is (an integer >= 1): an engine may
            define several versions of one id; new runs take the newest, and each run goes
            on on the version it started on (docs/operations.md, "Versions").
        queue: an :class:`~actorflow.Queue` whose limits its runs share with the other
            workflows given it (instead of ``concurrency`` and ``rate_limit`` of its own).
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
        on_cancel: Callable[[Any], Any] | None = None,
        on_success: Callable[[Any], Any] | None = None,
        on_failure: Callable[[Any], Any] | None = None,
        services: Sequence[Any] = (),
        rate_limit: str | None = None,
        retention: Any = None,
        version: int = 1,
        queue: Any = None,
    ) -> None:
        super().__init__(workflow_id if isinstance(workflow_id, str) else None)
        self._queue: Any = queue
        # Raw values, validated all at once by build(): callers may be untyped.
        self._id: Any = workflow_id
        self._retry: Any = retry
        self._timeout: Any = timeout
        self._step_timeout: Any = step_timeout
        self._concurrency: Any = concurrency
        self._description: Any = description
        self._on_error: Any = on_error
        self._on_cancel: Any = on_cancel
        self._on_success: Any = on_success
        self._on_failure: Any = on_failure
        self._services: Any = services
        self._rate_limit: Any = rate_limit
        self._retention: Any = retention
        self._version: Any = version
        self._webhooks: list[tuple[Any, ...]] = []
        self._schedules: list[tuple[Any, ...]] = []
        self._event_triggers: list[tuple[Any, ...]] = []
        self._polls: list[tuple[Any, ...]] = []
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
        spec: WorkflowSpec = super().build()
        return spec

    def _build(self) -> WorkflowSpec:
        ctx = Context()
        problems = ctx.problems
        common = self._common(problems)
        if self._retry is not None:
            if isinstance(self._retry, Retry):
                ctx.default_retry = self._retry
            else:
                problems.append(f"retry: expected af.Retry(...), got {self._retry!r}")
        ctx.step_timeout = self._duration(self._step_timeout, "step_timeout", problems)
        on_error = None
        if self._on_error is not None and _check_callable(
            self._on_error, 1, "on_error", "(ctx)", ctx
        ):
            on_error = _ref(self._on_error, "on_error", ctx)
        hooks: dict[str, FunctionRef | None] = {}
        for name, raw in (
            (HOOKS["cancelled"], self._on_cancel),
            (HOOKS["completed"], self._on_success),
            (HOOKS["failed"], self._on_failure),
        ):
            hooks[name] = None
            if raw is None or not _check_callable(raw, 1, name, "(ctx)", ctx):
                continue
            hooks[name] = _ref(raw, name, ctx)
            if any(n.name == name for n in self._block):
                problems.append(
                    f"a node is named {name!r}, the step its {name} hook is recorded as: rename it"
                )
        if not self._block:
            problems.append("has no steps: add one with .step(name, fn)")
        block = build_flow(self, ctx, "workflow")
        if not problems:
            problems.extend(path_problems(block))
        if problems:
            error = GraphError if ctx.structural else DefinitionError
            raise error(problems, self._id if isinstance(self._id, str) else None)
        return WorkflowSpec(
            id=self._id,
            block=block,
            timeout=common.timeout,
            concurrency=common.concurrency,
            description=self._description,
            on_error=on_error,
            on_cancel=hooks[HOOKS["cancelled"]],
            on_success=hooks[HOOKS["completed"]],
            on_failure=hooks[HOOKS["failed"]],
            services=common.services,
            rate_limit=common.rate_limit,
            webhooks=common.webhooks,
            schedules=common.schedules,
            retention=common.retention,
            version=common.version,
            queue=common.queue,
            events=common.events,
            polls=common.polls,
        )

    def __repr__(self) -> str:
        return f"<Workflow {self._id!r}: {len(self._block)} nodes>"
