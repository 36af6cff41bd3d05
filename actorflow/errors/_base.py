"""The root of the tree and the errors of the engine's own set-up and storage.

A bad setting (:class:`ConfigError`), a definition that cannot run (:class:`DefinitionError`),
a store that cannot serve (:class:`StoreError`), and the few signals that are none of a run's
or a caller's: an open circuit, a pool whose restart breaker tripped, a result wait that ran
out, and the stand-ins for a worker's traceback and unpicklable exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ActorflowError(Exception):
    """Root of every error actorflow raises on purpose."""


class ConfigError(ActorflowError):
    """An engine setting (argument, environment variable) is invalid."""


class MissingExtra(ConfigError, ImportError):
    """An optional surface was used without the extra that installs what it needs.

    ``pip install actorflow`` is the core (see the README's "Install"); each optional surface
    names its extra, e.g. ``engine.asgi()`` needs ``pip install 'actorflow[serve]'``. It is a
    :class:`ConfigError` (the installation does not fit what the engine was asked to do) and
    an :class:`ImportError`, so ``except ImportError`` around an optional feature works as
    for any other library; ``name`` is the module that could not be imported.

    Attributes:
        feature: what was used, e.g. ``"engine.asgi()"``.
        extra: the extra that installs it, e.g. ``"serve"``.
        name: the module that could not be imported, e.g. ``"starlette"``.
    """

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.feature = feature
        self.extra = extra
        super().__init__(
            f"{feature} needs the {extra!r} extra (cannot import {module!r}): "
            f"pip install 'actorflow[{extra}]'"
        )
        self.name = module

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.feature, self.extra, self.name))


class DefinitionError(ActorflowError):
    """A workflow definition is invalid.

    Attributes:
        problems: every problem found, each naming the field and what was expected.
        workflow: the workflow id, when known.
    """

    def __init__(self, problems: str | Iterable[str], workflow: str | None = None) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        self.workflow = workflow
        where = f"workflow {workflow!r}" if workflow is not None else "definition"
        if len(self.problems) == 1:
            message = f"{where}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{where} has {len(self.problems)} problems:\n{lines}"
        super().__init__(message)


class GraphError(DefinitionError):
    """The workflow's graph cannot be compiled (unclosed blocks, unknown references...)."""


class MaxIterationsExceeded(ActorflowError):
    """A ``while_`` loop's predicate wanted more iterations than its ``max_iterations``.

    It fails the loop node (its error type in inspect), and the run with ``StepFailed``.
    """


class StoreError(ActorflowError):
    """The store cannot be opened, read or written."""


class StoreInUse(StoreError):
    """Another engine holds the store's lock (an engine in this process, or ``role="leader"``).

    With the default ``role="auto"`` an engine in another process does not raise this: the
    second engine follows the first (see ``docs/embedding.md``).
    """


class StoreCorrupted(StoreError):
    """The store's files or records are not what actorflow wrote."""


class StoreFull(StoreError):
    """The store cannot grow: its disk is full, or its map reached ``max_map_size``.

    Nothing is lost: the engine keeps what it has not committed yet and retries; it refuses
    new work with this error until space returns, and carries on by itself then.
    """


class WriteRejected(StoreError):
    """The store refused one write for what it carries, not for a fault of its own.

    A key over LMDB's 511 bytes or a malformed op, say. Only the write that carried it
    failed: the engine commits the writes it was grouped with, the store is intact, and new
    work goes on. Values from outside are checked before they get this far (a
    :class:`ClientError` naming the field); this is the last guard.
    """


class CircuitOpen(ActorflowError):
    """A step's :class:`~actorflow.CircuitBreaker` is open: the attempt failed without running.

    It is retried like any error (list it in ``non_retryable`` to fail at once).
    """


class PoolUnavailable(ActorflowError):
    """The worker pool's restart breaker is open after a restart storm."""


class ResultTimeout(ActorflowError, TimeoutError):
    """``RunHandle.result(timeout=...)`` returned before the run finished."""


class RemoteTraceback(ActorflowError):
    """The traceback text of an exception raised in a worker process.

    Attributes:
        tb: the text in full (also its ``str()``).
        user_traceback: the same without the engine's frames (``tb`` when there is no other):
            what a user traceback of an exception chained to this one shows in its place.
    """

    def __init__(self, tb: str, user_traceback: str = "") -> None:
        self.tb = tb
        self.user_traceback = user_traceback or tb
        super().__init__(tb)

    def __str__(self) -> str:
        return self.tb


class RemoteError(ActorflowError):
    """Stands in for a step's exception that could not be pickled back to the engine.

    Attributes:
        type_name: the qualified name of the original exception type.
    """

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # It travels to workers as an error handler's ``ctx.error``: pickled by default as
        # ``RemoteError(str(self))``, which its two-argument __init__ cannot take.
        return (type(self), (self.type_name, self.message))
