"""The one exception tree of actorflow.

Every error actorflow raises on purpose derives from :class:`ActorflowError`; errors from
third-party libraries (lmdb, pickle, pykka) are translated at the boundary::

    ActorflowError
    ├── ConfigError                  bad EngineConfig field or ACTORFLOW_* variable
    │   └── MissingExtra             a surface whose extra is not installed (also ImportError)
    ├── DefinitionError              a workflow definition is invalid (lists every problem)
    │   └── GraphError               the compiled graph is invalid
    ├── RunError                     a run did not produce a result
    │   ├── StepFailed               a step failed after its retries (step, attempt, traceback)
    │   │   ├── StepTimeout          ... because it ran past its timeout and was killed
    │   │   │   └── HeartbeatTimeout ... or went silent past its heartbeat_timeout
    │   │   ├── WorkerCrashed        ... because its worker process died (exit code / signal)
    │   │   └── RunDepthExceeded     ... because its child run would pass max_run_depth
    │   ├── RunCancelled             the run was cancelled (reason)
    │   ├── RunTimeout               the whole run ran past the workflow's timeout
    │   ├── WaitTimeout              a wait (event, signal, approval) ran past its timeout
    │   ├── WorkflowFailed           a code workflow's function raised (its error is the cause)
    │   └── NondeterminismError      a code workflow's replay diverged from its history
    ├── StoreError                   the store cannot be used (I/O, locked, newer format)
    │   ├── StoreInUse               another engine holds the store (this process, or role="leader")
    │   ├── StoreCorrupted           the store's files or records are not what was written
    │   ├── StoreFull                disk full or max_map_size reached: new work refused
    │   └── WriteRejected            one write refused for its content: only it failed
    ├── ClientError                  a client call was given something it cannot use
    │   ├── RunNotFound
    │   ├── WorkflowNotFound
    │   ├── InvalidPayload
    │   ├── EngineNotRunning
    │   │   ├── LeaderLost           the leader died with a call in flight that is not repeated
    │   │   └── EngineUnreachable    af.Client: nothing answers at the URL (also ConnectionError)
    │   ├── AccessDenied             af.Client: the API refused the token (401) or the action (403)
    │   └── ApprovalError            engine.resume(token): unknown, already used or expired
    │       ├── ApprovalNotFound
    │       ├── ApprovalAlreadyResolved
    │       └── ApprovalExpired
    ├── CircuitOpen                  a step's af.CircuitBreaker is open: the call failed fast
    ├── PoolUnavailable              the worker pool's restart breaker is open
    ├── ResultTimeout                RunHandle.result() waited past its timeout (also TimeoutError)
    ├── RemoteTraceback              traceback text from a worker, chained as a ``__cause__``
    └── RemoteError                  stands in for a step exception that could not be unpickled

Exceptions raised inside step functions are not wrapped in the worker: they come back to the
engine as the ``__cause__`` of :class:`StepFailed`, with the worker's traceback attached as
their own ``__cause__`` (a :class:`RemoteTraceback`), as ``concurrent.futures`` does.

No class here derives from ``BaseException`` alone: under pykka a ``BaseException`` escaping an
actor stops every actor, so none is used for control flow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "AccessDenied",
    "ActorflowError",
    "ApprovalAlreadyResolved",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalNotFound",
    "CircuitOpen",
    "ClientError",
    "ConfigError",
    "DefinitionError",
    "EngineNotRunning",
    "EngineUnreachable",
    "GraphError",
    "HeartbeatTimeout",
    "InvalidPayload",
    "LeaderLost",
    "MaxIterationsExceeded",
    "MissingExtra",
    "NondeterminismError",
    "PoolUnavailable",
    "RemoteError",
    "RemoteTraceback",
    "ResultTimeout",
    "RunCancelled",
    "RunDepthExceeded",
    "RunError",
    "RunNotFound",
    "RunTimeout",
    "StepFailed",
    "StepTimeout",
    "StoreCorrupted",
    "StoreError",
    "StoreFull",
    "StoreInUse",
    "WaitTimeout",
    "WorkerCrashed",
    "WorkflowFailed",
    "WorkflowNotFound",
    "WriteRejected",
]


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


class RunError(ActorflowError):
    """A run ended without a result.

    Attributes:
        run_id: the run, when known.
    """

    run_id: str | None = None


class StepFailed(RunError):
    """A step failed for good (its retries, if any, are used up).

    The step's own exception is this error's ``__cause__``; that exception's ``__cause__`` is
    a :class:`RemoteTraceback` holding the traceback text from the worker process.

    Attributes:
        step: the step's name.
        attempt: the attempt that failed last (1-based).
        error_type: qualified name of the step's exception type, e.g. ``builtins.ValueError``.
        error_message: ``str()`` of the step's exception.
        traceback: the traceback text from the worker, if any.
    """

    def __init__(
        self,
        step: str,
        attempt: int,
        error_type: str = "",
        error_message: str = "",
        traceback: str = "",
        run_id: str | None = None,
    ) -> None:
        self.step = step
        self.attempt = attempt
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback
        self.run_id = run_id
        super().__init__(self._describe())

    def _describe(self) -> str:
        return (
            f"step {self.step!r} failed on attempt {self.attempt}: "
            f"{self.error_type}: {self.error_message}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (
            type(self)._rebuild,
            (type(self), dict(self.__dict__)),
        )

    @staticmethod
    def _rebuild(cls: type[StepFailed], state: dict[str, object]) -> StepFailed:
        obj = cls.__new__(cls)
        obj.__dict__.update(state)
        Exception.__init__(obj, obj._describe())
        return obj


class StepTimeout(StepFailed):
    """A step ran past its timeout and was stopped (on the process pool: its worker killed).

    Attributes:
        timeout: the timeout in seconds.
    """

    def __init__(
        self,
        step: str,
        attempt: int,
        timeout: float,
        run_id: str | None = None,
        message: str | None = None,
    ) -> None:
        self.timeout = timeout
        super().__init__(
            step,
            attempt,
            "actorflow.errors.StepTimeout",
            # The recorded message says how its executor stopped it ("Ray worker killed").
            message or f"timed out after {timeout:g}s (worker killed)",
            run_id=run_id,
        )


class WorkerCrashed(StepFailed):
    """The worker process running a step died (exit, signal, out of memory).

    Attributes:
        exitcode: the process exit code; negative for a signal, as in ``multiprocessing``.
        signal_name: the signal's name (``SIGKILL``...) when the process was killed by one.

    Args:
        reason: what the engine knows of the death, when it killed the worker itself (a
            memory blow-up); the message otherwise says how the process ended.
    """

    def __init__(
        self,
        step: str,
        attempt: int,
        exitcode: int | None,
        signal_name: str | None = None,
        run_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.exitcode = exitcode
        self.signal_name = signal_name
        how = f"killed by {signal_name}" if signal_name else f"exit code {exitcode}"
        super().__init__(
            step,
            attempt,
            "actorflow.errors.WorkerCrashed",
            reason or f"worker process died ({how})",
            run_id=run_id,
        )


class RunDepthExceeded(StepFailed):
    """A subflow or ``ctx.child`` was refused: its run would be deeper than ``max_run_depth``.

    A top-level run has depth 0 and a child run its parent's depth + 1. The child is not
    started; the step that would have started it fails with this error, never retried (the
    same run would be refused again). A code workflow may catch it at its ``await
    ctx.child(...)``; otherwise each parent's child step fails with it in turn, up to the
    top-level run, whose ``result()`` raises it.

    Attributes:
        limit: the ``max_run_depth`` in force (None when rebuilt from a record without it).
        depth: the depth the refused child would have had.
        chain: workflow ids from the top-level run down to the refused child.
    """

    def __init__(
        self,
        step: str,
        limit: int | None,
        depth: int | None,
        chain: Sequence[str] = (),
        run_id: str | None = None,
        attempt: int = 1,
        message: str = "",
    ) -> None:
        self.limit = limit
        self.depth = depth
        self.chain = tuple(chain)
        super().__init__(
            step,
            attempt,
            "actorflow.errors.RunDepthExceeded",
            message or _depth_message(limit, depth, self.chain),
            run_id=run_id,
        )


def _depth_message(limit: int | None, depth: int | None, chain: tuple[str, ...]) -> str:
    runs: list[str] = []  # the chain, with repeats folded: a recursion shows as "w (x64)"
    i = 0
    while i < len(chain):
        j = i
        while j < len(chain) and chain[j] == chain[i]:
            j += 1
        runs.append(chain[i] if j - i == 1 else f"{chain[i]} (x{j - i})")
        i = j
    shown = f" (runs: {' -> '.join(runs)})" if runs else ""
    return (
        f"child run not started: it would be at depth {depth}, past max_run_depth={limit}"
        f"{shown}; recursion needs a condition that ends it, or continue_as_new"
    )


class RunCancelled(RunError):
    """The run was cancelled.

    Attributes:
        reason: the reason given to ``cancel``.
    """

    def __init__(self, reason: str = "", run_id: str | None = None) -> None:
        self.reason = reason
        self.run_id = run_id
        super().__init__(f"run {run_id or ''} cancelled" + (f": {reason}" if reason else ""))


class RunTimeout(RunError):
    """The run ran past its workflow's ``timeout``; in-flight steps were killed.

    Attributes:
        timeout: the workflow timeout in seconds.
    """

    def __init__(self, timeout: float, run_id: str | None = None) -> None:
        self.timeout = timeout
        self.run_id = run_id
        super().__init__(f"run {run_id or ''} exceeded the workflow timeout of {timeout:g}s")


class WaitTimeout(RunError):
    """A wait (``wait_for_event``, ``human_in_the_loop``, ``wait_for_signal``) timed out."""


class HeartbeatTimeout(StepTimeout):
    """A step sent no heartbeat within its ``heartbeat_timeout`` and was stopped.

    Attributes:
        heartbeat_timeout: the allowed silence in seconds.
    """

    def __init__(
        self,
        step: str,
        attempt: int,
        heartbeat_timeout: float,
        run_id: str | None = None,
        message: str | None = None,
    ) -> None:
        super().__init__(step, attempt, heartbeat_timeout, run_id)
        self.heartbeat_timeout = heartbeat_timeout
        self.error_type = "actorflow.errors.HeartbeatTimeout"
        self.error_message = message or f"no heartbeat for {heartbeat_timeout:g}s (worker killed)"
        Exception.__init__(self, self._describe())


class WorkflowFailed(RunError):
    """A code workflow failed on purpose, or because its function raised a failure type.

    Raise it in a code workflow to fail the run with a message (Temporal's application
    error). ``RunHandle.result()`` raises it when a code workflow's function raised; the
    function's exception is then the ``__cause__``.

    Attributes:
        error_type: qualified name of the exception the function raised.
    """

    def __init__(self, message: str = "", error_type: str = "", run_id: str | None = None) -> None:
        self.error_type = error_type or "actorflow.errors.WorkflowFailed"
        self.run_id = run_id
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.error_type, self.run_id))


class NondeterminismError(RunError):
    """Replaying a code workflow against its history took a different path.

    The workflow function issued a command the history does not have at that position (a
    different kind or name, a different order, an extra command), or did not issue one it
    has. The run is marked panicked and restarted by its panic policy; fix the code (or
    guard the change with ``ctx.patched``) and ``engine.restart(run_id)``.

    Attributes:
        position: the command's position in the run's history (0-based).
        expected: the recorded command (``"step 'fetch'"``), or None if the history has none.
        actual: the command the code issued, or None if it issued none.
    """

    def __init__(
        self,
        position: int,
        expected: str | None,
        actual: str | None,
        run_id: str | None = None,
    ) -> None:
        self.position = position
        self.expected = expected
        self.actual = actual
        self.run_id = run_id
        super().__init__(
            f"nondeterminism at history position {position}: the history has "
            f"{expected or 'no command there'}, the code issued {actual or 'nothing'}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.position, self.expected, self.actual, self.run_id))


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


class ClientError(ActorflowError):
    """A client call got an argument it cannot use."""


class RunNotFound(ClientError, KeyError):
    """No run has this id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id {run_id!r}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WorkflowNotFound(ClientError, KeyError):
    """No workflow has this id."""

    def __init__(self, workflow: str, known: Sequence[str] = ()) -> None:
        self.workflow = workflow
        hint = f"; defined: {', '.join(sorted(known))}" if known else "; none are defined"
        super().__init__(f"no workflow {workflow!r}{hint}")

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidPayload(ClientError, ValueError):
    """A payload or argument cannot be stored (not JSON-compatible and not picklable)."""


