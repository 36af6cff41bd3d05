"""``WorkflowContext``: what a code workflow's function receives as ``ctx``.

Every method that waits returns an awaitable *at once* and issues its command at the call,
so the order of commands is the order of calls (``asyncio.gather(ctx.step(...), ...)`` issues
them left to right). Everything that could differ between two executions of the function
(time, randomness, ids, which version of the code a run started with) comes from here, so
that a replay takes exactly the same path.
"""

from __future__ import annotations

import datetime as _dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, cast

from actorflow._types import ParentClosePolicy
from actorflow.code._signals import handler_problem, taken_problem
from actorflow.definition._breaker import CircuitBreaker
from actorflow.definition._cache import Cache
from actorflow.definition._options import Retry, parse_duration
from actorflow.definition._queue import Queue
from actorflow.errors import ClientError, DefinitionError, WaitTimeout
from actorflow.store import _keys as K
from actorflow.store._search import check_attributes

if TYPE_CHECKING:
    import asyncio

    from actorflow.code._driver import Driver

__all__ = ["ContinueAsNew", "WorkflowContext", "WorkflowInfo"]

_MISSING: Any = object()
_log = logging.getLogger("actorflow.workflow")


class ContinueAsNew(Exception):
    """Raised by ``ctx.continue_as_new`` to unwind the workflow function.

    An ordinary ``Exception`` (actorflow never uses ``BaseException`` for control flow); if
    the function swallows it, the run still continues as new once the function returns, and
    any command issued after the call is refused.
    """


class WorkflowInfo:
    """Who is running: ``ctx.run.id`` and ``ctx.run.workflow_id``."""

    __slots__ = ("id", "workflow_id")

    def __init__(self, run_id: str, workflow_id: str) -> None:
        self.id = run_id
        self.workflow_id = workflow_id

    def __repr__(self) -> str:
        return f"<WorkflowInfo {self.workflow_id}/{self.id}>"


