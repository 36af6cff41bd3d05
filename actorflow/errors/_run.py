"""Why a run did not produce a result: what ``RunHandle.result()`` raises.

Each of these is rebuilt from the run's stored error record (``views/_read.error_from_record``)
as well as raised live, so every constructor takes the record's fields and every class pickles
with its attributes (``__reduce__``): a follower or ``af.Client`` gets the same error the
leader raised.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._base import ActorflowError


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
        user_traceback: the same without the engine's frames (the user's frames, chained
            exceptions and the exception's line); ``traceback`` when there is no other.
    """

    def __init__(
        self,
        step: str,
        attempt: int,
        error_type: str = "",
        error_message: str = "",
        traceback: str = "",
        run_id: str | None = None,
        user_traceback: str = "",
    ) -> None:
        self.step = step
        self.attempt = attempt
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback
        self.user_traceback = user_traceback or traceback
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
        obj.__dict__.setdefault("user_traceback", state.get("traceback", ""))  # (older pickles)
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


class WaitTimeout(RunError, TimeoutError):
    """A wait (an event, an approval, a signal, ``wait_condition``) timed out.

    It is a :class:`TimeoutError` too (``asyncio.TimeoutError``), so code written for
    Temporal's ``workflow.wait_condition(..., timeout=)`` catches it as it is.
    """


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