class EngineNotRunning(ClientError):
    """The call needs a started engine (``with engine:`` or ``engine.start()``)."""


class LeaderLost(EngineNotRunning):
    """The leader went away while a call that cannot safely be sent twice was in flight.

    A follower repeats what is safe to repeat (triggers, waits for results, cancels,
    queries, signals, reads) against the next leader; a ``resume``, ``update``, ``publish``
    or ``retry`` may or may not have taken effect: check before repeating it.
    """


class EngineUnreachable(EngineNotRunning, ConnectionError):
    """:class:`~actorflow.Client`: nothing answers at the engine's URL.

    The connection was refused or cut, the host name does not resolve, or no answer came
    within the client's ``timeout``. It is an :class:`EngineNotRunning` (from the client's side
    no engine runs there) and a ``ConnectionError``.

    Attributes:
        url: the engine's URL, as the client was given it.
        reason: what the network said (``[Errno 111] Connection refused``...).
        timeout: the seconds waited, when no answer came in time; else None.
    """

    def __init__(self, url: str, reason: str, timeout: float | None = None) -> None:
        self.url = url
        self.reason = reason
        self.timeout = timeout
        if timeout is not None:
            message = f"the engine at {url} did not answer within {timeout:g}s ({reason})"
        else:
            message = f"no engine answers at {url} ({reason})"
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.url, self.reason, self.timeout))


