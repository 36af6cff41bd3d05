"""The remote run handle: :class:`~actorflow.RunHandle`'s methods, over an engine's REST API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actorflow._types import RunStatus
from actorflow.client import _calls as C
from actorflow.client._transport import Transport
from actorflow.views import RunDetails

__all__ = ["RemoteRunHandle"]


class RemoteRunHandle:
    """A run of an engine on another machine: what :class:`~actorflow.Client` returns.

    It has :class:`~actorflow.RunHandle`'s methods, with the same arguments, results and
    errors, so that code written against an engine's handles reads the same against a
    client's: ``result()`` / ``result_async()``, ``status()``, ``cancel()``, ``signal()``,
    ``query()``, ``update()``, ``inspect()``, ``progress()``, each with an awaitable twin
    (``*_async``). The sync methods block the calling thread; the awaitable ones never block
    the event loop. Handles of either client have both.

    Differences that HTTP brings: payloads and results are JSON; a failed step's own
    exception (the ``__cause__`` of :class:`~actorflow.StepFailed`) is a
    :class:`~actorflow.RemoteError` with its type and message (and the worker's traceback
    as its ``__cause__``), since it cannot be unpickled here.

    Attributes:
        id: the run id.
        workflow_id: the run's workflow.
    """

    __slots__ = ("_t", "id", "workflow_id")

    def __init__(self, transport: Transport, run_id: str, workflow_id: str) -> None:
        self._t = transport
        self.id = run_id
        self.workflow_id = workflow_id

    def __repr__(self) -> str:
        return f"<RemoteRunHandle {self.workflow_id}/{self.id} at {self._t.url}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteRunHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- the outcome ------------------------------------------------------------------------

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to finish and return its result.

        Long-polls ``GET /api/runs/{id}/result?wait=...`` (30 s a request) until the run
        finishes or ``timeout`` passes.

        Args:
            timeout: seconds to wait at most; None waits as long as it takes.

        Raises:
            StepFailed: a step failed for good (:class:`~actorflow.StepTimeout`,
                :class:`~actorflow.WorkerCrashed`... are subclasses); the step, the attempt,
                its error's type, message and traceback are attributes, as locally.
            RunCancelled: the run was cancelled (``reason``).
            RunTimeout: the run exceeded its workflow's timeout.
            WorkflowFailed: a code workflow's function raised.
            ResultTimeout: ``timeout`` passed first (the run goes on).
            RunNotFound: no such run.
            EngineUnreachable: nothing answers at the client's URL.
        """
        deadline = C.deadline_of(timeout)
        while True:
            reply = self._t.send(C.result(self.id, C.next_wait(deadline)))
            finished, value = C.outcome(reply, self.id)
            if finished:
                return value
            C.late(self.id, timeout, deadline)

    async def result_async(self, timeout: float | None = None) -> Any:
        """Awaitable twin of :meth:`result`; does not block the event loop."""
        deadline = C.deadline_of(timeout)
        while True:
            reply = await self._t.asend(C.result(self.id, C.next_wait(deadline)))
            finished, value = C.outcome(reply, self.id)
            if finished:
                return value
            C.late(self.id, timeout, deadline)

    def status(self) -> RunStatus:
        """The run's current status (for a run that continued as new, its chain's last).

        Raises:
            RunNotFound: the run does not exist.
        """
        return C.status_of(self._t.send(C.result(self.id, 0.0)))

    async def status_async(self) -> RunStatus:
        """Awaitable twin of :meth:`status`."""
        return C.status_of(await self._t.asend(C.result(self.id, 0.0)))

    # -- commands ---------------------------------------------------------------------------

    def cancel(self, reason: str = "") -> bool:
        """Cancel the run: running steps are killed, pending ones never start.

        Args:
            reason: recorded with the run (none given: ``cancelled over the API``).

        Returns:
            True if the run was active and is now cancelled (durably); False if it had
            already finished.
        """
        return bool(self._t.send(C.cancel(self.id, reason)).data["cancelled"])

    async def cancel_async(self, reason: str = "") -> bool:
        """Awaitable twin of :meth:`cancel`."""
        return bool((await self._t.asend(C.cancel(self.id, reason))).data["cancelled"])

    def terminate(self, reason: str = "") -> bool:
        """End the run cancelled at once, as ``RunHandle.terminate``.

        Its steps are killed, and neither its code nor its ``on_cancel`` hook is told.

        Returns:
            True if the run was active and is now cancelled; False if it had finished.
        """
        return bool(self._t.send(C.cancel(self.id, reason, terminate=True)).data["cancelled"])

    async def terminate_async(self, reason: str = "") -> bool:
        """Awaitable twin of :meth:`terminate`."""
        reply = await self._t.asend(C.cancel(self.id, reason, terminate=True))
        return bool(reply.data["cancelled"])

    def signal(
        self,
        name: str,
        payload: Any = None,
        *,
        args: Sequence[Any] | None = None,
        idempotency_key: str | None = None,
    ) -> bool:
        """Send signal ``name`` to a code workflow run; returns once it is durable.

        Args:
            name: the signal's name.
            payload: its data (JSON): the handler's one argument.
            args: instead of ``payload``, the list of the handler's arguments.
            idempotency_key: a signal with a key this run has seen before is dropped, so a
                client may retry safely (sent as the ``Idempotency-Key`` header).

        Returns:
            True if delivered; False if dropped as a duplicate of an earlier key.

        Raises:
            ClientError: the run is finished, or is not a code workflow's.
        """
        return C.signaled(self._t.send(C.signal(self.id, name, payload, idempotency_key, args)))

    async def signal_async(
        self,
        name: str,
        payload: Any = None,
        *,
        args: Sequence[Any] | None = None,
        idempotency_key: str | None = None,
    ) -> bool:
        """Awaitable twin of :meth:`signal`."""
        call = C.signal(self.id, name, payload, idempotency_key, args)
        return C.signaled(await self._t.asend(call))

    def query(self, name: str, *args: Any, timeout: float | None = 30.0) -> Any:
        """Ask a code workflow run's ``ctx.on_query(name, fn)`` handler: ``fn(*args)``.

        Raises:
            ClientError: no such handler, or the run is finished or not a code workflow's.
            RemoteError: the handler raised (its type and message).
            ResultTimeout: no answer within ``timeout``.
        """
        return C.answer(self._t.send(C.query(self.id, name, args, timeout)))

    async def query_async(self, name: str, *args: Any, timeout: float | None = 30.0) -> Any:
        """Awaitable twin of :meth:`query`."""
        return C.answer(await self._t.asend(C.query(self.id, name, args, timeout)))

    def update(self, name: str, payload: Any = None, *, timeout: float | None = None) -> Any:
        """Call a code workflow run's ``ctx.on_update(name, fn)`` handler; return its result.

        Raises:
            ClientError: no such handler, or the run is finished or not a code workflow's.
            RemoteError: the handler raised (its type and message).
            ResultTimeout: ``timeout`` passed first (the update goes on).
        """
        return C.answer(self._t.send(C.update(self.id, name, payload, timeout)))

    async def update_async(
        self, name: str, payload: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Awaitable twin of :meth:`update`."""
        return C.answer(await self._t.asend(C.update(self.id, name, payload, timeout)))

    # -- what is recorded -------------------------------------------------------------------

    def inspect(self) -> RunDetails:
        """Everything recorded about the run, as ``engine.inspect(run.id)`` gives it."""
        return C.details(self._t.send(C.inspect(self.id)))

    async def inspect_async(self) -> RunDetails:
        """Awaitable twin of :meth:`inspect`."""
        return C.details(await self._t.asend(C.inspect(self.id)))

    def logs(self, step: str | None = None, *, attempt: int | None = None) -> dict[str, Any]:
        """What the run's steps logged, as ``engine.logs(run.id, ...)`` gives it."""
        return dict(self._t.send(C.logs(self.id, step, attempt)).data)

    async def logs_async(
        self, step: str | None = None, *, attempt: int | None = None
    ) -> dict[str, Any]:
        """Awaitable twin of :meth:`logs`."""
        return dict((await self._t.asend(C.logs(self.id, step, attempt))).data)

    def history(self) -> list[dict[str, Any]]:
        """What happened to the run, oldest first, as ``engine.history(run.id)`` lists it."""
        return list(self._t.send(C.history(self.id)).data)

    async def history_async(self) -> list[dict[str, Any]]:
        """Awaitable twin of :meth:`history`."""
        return list((await self._t.asend(C.history(self.id))).data)

    def progress(self) -> list[dict[str, Any]]:
        """Item counts of the run's fan-outs (for_each, batch, ``ctx.map``), as recorded."""
        return list(self._t.send(C.progress(self.id)).data)

    async def progress_async(self) -> list[dict[str, Any]]:
        """Awaitable twin of :meth:`progress`."""
        return list((await self._t.asend(C.progress(self.id))).data)
