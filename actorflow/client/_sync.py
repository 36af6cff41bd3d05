"""``af.Client``: an engine's API on another machine, for sync code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from actorflow._types import RunStatus
from actorflow.client import _calls as C
from actorflow.client._handle import RemoteRunHandle
from actorflow.client._transport import Transport
from actorflow.views import RunDetails, RunSummary, WorkflowVersion

__all__ = ["Client"]


class Client:
    """The client half of an engine's API, over its REST API, for sync code.

    It talks to ``actorflow serve`` or a service that mounts ``engine.asgi()``. Its methods
    are the engine's, with the same arguments, results and errors: ``trigger`` returns a
    :class:`RemoteRunHandle` whose ``result()``, ``status()``, ``cancel()``, ``signal()``,
    ``query()``, ``update()`` and ``inspect()`` are :class:`~actorflow.RunHandle`'s.
    Payloads and results travel as JSON. Each method is one request (``result`` long-polls,
    ``runs`` follows pages); connections are pooled and kept alive (httpx). Safe to share
    between threads. :class:`~actorflow.AsyncClient` is its twin for asyncio code.

    Errors map back onto the exception tree: :class:`~actorflow.RunNotFound`,
    :class:`~actorflow.WorkflowNotFound`, the approval errors, a run's
    :class:`~actorflow.StepFailed` / :class:`~actorflow.RunCancelled` /
    :class:`~actorflow.RunTimeout`, :class:`~actorflow.ClientError` for a refused argument,
    :class:`~actorflow.EngineNotRunning` (503), :class:`~actorflow.AccessDenied` (401, 403),
    and :class:`~actorflow.EngineUnreachable` when nothing answers. Each carries the server's
    detail; one raised for an answer has it as ``exc.http`` too (an ``HttpAnswer``).

    Needs the ``client`` extra (httpx): ``pip install 'actorflow[client]'``.

    Args:
        url: the engine's base URL, e.g. ``http://10.0.0.5:8080``, or with the prefix it is
            mounted under, ``https://svc.example.com/flows``.
        token: the API token (``engine.asgi(token=...)``, ``actorflow serve --token``, or
            ``ACTORFLOW_API_TOKEN`` on the server), sent as ``Authorization: Bearer``;
            None sends none.
        timeout: seconds to wait for each answer (None: no limit). ``result()`` waits
            longer by design: this bounds each of its polls beyond what it asked the server
            to hold.
        headers: more headers for every request (a proxy's, say).
        options: more keyword arguments for ``httpx.Client`` (``verify=``, ``cert=``,
            ``proxy=``, ``transport=``...).

    Raises:
        MissingExtra: httpx is not installed.
        ClientError: ``url`` is not an http(s) URL, or ``timeout`` or ``token`` is unusable.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float | None = 30.0,
        headers: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self._t = Transport(url, token, timeout, headers, options, own_async=False)

    @property
    def url(self) -> str:
        """The engine's base URL (without a trailing slash)."""
        return self._t.url

    def __repr__(self) -> str:
        return f"<Client {self._t.url}>"  # never the token

    def close(self) -> None:
        """Close the client's connections (it opens new ones if used again)."""
        self._t.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- starting runs ----------------------------------------------------------------------

    def trigger(
        self,
        workflow: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        priority: int = 0,
        search_attributes: Mapping[str, Any] | None = None,
        memo: Mapping[str, Any] | None = None,
    ) -> RemoteRunHandle:
        """Start a run of ``workflow``; returns once the run is durably recorded.

        Args:
            workflow: the workflow id.
            payload: a graph workflow's ``ctx.payload``; a code workflow's function is called
                as ``f(ctx, payload)``. JSON.
            idempotency_key: runs triggered with the same key (per workflow) are one run: a
                second call returns the first run's handle. Sent as ``Idempotency-Key``;
                a request that failed on the way can be sent again with it.
            priority: its place among queued runs on a queue that orders by priority
                (see ``Engine.trigger``); sent as ``?priority=``.
            search_attributes: indexed attributes (see ``Engine.trigger``), sent as
                ``?search_attributes=`` JSON.
            memo: JSON kept with the run, sent as ``?memo=``.

        Raises:
            WorkflowNotFound: no such workflow.
            InvalidPayload: the payload is not JSON.
            ClientError: the priority is refused (400).
            EngineNotRunning: the engine is not started (503).
        """
        reply = self._t.send(
            C.trigger(workflow, payload, idempotency_key, priority, search_attributes, memo)
        )
        return RemoteRunHandle(self._t, *C.started(reply))

    def trigger_many(
        self,
        workflow: str,
        payloads: Iterable[Any],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[RemoteRunHandle]:
        """Start a run of ``workflow`` per payload, in order, over one kept-alive connection.

        Unlike ``engine.trigger_many`` it is one request per run, not all-or-nothing: on an
        error, the runs before it have started. Give ``idempotency_keys`` to send the whole
        list again safely.

        Raises:
            ClientError: ``idempotency_keys`` does not match ``payloads``.
        """
        items = list(payloads)
        keys = C.keys_for(items, idempotency_keys)
        return [
            self.trigger(workflow, item, idempotency_key=key)
            for item, key in zip(items, keys, strict=True)
        ]

    def retry(self, run_id: str, **overrides: Any) -> RemoteRunHandle:
        """Run a past run again, as a new run (see ``Engine.retry``).

        Args:
            run_id: the past run.
            **overrides: ``payload=`` (the new run's payload) and ``mock_steps=`` (step
                name -> output, answered without running); with either, any finished run
                can be run again. JSON.

        Raises:
            RunNotFound: no such run.
            ClientError: the run has not failed or been cancelled (without overrides), or
                an override is refused (400).
        """
        reply = self._t.send(C.retry(run_id, C.retry_overrides(overrides)))
        return RemoteRunHandle(self._t, *C.started(reply))

    # -- runs -------------------------------------------------------------------------------

    def run(self, run_id: str) -> RemoteRunHandle:
        """A handle for an existing run.

        Raises:
            RunNotFound: no such run.
        """
        reply = self._t.send(C.result(run_id, 0.0))
        return RemoteRunHandle(self._t, run_id, str(reply.data["workflow"]))

    def result(self, run_id: str, timeout: float | None = None) -> Any:
        """``run(run_id).result(timeout)`` in one call: see :meth:`RemoteRunHandle.result`."""
        return self._handle(run_id).result(timeout)

    def status(self, run_id: str) -> RunStatus:
        """The run's current status (see :meth:`RemoteRunHandle.status`)."""
        return self._handle(run_id).status()

    def cancel(self, run_id: str, reason: str = "") -> bool:
        """Cancel a run; False if it had already finished (see :meth:`RemoteRunHandle.cancel`)."""
        return self._handle(run_id).cancel(reason)

    def terminate(self, run_id: str, reason: str = "") -> bool:
        """Terminate a run (see :meth:`RemoteRunHandle.terminate`)."""
        return self._handle(run_id).terminate(reason)

    def signal(
        self,
        run_id: str,
        name: str,
        payload: Any = None,
        *,
        args: Sequence[Any] | None = None,
        idempotency_key: str | None = None,
    ) -> bool:
        """Signal a code workflow run (see :meth:`RemoteRunHandle.signal`)."""
        return self._handle(run_id).signal(
            name, payload, args=args, idempotency_key=idempotency_key
        )

    def query(self, run_id: str, name: str, *args: Any, timeout: float | None = 30.0) -> Any:
        """Query a code workflow run (see :meth:`RemoteRunHandle.query`)."""
        return self._handle(run_id).query(name, *args, timeout=timeout)

    def update(
        self, run_id: str, name: str, payload: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Update a code workflow run (see :meth:`RemoteRunHandle.update`)."""
        return self._handle(run_id).update(name, payload, timeout=timeout)

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """What happened to a run, oldest first, as ``engine.history`` lists it.

        Raises:
            RunNotFound: no such run.
        """
        return self._handle(run_id).history()

    def inspect(self, run_id: str) -> RunDetails:
        """Everything recorded about a run, as ``engine.inspect`` gives it.

        Raises:
            RunNotFound: no such run.
        """
        return self._handle(run_id).inspect()

    def logs(
        self, run_id: str, step: str | None = None, *, attempt: int | None = None
    ) -> dict[str, Any]:
        """What a run's steps logged, as ``engine.logs`` gives it.

        Returns:
            ``{"records": [{"time", "level", "step", "attempt", "message"}, ...],
            "dropped": [{"step", "attempt", "count"}, ...]}``.

        Raises:
            RunNotFound: no such run.
            ClientError: ``step`` or ``attempt`` is refused.
        """
        return C.step_logs(self._t.send(C.logs(run_id, step, attempt)))

    def restart(self, run_id: str) -> None:
        """Restart a panicked code workflow run from its history.

        Raises:
            RunNotFound: no such run.
            ClientError: the run is not a panicked code workflow run.
        """
        self._t.send(C.restart(run_id))

    def runs(
        self,
        workflow: str | None = None,
        status: str | RunStatus | None = None,
        limit: int | None = 50,
        *,
        before: str | None = None,
        since: float | None = None,
        until: float | None = None,
        where: Mapping[str, Any] | None = None,
        id_prefix: str | None = None,
        idempotency_key: str | None = None,
    ) -> list[RunSummary]:
        """Runs, newest first, as ``engine.runs`` lists them.

        Pages of up to 1,000 runs are fetched one after the other, each starting where the
        ``X-Next-Cursor`` header of the one before says, until ``limit`` runs (None: all).

        Args:
            workflow: only this workflow's runs.
            status: only runs in this status.
            limit: at most this many (None: all).
            before: a cursor: runs older than this run id (the previous page's last).
            since: only runs triggered at or after this time (seconds since the epoch).
            until: only runs triggered before this time.
            where: search attribute conditions, as ``engine.runs`` takes them (sent as
                ``?where=`` JSON).
            id_prefix: only runs whose id starts with this.
            idempotency_key: only the runs triggered with this idempotency key.
        """
        C.check_limit(limit)
        out: list[RunSummary] = []
        cursor = before
        while limit is None or len(out) < limit:
            size = C.page_size(limit, len(out))
            page, cursor = C.summaries(
                self._t.send(
                    C.runs_page(
                        workflow,
                        status,
                        size,
                        cursor,
                        since,
                        until,
                        where,
                        id_prefix,
                        idempotency_key,
                    )
                )
            )
            out.extend(page)
            if cursor is None or len(page) < size:
                break
        return out

    # -- approvals, events, health ----------------------------------------------------------

    def approvals(
        self, status: str | None = "waiting", run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Approvals (waiting ones by default), oldest first, each a dict with its ``token``.

        Args:
            status: ``"waiting"``, ``"resumed"``, ``"expired"``, ``"cancelled"``, or None
                for all.
            run_id: only this run's.
        """
        return C.approvals_of(self._t.send(C.approvals(status)), run_id)

    def resume(self, token: str, payload: Any = None) -> None:
        """Resume a run paused at ``human_in_the_loop``; ``payload`` is the node's output.

        Raises:
            ApprovalNotFound: no approval has this token.
            ApprovalAlreadyResolved: it was resumed already (a token works once).
            ApprovalExpired: its timeout passed.
        """
        self._t.send(C.resume(token, payload))

    def publish(
        self, event: str, payload: Any = None, *, key: str | None = None, ttl: Any = None
    ) -> int:
        """Publish an event; returns how many waiting steps it was delivered to.

        Args:
            event: the event's name.
            payload: its data (the waiting step's output).
            key: routes the event to waits with this key.
            ttl: how long an untaken keyed event is kept (seconds or ``"10m"``).
        """
        return C.delivered(self._t.send(C.publish(event, payload, key, ttl)))

    def versions(self, workflow: str) -> list[WorkflowVersion]:
        """The versions of a workflow and their runs in flight, as ``engine.versions``.

        Raises:
            WorkflowNotFound: no version is defined and no unfinished run has one.
        """
        return C.versions_of(self._t.send(C.versions(workflow)))

    def health(self) -> dict[str, Any]:
        """The engine's readiness (``GET /readyz``), as ``engine.health()`` gives it."""
        return dict(self._t.send(C.health()).data)

    # -- schedules --------------------------------------------------------------------------

    def schedules(self) -> list[dict[str, Any]]:
        """The engine's schedules, as ``engine.schedules()`` lists them (each with a ``name``)."""
        return list(self._t.send(C.schedules()).data or [])

    def pause_schedule(self, name: str, *, note: str | None = None) -> None:
        """Pause a schedule until :meth:`resume_schedule` (see ``Engine.pause_schedule``).

        Args:
            name: the schedule's name (``"report#0"``), URL-encoded on the way.
            note: why, shown by :meth:`schedules` while it is paused.

        Raises:
            ScheduleNotFound: no schedule has this name.
            ClientError: ``name`` or ``note`` is refused.
            AccessDenied: the API is read-only (403).
        """
        self._t.send(C.schedule(name, "pause", note))

    def resume_schedule(self, name: str) -> None:
        """Resume a paused schedule; the slots it missed are skipped, not fired.

        Raises:
            ScheduleNotFound: no schedule has this name.
            AccessDenied: the API is read-only (403).
        """
        self._t.send(C.schedule(name, "resume"))

    def trigger_schedule(self, name: str) -> RemoteRunHandle:
        """Start one run of a schedule now, as a slot would (see ``Engine.trigger_schedule``).

        Raises:
            ScheduleNotFound: no schedule has this name.
            AccessDenied: the API is read-only (403).
        """
        return RemoteRunHandle(self._t, *C.started(self._t.send(C.schedule(name, "trigger"))))

    def _handle(self, run_id: str) -> RemoteRunHandle:
        return RemoteRunHandle(self._t, run_id, "")
