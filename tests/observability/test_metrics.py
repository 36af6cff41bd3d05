"""Prometheus metrics after a known run: every figure checked, and the same text at /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import actorflow as af
from tests import steps

MakeEngine = Callable[..., af.Engine]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):  # also proves the text is valid
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_metrics_after_a_known_run(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = make_engine()
    engine.define("ok").step("one", steps.add_one).for_each(
        "items", lambda ctx: [1, 2, 3], steps.slow_item
    )
    breaker = af.CircuitBreaker(failure_threshold=1, reset_timeout="1h", name="flaky-api")
    engine.define("bad").step("boom", steps.fail_always, breaker=breaker)
    with pytest.raises(af.EngineNotRunning):
        engine.metrics()
    with engine:
        for i in range(3):
            engine.trigger("ok", {"n": i, "log": str(tmp_path / "log")}).result(timeout=60)
        with pytest.raises(af.StepFailed):
            engine.trigger("bad", {}).result(timeout=60)
        found = samples(engine.metrics())

        transport = httpx.ASGITransport(app=engine.asgi())

        async def get() -> httpx.Response:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.get("/metrics")

        response = asyncio.run(get())
    assert value(found, "actorflow_runs_started_total", workflow="ok") == 3
    assert value(found, "actorflow_runs_started_total", workflow="bad") == 1
    assert value(found, "actorflow_runs_finished_total", workflow="ok", status="completed") == 3
    assert value(found, "actorflow_runs_finished_total", workflow="bad", status="failed") == 1
    assert (
        "actorflow_runs_finished_total",
        (("status", "failed"), ("workflow", "ok")),
    ) not in found
    # 3 runs x (1 step + 3 items) succeeded; the failing step ran once.
    assert value(found, "actorflow_step_attempts_total", workflow="ok", outcome="succeeded") == 12
    assert value(found, "actorflow_step_attempts_total", workflow="bad", outcome="error") == 1
    # One latency series per node (not per item): 9 item attempts of >= 50 ms each.
    items = {"workflow": "ok", "step": "items/slow_item"}
    assert value(found, "actorflow_step_duration_seconds_count", **items) == 9
    assert value(found, "actorflow_step_duration_seconds_sum", **items) >= 9 * 0.05
    assert value(found, "actorflow_step_duration_seconds_bucket", le="0.025", **items) == 0
    assert value(found, "actorflow_step_duration_seconds_bucket", le="+Inf", **items) == 9
    one = {"workflow": "ok", "step": "one"}
    assert value(found, "actorflow_step_duration_seconds_count", **one) == 3
    # Commits: every one timed; their batch sizes add up to the writes acknowledged.
    commits = value(found, "actorflow_commits_total")
    assert commits > 0
    assert value(found, "actorflow_commit_duration_seconds_count") == commits
    assert value(found, "actorflow_commit_batch_size_count") == commits
    assert value(found, "actorflow_commit_batch_size_sum") >= commits
    assert value(found, "actorflow_queue_depth") == 0
    assert value(found, "actorflow_steps_running") == 0
    assert value(found, "actorflow_workers") == 2
    assert value(found, "actorflow_worker_restarts_total") == 0
    assert value(found, "actorflow_step_timeouts_total") == 0
    assert value(found, "actorflow_circuit_breaker_state", breaker="flaky-api") == 2  # open
    assert value(found, "actorflow_circuit_breaker_opened_total", breaker="flaky-api") == 1
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    served = samples(response.text)
    assert value(served, "actorflow_runs_started_total", workflow="ok") == 3


def test_worker_restarts_and_timeouts_are_counted(make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1)
    engine.define("stuck").step("hang", steps.sleep_forever, timeout="300ms")
    with engine:
        with pytest.raises(af.StepTimeout):
            engine.trigger("stuck", {}).result(timeout=60)
        found = samples(engine.metrics())
    assert value(found, "actorflow_step_timeouts_total") == 1
    assert value(found, "actorflow_step_attempts_total", workflow="stuck", outcome="timeout") == 1
    assert value(found, "actorflow_runs_finished_total", workflow="stuck", status="failed") == 1
