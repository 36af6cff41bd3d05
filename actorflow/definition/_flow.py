"""The fluent vocabulary of a flow: steps and every control-flow construct.

A :class:`Flow` only records what it is told; nothing is validated piecemeal. Mistakes in the
structure itself (an ``elif_`` after ``else_``, an ``endif`` with no ``if_``) are noted and
reported with every other problem when the workflow is built (``_build.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from actorflow.definition._options import Retry
from actorflow.errors import DefinitionError

__all__ = ["ITEM", "Flow"]


class _ItemPlaceholder:
    """Stands for the item while a for_each/batch body builder runs (once, at definition).

    Steps read the current item as ``ctx.item`` at run time; capturing this placeholder in a
    step by mistake fails loudly instead of silently using a stale value.
    """

    def __getattr__(self, name: str) -> Any:
        raise TypeError(
            "a for_each/batch body builder runs once, when the workflow is defined: read the "
            "current item in a step as ctx.item (and its position as ctx.index)"
        )

    def __repr__(self) -> str:
        return "<the current item: read ctx.item in a step>"


#: What a ``body(item, flow)`` builder receives as ``item``.
ITEM: Any = _ItemPlaceholder()


@dataclass(slots=True)
class RawStep:
    name: Any
    fn: Any
    kind: str
    timeout: Any
    retry: Any
    on_error: Any = None
    call: str = "ctx"
    heartbeat_timeout: Any = None
    breaker: Any = None
    cache: Any = None
    queue: Any = None


@dataclass(slots=True)
class RawArm:
    name: Any
    pred: Any  # None: else
    block: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class RawBranch:
    name: Any
    arms: list[RawArm]
    closed: bool = False


@dataclass(slots=True)
class RawParallel:
    name: Any
    branches: Any
    race: bool


@dataclass(slots=True)
class RawWhile:
    name: Any
    pred: Any
    body: Any
    max_iterations: Any


@dataclass(slots=True)
class RawForEach:
    name: Any
    items: Any
    body: Any
    concurrency: Any
    size: Any  # None: for_each; else batch


@dataclass(slots=True)
class RawSubflow:
    name: Any
    workflow_id: Any
    input: Any
    on_error: Any = None


@dataclass(slots=True)
class RawSleep:
    name: Any
    duration: Any


@dataclass(slots=True)
class RawWait:
    name: Any
    kind: str
    event: Any = None
    key: Any = None
    match: Any = None
    timeout: Any = None
    on_timeout: Any = "fail"
    default: Any = None
    description: Any = ""
    on_pause: Any = None
    metadata: Any = None


@dataclass(slots=True)
class RawCancel:
    name: Any
    reason: Any


class Flow:
    """A sequence of steps and control-flow constructs, built by chaining calls.

    A workflow (``engine.define(...)``) is a flow; ``af.Flow()`` makes a sub-flow to pass as a
    ``parallel``/``race`` branch or as a ``while_``/``for_each``/``batch`` body. A body may also
    be a function ``body(flow)`` (or ``body(item, flow)`` for for_each and batch) that adds
    steps to the flow it is given; it runs once, when the workflow is built.

    Args:
        name: the sub-flow's name (a parallel branch's key); optional.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self._block: list[Any] = []
        self._stack: list[RawBranch] = []  # open if_ blocks, innermost last
        self._notes: list[str] = []  # structural mistakes, reported at build
        self._cancels = 0
        self._frozen = False
        self._lock = threading.RLock()

    # -- where new nodes go ----------------------------------------------------------------

    def _current(self) -> list[Any]:
        if self._stack:
            return self._stack[-1].arms[-1].block
        return self._block

    def _add(self, node: Any) -> Self:
        with self._lock:
            if self._frozen:
                raise DefinitionError(
                    "is already built (its engine has started or it was triggered); "
                    "define every step before that",
                    getattr(self, "_id", self.name),
                )
            self._current().append(node)
        return self

    # -- leaves -----------------------------------------------------------------------------

    def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        timeout: Any = None,
        retry: Retry | None = None,
        heartbeat_timeout: Any = None,
        breaker: Any = None,
        cache: Any = None,
        queue: Any = None,
    ) -> Self:
        """Add a step: ``fn(ctx)`` runs in a worker process; its return value is recorded.

        Args:
            name: unique within the workflow.
            fn: a function of one argument, the step context. ``async def`` works too.
            timeout: a duration; past it the worker is killed and the attempt fails.
            retry: overrides the workflow's retry policy.
            heartbeat_timeout: a duration; a step that calls no ``ctx.heartbeat(details)``
                for this long is killed (``HeartbeatTimeout``) and retried per its policy;
                the next attempt reads the last details as ``ctx.heartbeat_details``.
            breaker: an :class:`~actorflow.CircuitBreaker` (shared with other steps and
                runs given the same one): while it is open, attempts fail at once with
                ``CircuitOpen`` and are retried per the policy.
            cache: an :class:`~actorflow.Cache` (``af.Cache(key=fn, ttl="1h")``): a step
                whose key was recorded within the TTL, by any run of this workflow, returns
                that output without running; its record says ``cached``.
            queue: an :class:`~actorflow.Queue`: at most its ``concurrency`` of the steps
                given it run at once (and at most ``rate_limit`` start per window), over
                every run of every workflow; the others wait for a slot before they start.
        """
        return self._add(
            RawStep(
                name,
                fn,
                "step",
                timeout,
                retry,
                heartbeat_timeout=heartbeat_timeout,
                breaker=breaker,
                cache=cache,
                queue=queue,
            )
        )

    def action(
        self, name: str, fn: Callable[..., Any], *, timeout: Any = None, retry: Retry | None = None
    ) -> Self:
        """Add an action: a side-effect step; ``ctx.last`` after it is still the last step's.

        Its return value is recorded like a step's (``ctx.steps[name].output``). Arguments are
        those of :meth:`step`.
        """
        return self._add(RawStep(name, fn, "action", timeout, retry))

    def on_error(self, handler: Callable[..., Any]) -> Self:
        """Handle the failure of the step (or subflow) just added.

        ``handler(ctx)`` runs in a worker once the step has failed for good (retries spent);
        ``ctx.error`` is the exception. Its return value becomes the step's output; if it
        raises, the step fails with that error. Called before any step of a workflow, it sets
        the workflow's default handler.
        """
        with self._lock:
            block = self._current()
            if block:
                last = block[-1]
                if isinstance(last, RawStep | RawSubflow):
                    last.on_error = handler
                else:
                    self._notes.append(
                        f"on_error({getattr(handler, '__name__', handler)!r}): attaches to a "
                        f"step or subflow, not to {getattr(last, 'name', last)!r}"
                    )
                return self
            if self._stack or not hasattr(self, "_id"):
                self._notes.append("on_error: no step to attach it to (add a step first)")
                return self
        return self._set_default_on_error(handler)

    def _set_default_on_error(self, handler: Callable[..., Any]) -> Self:
        self._notes.append("on_error before any step: only a workflow has a default handler")
        return self

    def subflow(
        self, name: str, workflow_id: str, input: Callable[[Any], Any] | None = None
    ) -> Self:
        """Run another workflow as a child run; its result is this node's output.

        Args:
            name: unique within the workflow.
            workflow_id: the child workflow (checked when the engine starts).
            input: ``input(ctx)`` (run in the engine) gives the child's payload; default: this
                run's payload.
        """
        return self._add(RawSubflow(name, workflow_id, input))

    def sleep(self, name: str, duration: Any) -> Self:
        """Wait ``duration`` on a durable timer (it survives restarts; the run leaves memory)."""
        return self._add(RawSleep(name, duration))

    def wait_for_event(
        self,
        event: str,
        *,
        name: str | None = None,
        timeout: Any = None,
        key: str | Callable[[Any], Any] | None = None,
        match: Callable[[Any, Any], Any] | None = None,
        on_timeout: str = "fail",
        default: Any = None,
    ) -> Self:
        """Wait until ``engine.publish(event, payload)``; the payload is this node's output.

        The run leaves memory while it waits and survives restarts. An event published with
        a ``key`` before the run got here is kept (for the engine's ``event_ttl``) and taken
        when a wait with the same key starts, so an early event is not lost.

        Args:
            event: the event's name.
            name: the node's name (default: ``event``).
            timeout: how long to wait (a duration); None waits for ever.
            key: take only events published with this key: a string, or ``key(ctx)``
                computed in the engine when the wait starts.
            match: ``match(ctx, payload) -> bool``, run in the engine: events that do not
                match are ignored.
            on_timeout: ``"fail"`` (the node fails with :class:`~actorflow.WaitTimeout`) or
                ``"continue"`` (the node succeeds with ``default``).
            default: the output after a timeout with ``on_timeout="continue"``.
        """
        return self._add(
            RawWait(
                event if name is None else name,
                "event",
                event=event,
                key=key,
                match=match,
                timeout=timeout,
                on_timeout=on_timeout,
                default=default,
            )
        )

    def human_in_the_loop(
        self,
        name: str,
        *,
        timeout: Any = None,
        description: str = "",
        on_pause: Callable[[str, Any], Any] | None = None,
        metadata: Any = None,
        on_timeout: str = "fail",
        default: Any = None,
    ) -> Self:
        """Pause the run until a person resumes it with ``engine.resume(token, payload)``.

        The pause is durable and gets an unguessable token; the payload given to ``resume``
        becomes this node's output. A token works once; after ``timeout`` it has expired.

        Args:
            name: the node's name.
            timeout: how long the approval may take (a duration); None waits for ever.
            description: what the person is asked (stored with the pending approval).
            on_pause: ``on_pause(token, ctx)``, called in the engine once the pause is
                durable, e.g. to send the approval link; its errors are logged.
            metadata: JSON-compatible data stored with the pending approval.
            on_timeout: ``"fail"`` (the node fails with :class:`~actorflow.WaitTimeout`) or
                ``"continue"`` (the node succeeds with ``default``, a fallback decision).
            default: the output after a timeout with ``on_timeout="continue"``.
        """
        return self._add(
            RawWait(
                name,
                "approval",
                timeout=timeout,
                on_timeout=on_timeout,
                default=default,
                description=description,
                on_pause=on_pause,
                metadata=metadata,
            )
        )

    def cancel(self, reason: str = "") -> Self:
        """End the run as cancelled (typically inside a branch)."""
        with self._lock:
            self._cancels += 1
            name = "cancel" if self._cancels == 1 else f"cancel#{self._cancels}"
        return self._add(RawCancel(name, reason))

    # -- branches ---------------------------------------------------------------------------

    def if_(self, name: str, pred: Callable[[Any], Any]) -> Self:
        """Open a branch: what follows runs if ``pred(ctx)`` (run in the engine) is true."""
        branch = RawBranch(name, [RawArm(name, pred)])
        self._add(branch)
        with self._lock:
            self._stack.append(branch)
        return self

    def elif_(self, name: str, pred: Callable[[Any], Any]) -> Self:
        """Another arm of the open branch, tried if the ones before it did not hold."""
        with self._lock:
            if not self._stack:
                self._notes.append(f"elif_({name!r}) without an open if_")
            elif self._stack[-1].arms[-1].pred is None:
                self._notes.append(f"elif_({name!r}) after else_() in if_ {self._stack[-1].name!r}")
            else:
                self._stack[-1].arms.append(RawArm(name, pred))
        return self

    def else_(self) -> Self:
        """The arm that runs when no predicate of the open branch held."""
        with self._lock:
            if not self._stack:
                self._notes.append("else_() without an open if_")
            elif self._stack[-1].arms[-1].pred is None:
                self._notes.append(f"a second else_() in if_ {self._stack[-1].name!r}")
            else:
                self._stack[-1].arms.append(RawArm("else", None))
        return self

    def endif(self) -> Self:
        """Close the innermost open branch."""
        with self._lock:
            if not self._stack:
                self._notes.append("endif() without an open if_")
            else:
                self._stack.pop().closed = True
        return self

    # -- fan-out and loops ------------------------------------------------------------------

    def parallel(self, name: str, branches: Sequence[Any] | Mapping[str, Any]) -> Self:
        """Run every branch at once; the output is a dict of their outputs by branch name.

        Args:
            name: unique within the workflow.
            branches: step functions, flows or ``fn(flow)`` builders; a list (named after the
                functions / flows) or a dict by name.
        """
        return self._add(RawParallel(name, branches, race=False))

    def race(self, name: str, branches: Sequence[Any] | Mapping[str, Any]) -> Self:
        """Run every branch at once; the first to succeed wins, the others are cancelled.

        Cancelled branches' workers are really stopped. Arguments are those of
        :meth:`parallel`.
        """
        return self._add(RawParallel(name, branches, race=True))

    def while_(
        self, name: str, pred: Callable[[Any], Any], body: Any, *, max_iterations: int
    ) -> Self:
        """Run ``body`` while ``pred(ctx)`` (run in the engine before each iteration) holds.

        Args:
            name: unique within the workflow.
            pred: the loop condition; ``ctx.iteration`` is the iteration about to start.
            body: a step function, a flow or a ``fn(flow)`` builder.
            max_iterations: the loop fails if it would run more often.
        """
        return self._add(RawWhile(name, pred, body, max_iterations))

    def for_each(
        self,
        name: str,
        items: Callable[[Any], Any],
        body: Any,
        *,
        concurrency: int | None = None,
    ) -> Self:
        """Run ``body`` once per item, ``concurrency`` at a time; outputs come in item order.

        Args:
            name: unique within the workflow.
            items: ``items(ctx)`` (run in the engine) returns the items.
            body: ``fn(item, ctx)`` run in a worker per item, a flow, or a builder
                ``fn(item, flow)`` (run once; its steps read ``ctx.item``).
            concurrency: most items in flight at once (default 1000).
        """
        return self._add(RawForEach(name, items, body, concurrency, None))

    def batch(self, name: str, items: Callable[[Any], Any], size: int, body: Any) -> Self:
        """Split the items into chunks of ``size`` and run ``body`` on each chunk in turn.

        ``body`` is ``fn(chunk, ctx)``, a flow, or a builder ``fn(chunk, flow)``; the output is
        the list of the chunks' outputs.
        """
        return self._add(RawForEach(name, items, body, 1, size))

    def __repr__(self) -> str:
        return f"<Flow {self.name!r}: {len(self._block)} nodes>"