class _ReplayAwareLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``ctx.log``: silent while the function replays, so each line is logged once."""

    def __init__(self, driver: Driver) -> None:
        super().__init__(_log, {"run_id": driver.run_id, "workflow_id": driver.workflow_id})
        self._driver = driver

    def isEnabledFor(self, level: int) -> bool:
        return not self._driver.replaying and super().isEnabledFor(level)


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or "#" in value:
        raise DefinitionError(
            f"{what}: expected a non-empty name without '/' or '#', got {value!r}"
        )
    # A repeated name is stored as ``name#n``: the limit leaves room for the suffix.
    problem = K.part_problem(value, what, K.MAX_NAME)
    if problem is not None:
        raise DefinitionError(problem)
    return value


def _timeout(value: Any, what: str) -> float | None:
    return None if value is None else parse_duration(value, what)


class _Closed:
    """What a context points at once its function is closed: any use says so."""

    __slots__ = ("run_id",)

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def __getattr__(self, name: str) -> Any:
        raise ClientError(
            f"run {self.run_id}: its workflow function was closed (the run finished or left "
            "memory); a context cannot be used after its run"
        )


class WorkflowContext:
    """The context of a code workflow (``@engine.workflow``): recorded steps, timers, waits.

    Awaiting a command that already completed in this run's history returns its recorded
    result (or raises its recorded error) at once, without running anything again.

    Attributes:
        run: the run's id and workflow id.
        args: the arguments the run was started with.
    """

    __slots__ = ("_driver", "_log", "args", "run")

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self.run = WorkflowInfo(driver.run_id, driver.workflow_id)
        self.args: tuple[Any, ...] = ()
        self._log: _ReplayAwareLogger | None = None

    def _release(self) -> None:
        """The function was closed (its run ended or left memory): let go of the driver."""
        # A stand-in typed as the driver: every use of it raises (see ``_Closed``).
        self._driver = cast("Driver", _Closed(self.run.id))
        self._log = None

    # -- steps ---------------------------------------------------------------------------------

    def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        timeout: Any = None,
        retry: Retry | None = None,
        heartbeat_timeout: Any = None,
        breaker: Any = None,
        queue: Any = None,
        cache: Any = None,
    ) -> Awaitable[Any]:
        """Run ``fn(*args)`` in the worker pool, recorded; await it for its result.

        Inside ``fn``, :func:`actorflow.step_context` gives the step's context
        (``heartbeat``, ``heartbeat_details``, ``idempotency_key``, ``state``, ``log``).

        Args:
            name: the step's name (may repeat: the second use is recorded as ``name#2``).
            fn: the function; importable functions travel by reference, others by value.
            *args: its arguments (JSON-compatible or picklable).
            timeout: time limit of one attempt; the worker is killed past it.
            retry: retry policy (default: the workflow's ``retry=``, else run once).
            heartbeat_timeout: kill and retry the attempt if it sends no heartbeat for this
                long; the last heartbeat's details reach the next attempt.
            breaker: an :class:`~actorflow.CircuitBreaker`: while it is open, attempts fail
                at once with ``CircuitOpen`` (retried per the policy).
            queue: an :class:`~actorflow.Queue`: the step waits for a slot of it before it
                starts (shared with every step given the same queue, in any run).
            cache: an :class:`~actorflow.Cache` whose ``key`` is called with the step's
                arguments (``key(*args)``): a step of this name whose key was recorded
                within the TTL, by any run of this workflow, returns that output without
                running (its record says ``cached``).

        Raises:
            StepFailed: (when awaited) the step failed for good; its exception is the cause.
        """
        if not callable(fn):
            raise DefinitionError(f"ctx.step {name!r}: fn: expected a callable, got {fn!r}")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise DefinitionError(
                f"ctx.step {name!r}: breaker: expected af.CircuitBreaker(...), got {breaker!r}"
            )
        if cache is not None and not isinstance(cache, Cache):
            raise DefinitionError(
                f"ctx.step {name!r}: cache: expected af.Cache(key=..., ttl=...), got {cache!r}"
            )
        if queue is not None and not isinstance(queue, Queue):
            raise DefinitionError(
                f"ctx.step {name!r}: queue: expected af.Queue(...), got {queue!r}"
            )
        opts = {
            "fn": fn,
            "args": args,
            "timeout": _timeout(timeout, f"ctx.step {name!r}: timeout"),
            "retry": _retry(retry, f"ctx.step {name!r}"),
            "heartbeat_timeout": _timeout(
                heartbeat_timeout, f"ctx.step {name!r}: heartbeat_timeout"
            ),
            "breaker": breaker,
            "queue": queue,
            "cache": cache,
        }
        return self._future("step", _name(name, "ctx.step: name"), opts)

    def map(
        self,
        name: str,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        concurrency: int | None = None,
        timeout: Any = None,
        retry: Retry | None = None,
    ) -> Awaitable[list[Any]]:
        """Run ``fn(item)`` for every item in the pool, each recorded on its own.

        Items run in parallel (at most ``concurrency`` at once); the result lists their
        outputs in item order. After a crash only the items without a recorded result run
        again. If an item fails for good, the others are stopped and the map raises.

        Raises:
            StepFailed: (when awaited) an item failed for good (its path is ``name[i]``).
        """
        if not callable(fn):
            raise DefinitionError(f"ctx.map {name!r}: fn: expected a callable, got {fn!r}")
        if isinstance(items, str | bytes | dict):
            raise DefinitionError(
                f"ctx.map {name!r}: items: expected a list of items, got {type(items).__name__}"
            )
        if concurrency is not None and (
            not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
        ):
            raise DefinitionError(
                f"ctx.map {name!r}: concurrency: expected an integer >= 1, got {concurrency!r}"
            )
        opts = {
            "fn": fn,
            "items": list(items),
            "concurrency": concurrency,
            "timeout": _timeout(timeout, f"ctx.map {name!r}: timeout"),
            "retry": _retry(retry, f"ctx.map {name!r}"),
        }
        return self._future("map", _name(name, "ctx.map: name"), opts)

    def sleep(self, name: str, duration: Any) -> Awaitable[None]:
        """A durable timer: the run sleeps (out of any thread) and wakes after a restart too."""
        seconds = parse_duration(duration, f"ctx.sleep {name!r}: duration", allow_zero=True)
        return self._future("sleep", _name(name, "ctx.sleep: name"), {"seconds": seconds})

    def child(
        self,
        name: str,
        workflow_id: str,
        *args: Any,
        parent_close_policy: str = "terminate",
    ) -> Awaitable[Any]:
        """Start a child run of ``workflow_id`` (once, ever) and await its result.

        A code workflow child gets ``*args``; a graph workflow child gets ``args[0]`` as its
        payload. The child's failure raises here as :class:`~actorflow.StepFailed` whose
        cause is the child's error. The child is started even if it is never awaited
        (also when the function ends, or continues as new, in the same activation).

        Args:
            name: the command's name.
            workflow_id: the child's workflow.
            *args: its arguments.
            parent_close_policy: what happens to the child if it is still running when
                this run closes (completes, fails, is cancelled, continues as new): an
                :class:`~actorflow.ParentClosePolicy` or its value: ``"terminate"`` (the
                default, as Temporal's), ``"request_cancel"`` or ``"abandon"``.
        """
        try:
            policy = ParentClosePolicy(parent_close_policy)
        except ValueError:
            raise DefinitionError(
                f"ctx.child {name!r}: parent_close_policy: expected one of "
                f"{[p.value for p in ParentClosePolicy]}, got {parent_close_policy!r}"
            ) from None
        if not isinstance(workflow_id, str) or not workflow_id:
            raise DefinitionError(
                f"ctx.child {name!r}: workflow_id: expected a workflow id, got {workflow_id!r}"
            )
        opts = {"workflow": workflow_id, "args": args, "policy": policy.value}
        return self._future("child", _name(name, "ctx.child: name"), opts)

    def external(self, run_id: str) -> ExternalRun:
        """Another run, to signal or cancel from this workflow (``ctx.external(parent)``).

        Each call is a recorded command, carried out once: after a crash it is sent again
        with the same idempotency key, so the target takes it once.

        Raises:
            DefinitionError: ``run_id`` is not a non-empty string.
        """
        if not isinstance(run_id, str) or not run_id:
            raise DefinitionError(f"ctx.external: run_id: expected a run id, got {run_id!r}")
        return ExternalRun(self, run_id)

    # -- waits ---------------------------------------------------------------------------------

    async def wait_condition(
        self, fn: Callable[[], Any], *, timeout: Any = None, name: str = "wait_condition"
    ) -> None:
        """Wait until ``fn()`` is true: a predicate over the workflow's own state.

        As Temporal's ``workflow.wait_condition``: ``fn`` is checked now, then after every
        activation (a signal or update handled, a step's result), so it holds at the same
        points when the run is replayed. It must only read the function's state (no I/O,
        no clock). With a ``timeout``, a durable timer ``name`` (a ``sleep`` record) bounds
        the wait: past it, :class:`~actorflow.WaitTimeout` (a ``TimeoutError``) is raised;
        if the condition holds first, the timer is dropped (its record says cancelled).

        Raises:
            WaitTimeout: ``timeout`` passed first.
            DefinitionError: ``fn`` is not callable, or ``timeout`` is not a duration.
        """
        if not callable(fn):
            raise DefinitionError(f"ctx.wait_condition: fn: expected a callable, got {fn!r}")
        import asyncio  # here: ``import actorflow`` must stay light (tests/test_extras.py)

        self._driver.check_usable("ctx.wait_condition")
        if fn():
            return
        held = self._driver.add_condition(fn)
        if timeout is None:
            await held
            return
        timer = asyncio.ensure_future(self.sleep(name, timeout))
        try:
            await asyncio.wait({held, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the run's cancel is raised here
            timer.cancel()  # a timer still pending is dropped (``Driver._drop_cancelled``)
            held.cancel()
        if held.done() and not held.cancelled():
            return
        raise WaitTimeout(f"ctx.wait_condition {name!r}: not true within {timeout}")

    def wait_for_signal(
        self, name: str, *, timeout: Any = None, default: Any = _MISSING
    ) -> Awaitable[Any]:
        """Wait for the next signal ``name`` (``handle.signal(name, payload)``); its payload.

        Signals that arrive before anyone waits are kept in order. Without a ``default``,
        the wait raises :class:`~actorflow.WaitTimeout` past ``timeout``.
        """
        opts: dict[str, Any] = {"timeout": _timeout(timeout, f"wait_for_signal {name!r}: timeout")}
        if default is not _MISSING:
            opts["default"] = default
        if isinstance(name, str) and name in self._driver.signal_handlers:
            raise DefinitionError(taken_problem(name, waiting_first=False))
        return self._future("signal", _name(name, "ctx.wait_for_signal: name"), opts)

    def wait_for_event(
        self,
        event: str,
        *,
        key: str | None = None,
        match: Callable[[Any], bool] | None = None,
        timeout: Any = None,
        default: Any = _MISSING,
        name: str | None = None,
    ) -> Awaitable[Any]:
        """Wait for a published event (``engine.publish(event, payload, key=)``); its payload.

        Args:
            event: the event's name.
            key: only events published with this key (a keyed event published before the
                wait is kept for the engine's ``event_ttl`` and taken here).
            match: ``match(payload) -> bool`` filters events (evaluated in the engine).
            timeout: raise :class:`~actorflow.WaitTimeout` past it (or return ``default``).
            default: the value to return on timeout instead of raising.
            name: the command's name (default: the event's).
        """
        if not isinstance(event, str) or not event:
            raise DefinitionError(f"ctx.wait_for_event: event: expected a name, got {event!r}")
        problem = K.part_problem(event, "ctx.wait_for_event: event", K.MAX_NAME)
        if problem is None and key is not None:
            problem = K.part_problem(key, f"ctx.wait_for_event {event!r}: key", K.MAX_USER_KEY)
        if problem is not None:
            raise DefinitionError(problem)
        opts: dict[str, Any] = {
            "event": event,
            "key": key,
            "match": match,
            "timeout": _timeout(timeout, f"wait_for_event {event!r}: timeout"),
        }
        if default is not _MISSING:
            opts["default"] = default
        return self._future("event", _name(name or event, "ctx.wait_for_event: name"), opts)

    # -- run lifecycle ---------------------------------------------------------------------------

    def continue_as_new(self, *args: Any) -> NoReturn:
        """End this run and start a new one of the same workflow with ``args``.

        The new run starts with an empty history, which keeps long-lived loops' histories
        bounded. ``RunHandle.result()`` follows the chain.
        """
        driver = self._driver
        driver.check_usable("ctx.continue_as_new")
        driver.continue_args = tuple(args)
        raise ContinueAsNew("continue as new")

    def patched(self, patch_id: str) -> bool:
        """True where new code runs; False when replaying a run that started before it.

        Wrap a change to a workflow's commands: ``if ctx.patched("v2"): new() else: old()``.
        A run that passed this point before the change keeps the old path; every other run
        takes the new one (and records that it did).
        """
        return self._driver.patched(_name(patch_id, "ctx.patched: patch_id"))

    def upsert_search_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set (or, with None, remove) search attributes of this run, as Temporal's.

        Recorded in the history (a replay does not set them again) and indexed in the same
        write as the activation: ``engine.runs(where={"status": "shipped"})`` finds the run
        once the activation is durable. The others keep their values.

        Args:
            attributes: name -> a string, a number, a boolean, or None to remove it.

        Raises:
            DefinitionError: a name or value that cannot be indexed (named).
        """
        self._driver.check_usable("ctx.upsert_search_attributes")
        try:
            checked = check_attributes(attributes, "ctx.upsert_search_attributes", removals=True)
        except ClientError as exc:
            raise DefinitionError(str(exc)) from None
        self._driver.command("attrs", "search_attributes", {"attrs": checked}, future=False)

    def deprecate_patch(self, patch_id: str) -> None:
        """Mark a patch whose old path is gone: no run that needs it is still open.

        Replaces ``if ctx.patched(id)`` once the old branch is deleted; runs that recorded
        the patch still replay.
        """
        self._driver.patched(_name(patch_id, "ctx.deprecate_patch: patch_id"), deprecated=True)

    # -- determinism ----------------------------------------------------------------------------

    def now(self) -> _dt.datetime:
        """The current time of the workflow (UTC), the same on every replay."""
        return _dt.datetime.fromtimestamp(self._driver.now, _dt.UTC)

    def time(self) -> float:
        """:meth:`now` as seconds since the epoch."""
        return self._driver.now

    def random(self) -> float:
        """A random float in [0, 1), the same on every replay."""
        return self._driver.rng.random()

    @property
    def rng(self) -> Any:
        """The run's deterministic ``random.Random`` (``ctx.rng.choice(...)``)."""
        return self._driver.rng

    def uuid4(self) -> uuid.UUID:
        """A random UUID, the same on every replay."""
        return uuid.UUID(int=self._driver.rng.getrandbits(128), version=4)

    @property
    def is_replaying(self) -> bool:
        """True while recorded history is being replayed (side effects would repeat)."""
        return self._driver.replaying

    @property
    def log(self) -> logging.LoggerAdapter:  # type: ignore[type-arg]
        """A logger (``actorflow.workflow``) that is silent during replay."""
        if self._log is None:
            self._log = _ReplayAwareLogger(self._driver)
        return self._log

    # -- handlers ------------------------------------------------------------------------------

    def on_query(self, name: str, fn: Callable[..., Any]) -> None:
        """Answer ``handle.query(name, *args)`` with ``fn(*args)`` (read-only, synchronous)."""
        self._handler(self._driver.query_handlers, "on_query", name, fn)

    def on_signal(self, name: str, fn: Callable[..., Any]) -> None:
        """Call ``fn`` (sync or async) for each signal ``name``, with what its sender sent.

        ``handle.signal(name, payload)`` calls ``fn(payload)``; ``handle.signal(name)`` calls
        ``fn()`` if ``fn`` takes no argument (else ``fn(None)``);
        ``handle.signal(name, args=[a, b, c])`` calls ``fn(a, b, c)``. A signal whose
        arguments do not fit ``fn`` is dropped with a warning (the run goes on). Signals that
        arrived before the handler was registered are delivered to it at once.
        """
        if self._driver.signal_waits.get(name):
            raise DefinitionError(taken_problem(name, waiting_first=True))
        self._handler(self._driver.signal_handlers, "on_signal", name, fn)
        buffered = self._driver.signals.pop(name, None)
        for sent in buffered or ():
            self._driver._signal(name, sent)

    def on_update(self, name: str, fn: Callable[[Any], Any]) -> None:
        """Handle ``handle.update(name, payload)`` with ``fn(payload)``.

        ``fn`` may be sync or async (and await steps); its return value is the update's
        result, sent to the caller once it is durable.
        """
        self._handler(self._driver.update_handlers, "on_update", name, fn)

    def _handler(
        self, table: dict[str, Callable[..., Any]], what: str, name: str, fn: Callable[..., Any]
    ) -> None:
        problem = handler_problem(f"ctx.{what}", name, fn)
        if problem is not None:
            raise DefinitionError(problem)
        table[name] = fn

    # -- helpers -------------------------------------------------------------------------------

    def _future(self, kind: str, name: str, opts: dict[str, Any]) -> asyncio.Future[Any]:
        cmd = self._driver.command(kind, name, opts)
        assert cmd.fut is not None
        return cmd.fut

    def __repr__(self) -> str:
        return f"<WorkflowContext {self.run.workflow_id}/{self.run.id}>"


class ExternalRun:
    """A run this workflow signals or cancels: ``ctx.external(run_id)``.

    As Temporal's ``workflow.get_external_workflow_handle``.
    """

    def __init__(self, ctx: WorkflowContext, run_id: str) -> None:
        self._ctx = ctx
        self.run_id = run_id

    def signal(
        self, name: str, payload: Any = None, *, args: list[Any] | None = None
    ) -> Awaitable[bool]:
        """Send the signal ``name`` (``payload``, or ``args`` for several arguments).

        Awaited: True once it is durable in the target, False if the target had it already.

        Raises:
            StepFailed: (when awaited) the target refused it (``RunNotFound``, a finished
                run, a graph run); the cause says why.
        """
        what = f"ctx.external({self.run_id!r}).signal"
        _name(name, f"{what}: name")
        # Recorded as the command "signal:<name>": the prefix counts against the limit.
        _name(f"signal:{name}", f"{what}: name (with its 'signal:' prefix)")
        if args is not None and payload is not None:
            raise DefinitionError(f"{what} {name!r}: give payload or args, not both")
        if args is not None and not isinstance(args, list | tuple):
            raise DefinitionError(f"{what} {name!r}: args: expected a list, got {args!r}")
        opts = {"op": "signal", "target": self.run_id, "name": name, "payload": payload}
        if args is not None:
            opts["args"] = list(args)
        return self._ctx._future("external", f"signal:{name}", opts)

    def cancel(self, reason: str = "") -> Awaitable[bool]:
        """Cancel the target run.

        Awaited: True once the cancel is durable there, False if it had finished.
        """
        if not isinstance(reason, str):
            raise DefinitionError(
                f"ctx.external(...).cancel: reason: expected a str, got {reason!r}"
            )
        opts = {"op": "cancel", "target": self.run_id, "reason": reason}
        return self._ctx._future("external", "cancel", opts)

    def __repr__(self) -> str:
        return f"<ExternalRun {self.run_id}>"


def _retry(value: Any, what: str) -> Retry | None:
    if value is not None and not isinstance(value, Retry):
        raise DefinitionError(f"{what}: retry: expected af.Retry(...), got {value!r}")
    return value
