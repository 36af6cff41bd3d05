"""The driver: runs a workflow function against its history, one activation at a time.

The driver knows nothing of the store or the pool. It owns the deterministic loop, the
function's main task, the commands issued so far and their futures, signal buffers and
handlers, and the deterministic sources (time, randomness, patches). Its *host* carries out
live commands: the engine's code supervisor (which records and dispatches them) or the replay
tool (which only compares them with a history).

An activation is: set the time, apply resolutions in order, run the loop until idle. In
replay, each command the code issues is compared with the next recorded one; the first
difference raises :class:`~actorflow.errors.NondeterminismError` naming the position.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from actorflow.code._context import ContinueAsNew, WorkflowContext
from actorflow.code._history import describe
from actorflow.code._loop import DeterministicLoop
from actorflow.code._signals import (
    HANDLERS_QUERY,
    Sent,
    describe_handlers,
    fit_args,
    sent_from,
)
from actorflow.errors import ClientError, NondeterminismError, RunError, WaitTimeout

__all__ = ["Command", "Driver", "Host", "Outcome"]

_MISSING: Any = object()

log = logging.getLogger("actorflow.workflow")


class Command:
    """A command the workflow issued: a step, a map, a sleep, a wait, a child, a marker.

    Attributes:
        seq: its position in the history (0-based).
        kind: ``step``, ``map``, ``sleep``, ``signal``, ``event``, ``child`` or ``patch``.
        name: the name the code gave it.
        path: where its records live: the name, or ``name#2`` for its second use.
        fut: settled when it resolves (None for markers).
        opts: what the host needs to carry it out (function, arguments, options).
    """

    __slots__ = ("fut", "kind", "name", "opts", "path", "seq")

    def __init__(
        self,
        seq: int,
        kind: str,
        name: str,
        path: str,
        fut: asyncio.Future[Any] | None,
        opts: dict[str, Any],
    ) -> None:
        self.seq = seq
        self.kind = kind
        self.name = name
        self.path = path
        self.fut = fut
        self.opts = opts

    def recorded(self) -> list[Any]:
        return [self.seq, self.kind, self.name]

    def __repr__(self) -> str:
        return f"<Command {self.seq} {describe(self.kind, self.name)}>"


class Host(Protocol):
    """Carries out the driver's live commands."""

    def issue(self, cmd: Command) -> None:
        """A live command was issued: record it and start it."""
        ...

    def settled(self, cmd: Command) -> None:
        """A live command resolved within the workflow (a buffered signal taken at once)."""
        ...

    def update_done(self, update_id: str, task: asyncio.Task[Any]) -> None:
        """An update handler finished (``task`` holds its result or error)."""
        ...

    def dropped(self, cmd: Command) -> None:
        """The function cancelled a live command's future: stop what carries it out."""
        ...


#: How the function ended: ("completed", value), ("failed", exc), ("panic", exc),
#: ("continue", args), ("cancelled", reason), or None while it runs.
Outcome = tuple[str, Any] | None


