"""``af.AsyncClient`` against a real server: the same methods, awaited, none blocking the
loop; and the handles' awaitable twins (``result_async``...) from either client."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

import actorflow as af
from tests.client.conftest import Server

T = TypeVar("T")


def _run(server: Server, body: Callable[[af.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with af.AsyncClient(server.url, token=server.token) as client:
            return await body(client)

    return asyncio.run(main())


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + 60
    while not await check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


def test_trigger_result_status_inspect_runs(server: Server) -> None:
    async def body(client: af.AsyncClient) -> None:
        key = uuid.uuid4().hex
        run = await client.trigger("double", {"n": 4}, idempotency_key=key)
        assert (await client.trigger("double", {"n": 4}, idempotency_key=key)).id == run.id
        assert await run.result_async(timeout=60) == 8
        assert await client.result(run.id, timeout=60) == 8
        assert await client.status(run.id) is af.RunStatus.COMPLETED
        assert await run.status_async() is af.RunStatus.COMPLETED
        assert (await client.run(run.id)).workflow_id == "double"
        details = await client.inspect(run.id)
        assert details.status is af.RunStatus.COMPLETED and details.result == "8"
        assert await run.inspect_async() == details
        assert await run.progress_async() == []
        since = time.time()
        runs = await client.trigger_many("listed", [None] * 5)
        await asyncio.gather(*(r.result_async(timeout=60) for r in runs))
        listed = await client.runs("listed", since=since, limit=None)
        # The async client sends the five requests at once, so the server may create them in
        # any order: the listing holds exactly these runs, newest (highest id) first.
        assert [r.id for r in listed] == sorted((r.id for r in runs), reverse=True)
        assert len(await client.runs("listed", since=since, limit=2)) == 2
        assert (await client.health())["ready"] is True

    _run(server, body)


def test_many_long_polls_wait_together_on_one_loop(server: Server) -> None:
    """Twenty runs held at a gate: their result_async all wait at once, and a heartbeat on
    the same loop keeps beating meanwhile (nothing blocks the loop)."""

    async def body(client: af.AsyncClient) -> None:
        keys = [uuid.uuid4().hex for _ in range(20)]
        runs = await client.trigger_many("gate", [{"id": k} for k in keys])
        beats = 0

        async def heartbeat() -> None:
            nonlocal beats
            while True:
                await asyncio.sleep(0.01)
                beats += 1

        beating = asyncio.create_task(heartbeat())
        waiting = asyncio.gather(*(r.result_async(timeout=120) for r in runs))
        seen = beats
        await _until(lambda: _true(beats > seen + 5))  # the loop runs while they wait
        for k in keys:
            assert await client.publish("go", k, key=k) == 1
        assert await waiting == [{"got": k} for k in keys]
        beating.cancel()

    _run(server, body)


async def _true(value: bool) -> bool:
    return value


def test_cancel_signal_query_update_resume_retry(server: Server) -> None:
    async def body(client: af.AsyncClient) -> None:
        held = await client.trigger("gate", {"id": uuid.uuid4().hex})
        with pytest.raises(af.ResultTimeout):
            await held.result_async(timeout=0.2)
        assert await client.cancel(held.id, "async") is True
        assert await held.cancel_async() is False
        with pytest.raises(af.RunCancelled, match="async"):
            await client.result(held.id, timeout=60)

        tally = await client.trigger("tally", {"n": 1})
        assert await tally.query_async("n") == 1
        assert await client.query(tally.id, "times", 5) == 5
        assert await client.update(tally.id, "add", 2) == 3
        assert await tally.update_async("add", 1) == 4
        key = uuid.uuid4().hex
        assert await client.signal(tally.id, "bump", 1, idempotency_key=key) is True
        assert await tally.signal_async("bump", 1, idempotency_key=key) is False
        assert await tally.signal_async("close", "end") is True
        assert await tally.result_async(timeout=60) == {"n": 5, "closing": "end"}

        waiting = await client.trigger("approve", {})
        await _until(lambda: _any(client.approvals(run_id=waiting.id)))
        [approval] = await client.approvals(run_id=waiting.id)
        await client.resume(approval["token"], "yes")
        assert await waiting.result_async(timeout=60) == "yes"

        failed = await client.trigger("boom", {})
        with pytest.raises(af.StepFailed, match="card declined"):
            await failed.result_async(timeout=60)
        again = await client.retry(failed.id)
        assert again.id != failed.id
        with pytest.raises(af.ClientError, match="panicked"):
            await client.restart(tally.id)

    _run(server, body)


async def _any(items: Awaitable[list[Any]]) -> bool:
    return bool(await items)


def test_handles_of_either_client_have_both_kinds_of_method(server: Server) -> None:
    with server.client() as sync:
        run = sync.trigger("double", {"n": 5})
        assert asyncio.run(run.result_async(timeout=60)) == 10  # a sync client's, awaited
        assert asyncio.run(run.status_async()) is af.RunStatus.COMPLETED

    async def body(client: af.AsyncClient) -> af.RemoteRunHandle:
        return await client.trigger("double", {"n": 6})

    handle = _run(server, body)
    assert handle.result(timeout=60) == 12  # an async client's, waited for in sync code
    assert handle.status() is af.RunStatus.COMPLETED
