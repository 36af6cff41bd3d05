"""Executors: what ``Engine(executor=...)`` takes, and how a name becomes one.

An executor is where an engine runs its steps. It is configuration, made by the user and
possibly shared by several engines; at each start the engine asks it for a *transport*
(:meth:`Executor.transport`), the per-engine object that moves tasks to the workers and
back (``_transport.py``). The engine's dispatcher core does the rest the same way for all.

Built in: :class:`ProcessExecutor` (``"process"``, the default: a supervised pool of worker
processes on this machine), :class:`InlineExecutor` (``"inline"``: threads of this process,
for tests), :class:`~actorflow.runtime.dispatch._dask.DaskExecutor` and
:class:`~actorflow.runtime.dispatch._ray.RayExecutor` (``"ray"``: a local Ray, or the one
``ray.init`` already connected to).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from actorflow.errors import ConfigError
from actorflow.runtime.dispatch._ray import RayExecutor
from actorflow.runtime.dispatch._transport import Transport, TransportHost

if TYPE_CHECKING:
    from actorflow.workers._task import Intercept

__all__ = ["Executor", "InlineExecutor", "ProcessExecutor", "executor_from"]


@runtime_checkable
class Executor(Protocol):
    """Where an engine runs its steps (``Engine(executor=...)``).

    Anything with a ``name`` and a :meth:`transport` method is one. The transport must
    subclass ``actorflow.runtime.dispatch._transport.Transport`` (its docstring says what
    each method must do); the engine keeps every durability rule whatever the transport.

    Attributes:
        name: a short name, for health reports and error messages (``"process"``).
    """

    name: str

    def transport(self, core: TransportHost) -> Transport:
        """A fresh transport for one engine start, serving the dispatcher ``core``."""
        ...


class ProcessExecutor:
    """Run steps in a supervised pool of worker processes on this machine (the default).

    The pool's size and behaviour come from the engine's settings (``workers``,
    ``start_method``, ``preload``, ``prefetch``, ``kill_grace``, ``max_tasks_per_worker``,
    ``max_memory_per_worker``, the restart breaker): see ``docs/configuration.md``. A step
    past its timeout is stopped by killing its worker (SIGTERM, then SIGKILL).
    """

    name = "process"

    def transport(self, core: TransportHost) -> Transport:
        """The pool transport for one engine start."""
        # Imported here: the pool brings the worker's modules, which ``import actorflow``
        # does not need.
        from actorflow.runtime.dispatch._pool import PoolTransport

        return PoolTransport(core)

    def __repr__(self) -> str:
        return "ProcessExecutor()"


class InlineExecutor:
    """Run steps on threads of the engine's own process (for tests).

    Steps need not be importable or picklable and test doubles work, but a step past its
    timeout cannot be stopped (its result is ignored and its thread abandoned) and there is
    no crash isolation.

    Args:
        workers: how many threads (default: the engine's ``workers``; if that is 0, 4 or
            the number of CPUs, whichever is more).

    Raises:
        ValueError: ``workers`` is not a positive int.
    """

    name = "inline"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
        ):
            raise ValueError(f"InlineExecutor workers: expected an int >= 1, got {workers!r}")
        self.workers = workers
        # Set by actorflow.testing: its mocks and mocked services.
        self._intercept: Intercept | None = None
        self._services: dict[tuple[str, str], Any] | None = None

    def transport(self, core: TransportHost) -> Transport:
        """The inline transport for one engine start."""
        from actorflow.runtime.dispatch._inline import InlineTransport

        return InlineTransport(core, self.workers, self._intercept, self._services)

    def __repr__(self) -> str:
        return "InlineExecutor()" if self.workers is None else f"InlineExecutor({self.workers})"


#: The executors a name stands for (those that need no arguments).
NAMES = {"process": ProcessExecutor, "inline": InlineExecutor, "ray": RayExecutor}


def executor_from(value: Any) -> Executor:
    """The executor ``value`` names or is (``None``: the process pool).

    Raises:
        ConfigError: neither a known name nor an executor.
    """
    if value is None:
        return ProcessExecutor()
    if isinstance(value, str):
        make = NAMES.get(value)
        if make is not None:
            executor: Executor = make()
            return executor
        if value == "dask":
            raise ConfigError(
                "executor: 'dask' needs its cluster: pass af.DaskExecutor(address) "
                "(or cluster=, client=)"
            )
        raise ConfigError(
            f"executor: expected one of {', '.join(map(repr, NAMES))} or an executor "
            f"(af.ProcessExecutor(), af.DaskExecutor(...), af.RayExecutor(...)), got {value!r}"
        )
    if isinstance(value, Executor) and callable(getattr(value, "transport", None)):
        return value
    raise ConfigError(
        "executor: expected a name ('process', 'inline', 'ray') or an executor with "
        f"name and transport() (af.ProcessExecutor(), af.DaskExecutor(...)), got {value!r}"
    )
