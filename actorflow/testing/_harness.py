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

import asyncio
import atexit
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from actorflow._clock import ManualClock
from actorflow._types import RunStatus
from actorflow.definition._options import parse_duration
from actorflow.engine._engine import Engine
from actorflow.engine._handle import RunHandle
from actorflow.errors import (
    ActorflowError,
    ResultTimeout,
    StepTimeout,
    WorkerCrashed,
)
from actorflow.runtime.dispatch._inline import SimulatedFault
from actorflow.runtime.kernel._inbox import Activity, Tick
from actorflow.testing._expect import Call, CallExpectation, base_name, same
from actorflow.views import RunDetails

__all__ = ["WorkflowTest"]

_UNSET: Any = object()
_live: weakref.WeakSet[WorkflowTest] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # a test that forgot close() must not keep the process alive
    for t in list(_live):
        t.close()


@dataclass
class _Mock:
    returns: Any = _UNSET
    raises: Any = None
    fn: Callable[..., Any] | None = None

    def answer(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        if self.fn is not None:
            return self.fn(*args, **kwargs)
        if self.raises is not None:
            exc = self.raises
            kind = _fault_kind(exc)
            if kind is not None:
                raise SimulatedFault(kind)
            raise exc() if isinstance(exc, type) else exc
        return self.returns


def _fault_kind(exc: Any) -> str | None:
    t = exc if isinstance(exc, type) else type(exc)
    if issubclass(t, StepTimeout):
        return "timeout"
    if issubclass(t, WorkerCrashed):
        return "crash"
    return None


class _MockService:
    """A service double: each action is a mock (or a real callable), every call recorded."""

    def __init__(self, owner: WorkflowTest, service_id: str, obj: Any, actions: dict[str, Any]):
        self._owner = owner
        self._id = service_id
        self._obj = obj
        self._actions = actions

    @property
    def client(self) -> Any:
        return self._obj

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._actions:
            target = self._actions[name]
        elif self._obj is not None and hasattr(self._obj, name):
            target = getattr(self._obj, name)
        else:
            raise AttributeError(
                f"mocked service {self._id!r} has no action {name!r} "
                f"(it has {sorted(self._actions) or 'only the attributes of its object'})"
            )
        owner, service_id = self._owner, self._id

        def call(*args: Any, **kwargs: Any) -> Any:
            return owner._service_call(service_id, name, target, args, kwargs)

        call.__name__ = name
        return call

    def __repr__(self) -> str:
        return f"<mocked service {self._id!r}>"


@dataclass
class _Script:
    approvals: list[tuple[str, Any]] = field(default_factory=list)
    events: list[tuple[str, Any, str | None]] = field(default_factory=list)
    signals: list[tuple[str, Any, str | None]] = field(default_factory=list)


class WorkflowTest:
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

    def __init__(
        self,
        workflow: Any,
        *,
        workflows: Iterable[Any] = (),
        start: float = 1_700_000_000.0,
        timeout: float = 30.0,
        **settings: Any,
    ) -> None:
        if not hasattr(workflow, "build") or not hasattr(workflow, "id"):
            raise TypeError(
                "WorkflowTest: workflow: expected a workflow (engine.define(...) or "
                f"@engine.workflow(...)), got {workflow!r}"
            )
        self.workflow = workflow
        found: dict[str, Any] = {}
        owner = getattr(workflow, "_owner", None)
        engine = owner() if owner is not None else None
        if engine is not None:
            found.update(engine._definitions)
        for wf in workflows:
            found[wf.id] = wf
        found[workflow.id] = workflow
        self._definitions = found
        self.clock = ManualClock(start)
        self._start = start
        self._timeout = timeout
        self._settings = settings
        self._mocks: dict[str, _Mock] = {}
        self._services: dict[str, _MockService] = {}
        self._calls: list[Call] = []
        self._calls_lock = threading.Lock()
        self._script = _Script()
        self._engine: Engine | None = None
        self._activity = Activity()
        self.handle: RunHandle | None = None
        self._first_call = 0  # calls before this index belong to earlier runs
        self._skipping = True  # run(): skip to the next timer whenever idle; start(): not
        _live.add(self)

    # -- set-up ------------------------------------------------------------------------------

    def mock_step(
        self,
        name: str,
        *,
        returns: Any = _UNSET,
        raises: Any = None,
        fn: Callable[..., Any] | None = None,
    ) -> WorkflowTest:
        """Replace a step (every step of that name, in every workflow of the test).

        Give one of:

        Args:
            name: the step's name (inside a for_each, the body step's name).
            returns: the value it returns.
            raises: an exception (instance or class) it raises, on every attempt. Raise
                :class:`~actorflow.StepTimeout` or :class:`~actorflow.WorkerCrashed` to have
                the attempt recorded as a timeout or a worker crash.
            fn: a function called instead: with ``ctx`` for a graph step (``(item, ctx)``
                for a for_each body given as a plain function), with the step's arguments
                for a code workflow step.

        Returns:
            This harness, to chain calls.

        Raises:
            ValueError: none or several of ``returns``, ``raises``, ``fn``; or the test has
                already started.
        """
        given = sum(x is not None and x is not _UNSET for x in (raises, fn)) + (
            returns is not _UNSET
        )
        if given != 1:
            raise ValueError(
                f"mock_step({name!r}): expected exactly one of returns=, raises= or fn=, "
                f"got {given}"
            )
        if fn is not None and not callable(fn):
            raise ValueError(f"mock_step({name!r}): fn: expected a callable, got {fn!r}")
        if raises is not None and not (
            isinstance(raises, BaseException)
            or (isinstance(raises, type) and issubclass(raises, BaseException))
        ):
            raise ValueError(f"mock_step({name!r}): raises: expected an exception, got {raises!r}")
        self._check_not_started(f"mock_step({name!r})")
        self._mocks[name] = _Mock(returns, raises, fn)
        return self

    def mock_service(self, service_id: str, obj: Any = None, **actions: Any) -> WorkflowTest:
        """Replace a service: ``ctx.services.<id>.<action>(...)`` calls these instead.

        Args:
            service_id: the service's id.
            obj: an object whose attributes are the actions (a fake client), or None.
            **actions: actions by name: a callable called with the action's arguments, or
                any other value, returned as is.

        Returns:
            This harness.
        """
        self._check_not_started(f"mock_service({service_id!r})")
        table = {k: (v if callable(v) else _const(v)) for k, v in actions.items()}
        self._services[service_id] = _MockService(self, service_id, obj, table)
        return self

    # -- inputs --------------------------------------------------------------------------------

    def approve(self, name: str, payload: Any = None) -> WorkflowTest:
        """Resume the approval ``name`` (``human_in_the_loop``) when the run waits at it.

        ``payload`` is the approval's output. For a code workflow, this sends the signal
        ``name``. If the run already waits, it goes on at once.
        """
        if self._is_code():
            return self.signal(name, payload)
        self._script.approvals.append((name, payload))
        return self._continue()

    def send_event(
        self, event: str, payload: Any = None, *, key: str | None = None
    ) -> WorkflowTest:
        """Publish ``event`` when the run waits for it.

        An event with a ``key`` is published at once: the engine keeps it for the wait.
        """
        self._script.events.append((event, payload, key))
        return self._continue()

    def signal(self, name: str, payload: Any = None, *, run_id: str | None = None) -> WorkflowTest:
        """Send the signal ``name`` to the run (a code workflow keeps it until it waits)."""
        self._script.signals.append((name, payload, run_id))
        return self._continue()

    def advance(self, duration: Any) -> WorkflowTest:
        """Move the clock forward (``"2h"`` or seconds) and let the engine react."""
        seconds = parse_duration(duration, "advance: duration", allow_zero=True)
        self.clock.advance(seconds)
        if self._engine is not None:
            self._tick()
            self._drive()
        return self

    # -- running -------------------------------------------------------------------------------

    def run(self, *args: Any, idempotency_key: str | None = None) -> WorkflowTest:
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

    def start(self, *args: Any, idempotency_key: str | None = None) -> WorkflowTest:
        """Trigger the workflow and drive it until it is idle, without moving the clock.

        Then give inputs (each drives the run on, still without moving the clock), move
        time with :meth:`advance`, or skip to the end with :meth:`finish`. Use this to act
        while the run waits at something that has a timeout.
        """
        self._skipping = False
        return self._trigger(args, idempotency_key)

    def finish(self) -> WorkflowTest:
        """Drive the started run to its end as :meth:`run` does (skipping time)."""
        self._handle()
        self._skipping = True
        self._drive()
        return self

    def _trigger(self, args: tuple[Any, ...], idempotency_key: str | None) -> WorkflowTest:
        engine = self._ensure_engine()
        self._first_call = len(self.calls)
        self.handle = engine.trigger(self.workflow.id, *args, idempotency_key=idempotency_key)
        self._drive()
        return self

    @property
    def engine(self) -> Engine:
        """The test's engine (started at the first :meth:`run`)."""
        return self._ensure_engine()

    @property
    def run_id(self) -> str:
        """The current run's id."""
        return self._handle().id

    @property
    def status(self) -> RunStatus:
        """The current run's status (of the last run, if it continued as new)."""
        return self._handle().status()

    @property
    def output(self) -> Any:
        """The run's result if it completed, else None."""
        if self.status != RunStatus.COMPLETED:
            return None
        return self.result()

    def result(self) -> Any:
        """The run's result.

        Raises:
            StepFailed: (or another run error) the run failed.
            ResultTimeout: the run has not finished.
        """
        return self._handle().result(timeout=0)

    @property
    def details(self) -> RunDetails:
        """Everything recorded about the run (``engine.inspect``)."""
        return self.engine.inspect(self.run_id)

    @property
    def elapsed(self) -> float:
        """Seconds of (skipped) clock time since the test began."""
        return self.clock.now() - self._start

    @property
    def calls(self) -> list[Call]:
        """Every step call seen so far, in order."""
        with self._calls_lock:
            return list(self._calls)

    def close(self) -> None:
        """Stop the test engine (also done at exit, and by the pytest fixture)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.stop(drain=False, timeout=5.0)

    def __enter__(self) -> WorkflowTest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- assertions ----------------------------------------------------------------------------

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

    # -- internals -------------------------------------------------------------------------------

    def _is_code(self) -> bool:
        from actorflow.code._definition import CodeWorkflow

        return isinstance(self.workflow, CodeWorkflow)

    def _check_not_started(self, what: str) -> None:
        if self._engine is not None:
            raise ValueError(f"{what}: set mocks up before the first run()")

    def _handle(self) -> RunHandle:
        if self.handle is None:
            raise ValueError("no run yet: call run(...) first")
        return self.handle

    def _continue(self) -> WorkflowTest:
        if self.handle is not None and self._engine is not None:
            self._drive()
        return self

    def _ensure_engine(self) -> Engine:
        if self._engine is not None:
            return self._engine
        # Time skips by days here: finished runs are kept unless the test asks for retention
        # (a workflow's own retention still applies).
        settings = {"workers": 4, "shm_threshold": 0, "retention": 0, **self._settings}
        engine = Engine(
            store="memory", executor="inline", clock=self.clock, schedules=False, **settings
        )
        engine._definitions.update(self._definitions)
        engine._activity = self._activity
        engine._intercept = self._intercept
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
        engine._services_cache = cache
        self._check_mocks()
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

    def _check_mocks(self) -> None:
        if any(_code(wf) for wf in self._definitions.values()):
            return  # a code workflow's step names are only known when it runs
        names = {s.name for wf in self._definitions.values() for s in wf.build().steps}
        names |= {n[: -len("_item")] for n in names if n.endswith("_item")}
        unknown = sorted(set(self._mocks) - names)
        if unknown:
            raise ValueError(
                f"mock_step: no step named {', '.join(map(repr, unknown))} in "
                f"{sorted(self._definitions)} (steps: {sorted(names)})"
            )

    def _intercept(
        self, workflow_id: str, path: str, fn: Callable[..., Any], how: int
    ) -> Callable[..., Any]:
        if how == 8:
            return fn  # an error handler runs as written
        name = base_name(path)
        mock = self._mocks.get(name)

        def call(*args: Any) -> Any:
            from actorflow.workers._context import CURRENT

            ctx = CURRENT.get()
            shown: tuple[Any, ...] = args if how == 4 else args[:1] if how & 1 else ()

            def invoke() -> Any:
                result = mock.answer(args, {}) if mock is not None else fn(*args)
                return asyncio.run(result) if inspect.iscoroutine(result) else result

            def describe(output: Any, error: BaseException | None) -> Call:
                return Call(
                    name=name,
                    path=path,
                    run_id=ctx.run.id,
                    workflow_id=workflow_id,
                    attempt=ctx.run.attempt,
                    args=tuple(shown),
                    kwargs={},
                    payload=_quiet(lambda: ctx.payload) if how != 4 else None,
                    last=_quiet(lambda: ctx.last) if how != 4 else None,
                    item=_quiet(lambda: ctx.item) if how & 1 else None,
                    output=same(output) if error is None else None,
                    error=error,
                    mocked=mock is not None,
                )

            return self._observed(invoke, describe)

        return call

    def _service_call(
        self,
        service_id: str,
        action: str,
        target: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        from actorflow.workers._context import CURRENT

        ctx = CURRENT.get(None)
        label = f"{service_id}.{action}"

        def describe(output: Any, error: BaseException | None) -> Call:
            return Call(
                name=label,
                path=label,
                run_id=ctx.run.id if ctx is not None else "",
                workflow_id=ctx.run.workflow_id if ctx is not None else "",
                attempt=ctx.run.attempt if ctx is not None else 0,
                args=tuple(args),
                kwargs=dict(kwargs),
                payload=None,
                last=None,
                item=None,
                output=output if error is None else None,
                error=error,
                mocked=True,
            )

        return self._observed(lambda: target(*args, **kwargs), describe)

    def _observed(
        self,
        invoke: Callable[[], Any],
        describe: Callable[[Any, BaseException | None], Call],
    ) -> Any:
        """Call ``invoke()`` and record the call, whether it returned or raised."""
        output: Any = None
        error: BaseException | None = None
        try:
            output = invoke()
            return output
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._record(describe(output, error))

    def _record(self, call: Call) -> None:
        with self._calls_lock:
            self._calls.append(call)

    def _calls_of(self, name: str) -> list[Call]:
        if self.handle is None:
            raise ValueError("no run yet: call run(...) first")
        return [c for c in self.calls[self._first_call :] if c.name == name]

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

    # -- driving ---------------------------------------------------------------------------------

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
        for i, (name, payload, run_id) in enumerate(script.signals):
            del script.signals[i]
            target = engine.run(run_id) if run_id else self._handle()
            target.signal(name, payload)
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


def _is(exc: BaseException, exc_type: type[BaseException]) -> bool:
    """``exc`` is an ``exc_type``, or stands in for one (a ``RemoteError`` of that type)."""
    if isinstance(exc, exc_type):
        return True
    return getattr(exc, "type_name", None) == f"{exc_type.__module__}.{exc_type.__qualname__}"


def _const(value: Any) -> Callable[..., Any]:
    def answer(*args: Any, **kwargs: Any) -> Any:
        return value

    return answer


def _quiet(get: Callable[[], Any]) -> Any:
    try:
        return get()
    except Exception:
        return None


def _code(wf: Any) -> bool:
    from actorflow.code._definition import CodeWorkflow

    return isinstance(wf, CodeWorkflow)
