"""Interceptors: code around workflow starts, signals, queries, updates and step attempts.

As Temporal's interceptors, for logging, tracing, metrics, authorisation or adding search
attributes: ``Engine(interceptors=[MyInterceptor()])``. Each method of an
:class:`Interceptor` gets the call (a frozen dataclass saying what is asked) and ``next``,
the rest of the chain; it returns what ``next(call)`` returns (or raises), and may call
``next`` with a changed call (``dataclasses.replace(call, ...)``), not call it (refuse), or
act before and after it. The first interceptor given is the outermost.

Data flow. In the engine process the facade runs ``workflow_start`` (``trigger`` and its
async twin; ``next`` returns the run id once the run is durable), ``signal``, ``query`` and
``update`` (of run handles) through :func:`through`. Step attempts run in worker
processes: when the engine starts its pool, the chain is pickled once (cloudpickle: by
reference where importable, else by value, as step functions travel) and set in each worker
(:func:`install`); every attempt then runs its function through :func:`run_step`, the
OpenTelemetry step scope first when tracing is on (``af.observability.trace``: the
:class:`TracingInterceptor`, the same mechanism). Steps run inline (``InlineExecutor``) use
the engine's own chain.
"""

from __future__ import annotations

import functools
import importlib
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actorflow.errors import ConfigError
from actorflow.workers import _tracing

__all__ = [
    "CHAIN",
    "Interceptor",
    "QueryCall",
    "SignalCall",
    "StartCall",
    "StepCall",
    "TracingInterceptor",
    "UpdateCall",
    "install",
    "pack",
    "resolve",
    "run_step",
    "through",
]


@dataclass(frozen=True, slots=True)
class StartCall:
    """``engine.trigger(...)``: a run of ``workflow`` is to start (``next`` -> its run id)."""

    workflow: str
    args: tuple[Any, ...]
    idempotency_key: str | None = None
    priority: int = 0
    search_attributes: Mapping[str, Any] | None = None
    memo: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SignalCall:
    """``handle.signal(...)`` (``next`` -> True if delivered, False for a duplicate key)."""

    run_id: str
    name: str
    payload: Any = None
    args: Sequence[Any] | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class QueryCall:
    """``handle.query(name, *args)`` (``next`` -> the handler's answer)."""

    run_id: str
    name: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class UpdateCall:
    """``handle.update(name, payload)`` (``next`` -> the handler's result)."""

    run_id: str
    name: str
    payload: Any = None


@dataclass(frozen=True, slots=True)
class StepCall:
    """One step attempt, in the worker that runs it (``next`` -> the function's result).

    Attributes:
        run_id: the run.
        workflow_id: its workflow.
        step: the step's path.
        attempt: this attempt's number, from 1.
        fn: the step function (for reading: ``next`` calls it as the step is defined).
        pid: the process it runs in.
    """

    run_id: str
    workflow_id: str
    step: str
    attempt: int
    fn: Any = field(default=None, compare=False)
    pid: int = 0


class Interceptor:
    """Base class of interceptors: override the methods you need (see the module docstring).

    Each default passes the call on unchanged.
    """

    def workflow_start(self, call: StartCall, next: Callable[[StartCall], str]) -> str:
        """Around starting a run; returns its run id."""
        return next(call)

    def signal(self, call: SignalCall, next: Callable[[SignalCall], bool]) -> bool:
        """Around sending a signal."""
        return next(call)

    def query(self, call: QueryCall, next: Callable[[QueryCall], Any]) -> Any:
        """Around a query."""
        return next(call)

    def update(self, call: UpdateCall, next: Callable[[UpdateCall], Any]) -> Any:
        """Around an update."""
        return next(call)

    def step(self, call: StepCall, next: Callable[[StepCall], Any]) -> Any:
        """Around one step attempt, in the worker process that runs it."""
        return next(call)


class TracingInterceptor(Interceptor):
    """Runs each step attempt inside its OpenTelemetry span's context (``workers/_tracing``)."""

    def step(self, call: StepCall, next: Callable[[StepCall], Any]) -> Any:
        with _tracing.step_scope(_Info(call.run_id, call.step, call.attempt)):
            return next(call)


@dataclass(frozen=True, slots=True)
class _Info:
    id: str
    step: str
    attempt: int


#: The chain of this process: the engine's (inline steps), or the one a worker was given.
CHAIN: tuple[Interceptor, ...] = ()


def through(
    chain: Sequence[Interceptor], method: str, call: Any, last: Callable[[Any], Any]
) -> Any:
    """``call`` through each interceptor's ``method``, outermost first, then ``last``."""
    fn = last
    for interceptor in reversed(chain):
        fn = functools.partial(getattr(interceptor, method), next=fn)
    return fn(call)


def resolve(entries: Sequence[Any]) -> tuple[Interceptor, ...]:
    """Interceptors from ``EngineConfig.interceptors``.

    Each entry is an instance, or a ``"module:name"`` string (from a pyproject file or
    ``ACTORFLOW_INTERCEPTORS``) naming an instance or a class made without arguments.

    Raises:
        ConfigError: an entry that is neither, naming it.
    """
    out = []
    for i, entry in enumerate(entries):
        value = entry
        if isinstance(entry, str):
            module, _, name = entry.partition(":")
            try:
                value = importlib.import_module(module)
                for part in name.split(".") if name else ():
                    value = getattr(value, part)
            except Exception as exc:
                raise ConfigError(f"interceptors[{i}]: cannot import {entry!r}: {exc}") from None
            if isinstance(value, type):
                try:
                    value = value()
                except Exception as exc:
                    raise ConfigError(
                        f"interceptors[{i}]: {entry!r} cannot be made without arguments: {exc}"
                    ) from None
        if not isinstance(value, Interceptor):
            raise ConfigError(
                f"interceptors[{i}]: expected an af.Interceptor (or 'module:name' of one), "
                f"got {entry!r}"
            )
        out.append(value)
    return tuple(out)


def pack(chain: Sequence[Interceptor]) -> bytes:
    """The chain, pickled for worker processes (empty: none).

    Raises:
        ConfigError: an interceptor cannot be pickled (a worker could not have it).
    """
    if not chain:
        return b""
    # cloudpickle: by value where a class is not importable there (``__main__``'s), keeping
    # its code's file names for tracebacks.
    from actorflow._tracebacks import dumps_by_value

    try:
        data: bytes = dumps_by_value(tuple(chain))
        return data
    except Exception as exc:
        raise ConfigError(
            f"interceptors: cannot be sent to worker processes ({type(exc).__name__}: {exc}); "
            "keep their state picklable (no locks, sockets or open files)"
        ) from None


def install(blob: bytes, tracing: bool) -> None:
    """Set this worker process's chain: the tracing scope first if on, then the given ones."""
    global CHAIN
    given: tuple[Interceptor, ...] = pickle.loads(blob) if blob else ()
    CHAIN = ((TracingInterceptor(),) if tracing else ()) + given


def run_step(
    chain: Sequence[Interceptor], info: Any, fn: Any, invoke: Callable[[], Any], pid: int = 0
) -> Any:
    """Call ``invoke()`` (the step function, as defined) through ``chain``'s ``step``."""
    if not chain:
        return invoke()
    call = StepCall(info.id, info.workflow_id, info.step, info.attempt, fn, pid)
    return through(chain, "step", call, lambda _call: invoke())
