"""``Client.logs`` and ``AsyncClient.logs`` against a real server: what the steps of a run
logged, per attempt, as ``engine.logs`` reads it (``GET /api/runs/{id}/logs``)."""

from __future__ import annotations

import asyncio

import pytest

import actorflow as af
from tests.client.conftest import Server

SAID = [
    ("flaky", 1, "INFO", "try 1 begins"),
    ("flaky", 1, "WARNING", "try 1 fails"),
    ("flaky", 2, "INFO", "try 2 begins"),
    ("flaky", 2, "INFO", "try 2 ends"),
]


def _said(found: dict[str, object]) -> list[tuple[object, ...]]:
    records = found["records"]
    assert isinstance(records, list)
    return [(r["step"], r["attempt"], r["level"], r["message"]) for r in records]


def test_the_client_reads_a_runs_logs_per_step_and_attempt(client: af.Client) -> None:
    run = client.trigger("chatty")
    assert run.result(timeout=60) == "ok"
    found = client.logs(run.id)
    assert client.run(run.id).logs() == found  # the handle's, too
    assert _said(found) == SAID and found["dropped"] == []
    assert all(isinstance(r["time"], float) for r in found["records"])
    assert _said(client.logs(run.id, "flaky", attempt=2)) == SAID[2:]
    assert _said(client.logs(run.id, attempt=1)) == SAID[:2]
    assert client.logs(run.id, "other") == {"records": [], "dropped": []}
    with pytest.raises(af.RunNotFound):
        client.logs("0" * 24)
    with pytest.raises(af.ClientError, match="attempt"):
        client.logs(run.id, attempt=0)


def test_the_async_client_reads_them_too(server: Server) -> None:
    async def main() -> None:
        async with af.AsyncClient(server.url, token=server.token) as client:
            run = await client.trigger("chatty")
            assert await run.result_async(timeout=60) == "ok"
            assert _said(await client.logs(run.id)) == SAID
            assert _said(await client.logs(run.id, "flaky", attempt=1)) == SAID[:2]
            with pytest.raises(af.RunNotFound):
                await client.logs("0" * 24)

    asyncio.run(main())