class AccessDenied(ClientError):
    """:class:`~actorflow.Client`: the engine's API refused the request.

    A 401: the API needs a token (``af.Client(url, token=...)``) and none, or another one,
    was sent. A 403: the token was fine but the action is not allowed (the API is read-only,
    or the request looked cross-site). The message is the server's, and says which.

    Attributes:
        status: the HTTP status, 401 or 403.
    """

    def __init__(self, message: str, status: int = 401) -> None:
        self.status = status
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.status))


class ApprovalError(ClientError):
    """``engine.resume(token, ...)`` cannot resume anything with this token."""


class ApprovalNotFound(ApprovalError, KeyError):
    """No approval has this token."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such approval"


class ApprovalAlreadyResolved(ApprovalError):
    """The approval was already resumed (or its run ended); a token works once."""


class ApprovalExpired(ApprovalError):
    """The approval's timeout passed before it was resumed."""


class CircuitOpen(ActorflowError):
    """A step's :class:`~actorflow.CircuitBreaker` is open: the attempt failed without running.

    It is retried like any error (list it in ``non_retryable`` to fail at once).
    """


class PoolUnavailable(ActorflowError):
    """The worker pool's restart breaker is open after a restart storm."""


class ResultTimeout(ActorflowError, TimeoutError):
    """``RunHandle.result(timeout=...)`` returned before the run finished."""


class RemoteTraceback(ActorflowError):
    """The traceback text of an exception raised in a worker process."""

    def __init__(self, tb: str) -> None:
        self.tb = tb
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
        super().__init__(f"{type_name}: {message}")
