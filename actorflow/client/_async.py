"""``af.AsyncClient``: an engine's API on another machine, for asyncio code."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self

from actorflow._types import RunStatus
from actorflow.client import _calls as C
from actorflow.client._handle import RemoteRunHandle
from actorflow.client._transport import Transport
from actorflow.views import RunDetails, RunSummary, WorkflowVersion

__all__ = ["AsyncClient"]

#: Requests ``trigger_many`` keeps in flight at once.
_IN_FLIGHT: Final = 32


class AsyncClient:
    """The twin of :class:`~actorflow.Client` for asyncio code: the same methods, awaited.

    As with ``httpx.AsyncClient``, every method is a coroutine with the name of its sync
    twin (``await client.trigger(...)``, ``await client.result(run_id)``), and none blocks
    the event loop. Its handles are :class:`RemoteRunHandle` s, whose awaitable methods are
    :class:`~actorflow.RunHandle`'s: ``await run.result_async()``, ``await
    run.signal_async(...)``... (their sync methods work too, blocking, over a connection of
    their own). Use it from one event loop; ``async with`` closes it.

    Args:
        url: the engine's base URL (see :class:`~actorflow.Client`).
        token: the API token, or None.
        timeout: seconds to wait for each answer (None: no limit).
        headers: more headers for every request.
        options: more keyword arguments for ``httpx.AsyncClient``.

    Raises:
        MissingExtra: httpx is not installed (``pip install 'actorflow[client]'``).
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
        self._t = Transport(url, token, timeout, headers, options, own_async=True)

    @property
    def url(self) -> str:
        """The engine's base URL (without a trailing slash)."""
        return self._t.url

    def __repr__(self) -> str:
        return f"<AsyncClient {self._t.url}>"

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._t.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def trigger(
        self,
        workflow: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        priority: int = 0,
        search_attributes: Mapping[str, Any] | None = None,
        memo: Mapping[str, Any] | None = None,
    ) -> RemoteRunHandle:
        """Start a run (see :meth:`Client.trigger`)."""
        reply = await self._t.asend(
            C.trigger(workflow, payload, idempotency_key, priority, search_attributes, memo)
        )
        return RemoteRunHandle(self._t, *C.started(reply))

    async def trigger_many(
        self,
        workflow: str,
        payloads: Iterable[Any],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[RemoteRunHandle]:
        """Start a run per payload, 32 requests in flight at once; handles in payload order.

        Every payload is sent even if one fails; then the first error (in payload order) is
        raised. Give ``idempotency_keys`` to send the whole list again safely.
        """
        items = list(payloads)
        keys = C.keys_for(items, idempotency_keys)
        gate = asyncio.Semaphore(_IN_FLIGHT)

        async def one(item: Any, key: str | None) -> RemoteRunHandle:
            async with gate:
                return await self.trigger(workflow, item, idempotency_key=key)

        done = await asyncio.gather(
            *(one(item, key) for item, key in zip(items, keys, strict=True)),
            return_exceptions=True,
        )
        for handle in done:
            if isinstance(handle, BaseException):
                raise handle
        return [h for h in done if isinstance(h, RemoteRunHandle)]

    async def retry(self, run_id: str, **overrides: Any) -> RemoteRunHandle:
        """Run a past run again (see :meth:`Client.retry`)."""
        reply = await self._t.asend(C.retry(run_id, C.retry_overrides(overrides)))
        return RemoteRunHandle(self._t, *C.started(reply))

    async def run(self, run_id: str) -> RemoteRunHandle:
        """A handle for an existing run (see :meth:`Client.run`)."""
        reply = await self._t.asend(C.result(run_id, 0.0))
        return RemoteRunHandle(self._t, run_id, str(reply.data["workflow"]))

    async def result(self, run_id: str, timeout: float | None = None) -> Any:
        """Wait for a run's result (see :meth:`RemoteRunHandle.result`)."""
        return await self._handle(run_id).result_async(timeout)

    async def status(self, run_id: str) -> RunStatus:
        """The run's current status."""
        return await self._handle(run_id).status_async()

    async def cancel(self, run_id: str, reason: str = "") -> bool:
        """Cancel a run; False if it had already finished."""
        return await self._handle(run_id).cancel_async(reason)

    async def terminate(self, run_id: str, reason: str = "") -> bool:
        """Terminate a run (see :meth:`RemoteRunHandle.terminate`)."""
        return await self._handle(run_id).terminate_async(reason)

    async def signal(
        self,
        run_id: str,
        name: str,
        payload: Any = None,
        *,
        args: Sequence[Any] | None = None,
        idempotency_key: str | None = None,
    ) -> bool:
        """Signal a code workflow run (see :meth:`RemoteRunHandle.signal`)."""
        return await self._handle(run_id).signal_async(
            name, payload, args=args, idempotency_key=idempotency_key
        )

    async def query(self, run_id: str, name: str, *args: Any, timeout: float | None = 30.0) -> Any:
        """Query a code workflow run (see :meth:`RemoteRunHandle.query`)."""
        return await self._handle(run_id).query_async(name, *args, timeout=timeout)

    async def update(
        self, run_id: str, name: str, payload: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Update a code workflow run (see :meth:`RemoteRunHandle.update`)."""
        return await self._handle(run_id).update_async(name, payload, timeout=timeout)

    async def history(self, run_id: str) -> list[dict[str, Any]]:
        """What happened to a run, oldest first (see :meth:`Client.history`)."""
        return await self._handle(run_id).history_async()

    async def inspect(self, run_id: str) -> RunDetails:
        """Everything recorded about a run, as ``engine.inspect`` gives it."""
        return await self._handle(run_id).inspect_async()

    async def logs(
        self, run_id: str, step: str | None = None, *, attempt: int | None = None
    ) -> dict[str, Any]:
        """What a run's steps logged (see :meth:`Client.logs`)."""
        return C.step_logs(await self._t.asend(C.logs(run_id, step, attempt)))

    async def restart(self, run_id: str) -> None:
        """Restart a panicked code workflow run (see :meth:`Client.restart`)."""
        await self._t.asend(C.restart(run_id))

    async def runs(
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
        """Runs, newest first, following ``X-Next-Cursor`` (see :meth:`Client.runs`)."""
        C.check_limit(limit)
        out: list[RunSummary] = []
        cursor = before
        while limit is None or len(out) < limit:
            size = C.page_size(limit, len(out))
            page, cursor = C.summaries(
                await self._t.asend(
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

    async def approvals(
        self, status: str | None = "waiting", run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Approvals, oldest first (see :meth:`Client.approvals`)."""
        return C.approvals_of(await self._t.asend(C.approvals(status)), run_id)

    async def resume(self, token: str, payload: Any = None) -> None:
        """Resume a run paused at ``human_in_the_loop`` (see :meth:`Client.resume`)."""
        await self._t.asend(C.resume(token, payload))

    async def publish(
        self, event: str, payload: Any = None, *, key: str | None = None, ttl: Any = None
    ) -> int:
        """Publish an event (see :meth:`Client.publish`)."""
        return C.delivered(await self._t.asend(C.publish(event, payload, key, ttl)))

    async def versions(self, workflow: str) -> list[WorkflowVersion]:
        """The versions of a workflow (see :meth:`Client.versions`)."""
        return C.versions_of(await self._t.asend(C.versions(workflow)))

    async def health(self) -> dict[str, Any]:
        """The engine's readiness (``GET /readyz``)."""
        return dict((await self._t.asend(C.health())).data)

    async def schedules(self) -> list[dict[str, Any]]:
        """The engine's schedules (see :meth:`Client.schedules`)."""
        return list((await self._t.asend(C.schedules())).data or [])

    async def pause_schedule(self, name: str, *, note: str | None = None) -> None:
        """Pause a schedule (see :meth:`Client.pause_schedule`)."""
        await self._t.asend(C.schedule(name, "pause", note))

    async def resume_schedule(self, name: str) -> None:
        """Resume a paused schedule (see :meth:`Client.resume_schedule`)."""
        await self._t.asend(C.schedule(name, "resume"))

    async def trigger_schedule(self, name: str) -> RemoteRunHandle:
        """Start one run of a schedule now (see :meth:`Client.trigger_schedule`)."""
        reply = await self._t.asend(C.schedule(name, "trigger"))
        return RemoteRunHandle(self._t, *C.started(reply))

    def _handle(self, run_id: str) -> RemoteRunHandle:
        return RemoteRunHandle(self._t, run_id, "")