class Driver:
    """Runs one workflow function deterministically.

    Args:
        fn: the ``async def f(ctx, *args)``.
        args: its arguments.
        run_id: the run (seeds the random source).
        workflow_id: the workflow.
        host: carries out live commands.
        failure_types: exceptions that fail the run when the function raises them; any
            other exception (a bug) panics it. Errors of steps, children and waits
            (:class:`~actorflow.RunError`) always fail it.
    """

    __slots__ = (
        "_rng",
        "cancel_reason",
        "cancelled",
        "closed",
        "conditions",
        "continue_args",
        "ctx",
        "expected",
        "failure_types",
        "host",
        "issued",
        "loop",
        "main",
        "now",
        "panic",
        "patches",
        "pending",
        "query_handlers",
        "querying",
        "run_id",
        "seq",
        "signal_handlers",
        "signal_waits",
        "signals",
        "update_handlers",
        "uses",
        "workflow_id",
    )

    def __init__(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: Sequence[Any],
        run_id: str,
        workflow_id: str,
        host: Host,
        failure_types: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.run_id = run_id
        self.workflow_id = workflow_id
        self.host = host
        self.failure_types = failure_types
        self.now = 0.0
        self.loop = DeterministicLoop(lambda: self.now, self._loop_error)
        self._rng: random.Random | None = None  # made on first use (it is 2.5 KB)
        self.seq = 0
        self.uses: dict[str, int] = {}  # name -> times used (paths of repeated names)
        self.pending: dict[int, Command] = {}
        #: Pending commands whose future was cancelled, until ``_drop_cancelled``.
        self.cancelled: list[Command] = []
        self.expected: deque[list[Any]] | None = None  # replaying: the recorded commands
        self.issued: list[Command] = []
        self.signals: dict[str, deque[Sent]] = {}
        self.signal_waits: dict[str, deque[Command]] = {}
        self.signal_handlers: dict[str, Callable[..., Any]] = {}
        self.query_handlers: dict[str, Callable[..., Any]] = {}
        self.update_handlers: dict[str, Callable[..., Any]] = {}
        self.patches: dict[str, bool] = {}
        self.panic: BaseException | None = None
        self.cancel_reason: str | None = None  # the run's cancel, once requested
        # ctx.wait_condition: predicates over the function's state, with their futures.
        self.conditions: list[tuple[Callable[[], Any], asyncio.Future[None]]] = []
        self.continue_args: tuple[Any, ...] | None = None
        self.closed = False
        self.querying = False
        self.ctx = WorkflowContext(self)
        self.main = self.loop.create_task(
            _awaited(fn(self.ctx, *args)), name=f"workflow {workflow_id}"
        )

    @property
    def rng(self) -> random.Random:
        """The run's random source, seeded by its id: the same numbers on every replay."""
        if self._rng is None:
            try:
                seed = int(self.run_id[-12:], 16)
            except ValueError:
                seed = sum(self.run_id.encode())
            self._rng = random.Random(seed)
        return self._rng

    # -- activations ---------------------------------------------------------------------------

    @property
    def replaying(self) -> bool:
        """True while an activation recorded in the history is being replayed."""
        return self.expected is not None

    def activate(
        self, resolutions: Sequence[Sequence[Any]], now: float, expected: list[Any] | None = None
    ) -> list[Command]:
        """Apply resolutions, run the function until it waits; return the commands it issued.

        Args:
            resolutions: decoded resolutions (values as Python objects, errors as
                exceptions): ``("ok", seq, value)``, ``("err", seq, exc)``, ``("tmo", seq)``,
                ``("sig", name, value)``, ``("upd", id, name, value)``.
            now: the activation's time.
            expected: in replay, the commands the history recorded for this activation.
        """
        self.now = now
        self.issued = []
        self.expected = deque(expected) if expected is not None else None
        try:
            for res in resolutions:
                self._apply(res)
            self.loop.run_until_idle()
            while self._check_conditions():
                self.loop.run_until_idle()
            self._drop_cancelled()
            if self.expected and self.panic is None:
                rec = self.expected[0]
                self._diverged(int(rec[0]), describe(rec[1], rec[2]), None, throw=False)
        finally:
            self.expected = None
        return self.issued

    def outcome(self) -> Outcome:
        """How the function ended, or None while it runs (or waits)."""
        if self.panic is not None:
            return ("panic", self.panic)
        if self.continue_args is not None and (self.main.done() or self.closed):
            return ("continue", self.continue_args)
        if not self.main.done():
            return None
        if self.main.cancelled():
            if self.cancel_reason is not None:  # the run's cancel, not caught: it is cancelled
                return ("cancelled", self.cancel_reason)
            return ("panic", RuntimeError("the workflow's main task was cancelled"))
        exc = self.main.exception()
        if exc is None:
            return ("completed", self.main.result())
        if isinstance(exc, ContinueAsNew) and self.continue_args is not None:
            return ("continue", self.continue_args)
        if isinstance(exc, (RunError, *self.failure_types)):
            return ("failed", exc)
        return ("panic", exc)

    def close(self) -> None:
        """Discard the live function (eviction, end of run); it can issue nothing more.

        It also breaks the reference cycles a live function needs (the loop calls back into
        the driver, the context points at it, the loop holds the tasks that hold the
        loop): a closed driver is then freed by reference counting as soon as its
        supervisor lets go, not left for a full collection of the garbage collector, which
        the engine defers (engine/_collector.py).
        """
        self.closed = True
        self.loop.close()
        self.loop.release()
        self.ctx._release()

    def _apply(self, res: Sequence[Any]) -> None:
        kind = res[0]
        if kind in ("ok", "err", "tmo"):
            cmd = self.pending.pop(int(res[1]), None)
            if cmd is None or cmd.fut is None or cmd.fut.done():
                return
            if cmd.kind == "signal":
                waits = self.signal_waits.get(cmd.name)
                if waits is not None and cmd in waits:
                    waits.remove(cmd)
            if kind == "ok":
                cmd.fut.set_result(res[2])
            elif kind == "err":
                _set_exception(cmd.fut, res[2])
            elif "default" in cmd.opts:
                cmd.fut.set_result(cmd.opts["default"])
            else:
                what = "signal" if cmd.kind == "signal" else "event"
                _set_exception(
                    cmd.fut,
                    WaitTimeout(
                        f"no {what} {cmd.opts.get('event', cmd.name)!r} within "
                        f"{cmd.opts.get('timeout', 0):g}s"
                    ),
                )
        elif kind == "sig":
            self._signal(str(res[1]), sent_from(res))
        elif kind == "upd":
            self._update(str(res[1]), str(res[2]), res[3])
        elif kind == "cxl":
            self._cancel(str(res[1]))

    def _cancel(self, reason: str) -> None:
        """The run is cancelled: ``CancelledError`` is raised in the function where it waits.

        As in Temporal, the function may catch it, run clean-up steps (they are new commands:
        nothing cancels them) and end as it likes; uncaught, the run ends cancelled. What it
        was awaiting is cancelled by asyncio and dropped by :meth:`_drop_cancelled`.
        """
        if self.cancel_reason is not None:
            return  # requested once: a second cancel changes nothing
        self.cancel_reason = reason
        if not self.main.done():
            self.main.cancel(reason)

    def _check_conditions(self) -> bool:
        """Resolve the ``wait_condition`` predicates that hold now; True if one did.

        Called once the function is idle after each activation (a signal, an update, a
        result), and again while one resolves, since what it wakes may change the state.
        The predicates read only the function's state, which replay rebuilds: they hold at
        the same points on every replay. A predicate that raises panics the run.
        """
        held = False
        for entry in list(self.conditions):
            fn, fut = entry
            if fut.done():
                self.conditions.remove(entry)
                continue
            try:
                ok = fn()
            except Exception as exc:
                if self.panic is None:
                    self.panic = exc
                self.conditions.remove(entry)
                continue
            if ok:
                self.conditions.remove(entry)
                fut.set_result(None)
                held = True
        return held

    def add_condition(self, fn: Callable[[], Any]) -> asyncio.Future[None]:
        """A future set once ``fn()`` is true, checked after each activation."""
        fut: asyncio.Future[None] = self.loop.create_future()
        self.conditions.append((fn, fut))
        return fut

    def _done(self, cmd: Command, fut: Any) -> None:
        if fut.cancelled():
            self.cancelled.append(cmd)

    def _drop_cancelled(self) -> None:
        """Commands whose future the function cancelled: no longer pending, and stopped.

        A run's cancel cancels what the function awaited; the code may cancel a command too
        (``asyncio.wait_for``, a ``TaskGroup`` that failed). Either way the step's worker is
        stopped and its record says cancelled. In replay nothing is stopped (it was, the
        first time), but the command leaves ``pending`` the same way, so it is not resumed.
        """
        cancelled, self.cancelled = self.cancelled, []
        for cmd in cancelled:
            if self.pending.pop(cmd.seq, None) is None:
                continue
            if cmd.kind == "signal":
                waits = self.signal_waits.get(cmd.name)
                if waits is not None and cmd in waits:
                    waits.remove(cmd)
            if not self.replaying:
                self.host.dropped(cmd)

    def _signal(self, name: str, sent: Sent) -> None:
        handler = self.signal_handlers.get(name)
        if handler is not None:
            args = fit_args(handler, sent)
            if isinstance(args, str):
                if not self.replaying:
                    log.warning(
                        "run %s: signal %r dropped: %s", self.run_id, name, args,
                        extra={"run_id": self.run_id, "workflow_id": self.workflow_id},
                    )  # fmt: skip
                return
            self.loop.call_soon(self._call_handler, handler, args, f"signal handler {name!r}")
            return
        waits = self.signal_waits.get(name)
        while waits:
            cmd = waits.popleft()
            self.pending.pop(cmd.seq, None)
            if cmd.fut is not None and not cmd.fut.done():
                cmd.fut.set_result(sent.value)
                if not self.replaying:
                    self.host.settled(cmd)
                return
        self.signals.setdefault(name, deque()).append(sent)

    def _call_handler(self, handler: Callable[..., Any], args: tuple[Any, ...], what: str) -> None:
        result = handler(*args)
        if inspect.isawaitable(result):
            task = self.loop.create_task(_awaited(result), name=what)
            task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None and self.panic is None:
            self.panic = task.exception()

    def _update(self, update_id: str, name: str, value: Any) -> None:
        handler = self.update_handlers.get(name)
        if handler is None:
            # It was accepted when recorded, so the code that registered it has changed.
            self._diverged(self.seq, f"update handler {name!r}", None, throw=False)
            return
        task = self.loop.create_task(_call(handler, value), name=f"update {name!r}")
        host = self.host
        task.add_done_callback(lambda t: host.update_done(update_id, t))

    def _loop_error(self, context: dict[str, Any]) -> None:
        if self.panic is None:
            exc = context.get("exception")
            self.panic = exc if exc is not None else RuntimeError(str(context.get("message")))

    def _diverged(
        self, position: int, expected: str | None, actual: str | None, throw: bool = True
    ) -> None:
        """Record the first divergence (the run panics even if the code catches it)."""
        exc = NondeterminismError(position, expected, actual, self.run_id)
        if self.panic is None:
            self.panic = exc
        if throw:
            raise exc

    # -- commands (called by the context, inside the function) ---------------------------------

    def check_usable(self, what: str) -> None:
        if self.closed:
            raise RuntimeError(f"{what}: this run's live function was discarded")
        if self.querying:
            raise ClientError(f"{what}: a query handler must only read the workflow's state")
        if self.continue_args is not None:
            raise ContinueAsNew(f"{what}: the run already continued as new")
        if self.panic is not None:
            raise self.panic

    def command(self, kind: str, name: str, opts: dict[str, Any], future: bool = True) -> Command:
        """Issue a command (live) or match it with the history (replay)."""
        self.check_usable(f"ctx {kind} {name!r}")
        seq = self.seq
        if self.expected is not None:
            if not self.expected:
                self._diverged(seq, None, describe(kind, name))
            rec = self.expected[0]
            if rec[1] != kind or rec[2] != name:
                self._diverged(seq, describe(rec[1], rec[2]), describe(kind, name))
            self.expected.popleft()
        self.seq += 1
        used = self.uses.get(name, 0) + 1
        self.uses[name] = used
        path = name if used == 1 else f"{name}#{used}"
        fut = self.loop.create_future() if future else None
        cmd = Command(seq, kind, name, path, fut, opts)
        if fut is not None:
            self.pending[seq] = cmd
            # Noted when cancelled, so that dropping them costs what was cancelled, not a scan
            # of every pending command after each activation (a gather of thousands).
            fut.add_done_callback(functools.partial(self._done, cmd))
        if kind == "signal":
            buffered = self.signals.get(name)
            if buffered:
                self.pending.pop(seq, None)
                assert fut is not None
                fut.set_result(buffered.popleft().value)
            else:
                self.signal_waits.setdefault(name, deque()).append(cmd)
        if self.expected is None:
            self.issued.append(cmd)
            self.host.issue(cmd)
        return cmd

    def patched(self, patch_id: str, deprecated: bool = False) -> bool:
        known = self.patches.get(patch_id)
        if known is not None:
            return known
        self.check_usable(f"ctx.patched({patch_id!r})")
        if self.expected is not None:
            rec = self.expected[0] if self.expected else None
            present = rec is not None and rec[1] == "patch" and rec[2] == patch_id
            if present:
                self.expected.popleft()
                self.seq += 1
            self.patches[patch_id] = present
            return present
        if not deprecated:
            self.command("patch", patch_id, {}, future=False)
        self.patches[patch_id] = True
        return True

    def query(self, name: str, args: Sequence[Any]) -> Any:
        if name == HANDLERS_QUERY and not args:
            return describe_handlers(
                {
                    "queries": self.query_handlers,
                    "signals": self.signal_handlers,
                    "updates": self.update_handlers,
                }
            )
        handler = self.query_handlers.get(name)
        if handler is None:
            raise ClientError(
                f"query {name!r}: the workflow registered no such query handler "
                f"(it has {sorted(self.query_handlers)}); register it with ctx.on_query"
            )
        self.querying = True
        try:
            result = handler(*args)
        finally:
            self.querying = False
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise ClientError(f"query {name!r}: a query handler must be a plain function")
        return result


async def _awaited(value: Awaitable[Any]) -> Any:
    return await value


async def _call(handler: Callable[..., Any], value: Any) -> Any:
    result = handler(value)
    if inspect.isawaitable(result):
        result = await result
    return result


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    fut.set_exception(exc)
    # The code may never await a failed command it started; that is its choice, not an error.
    fut._log_traceback = False
