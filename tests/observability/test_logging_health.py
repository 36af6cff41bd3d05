"""The actorflow logger (silent by default, JSON on request) and readiness checks."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import httpx
import pytest

import actorflow as af
from tests import steps

MakeEngine = Callable[..., af.Engine]


@pytest.fixture
def restore_logger() -> Iterator[None]:
    logger = logging.getLogger("actorflow")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_the_library_logger_is_silent_until_configured() -> None:
    handlers = logging.getLogger("actorflow").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_json_logs_are_one_parseable_object_per_line_with_run_fields(
    make_engine: MakeEngine, restore_logger: None
) -> None:
    out = io.StringIO()
    af.observability.log_to(out, json=True, level="INFO")
    engine = make_engine()
    engine.define("logged").step("say", steps.logs).step("boom", steps.fail_always)
    with engine:
        run = engine.trigger("logged", {})
        with pytest.raises(af.StepFailed):
            run.result(timeout=30)
    lines = out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses on its own
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    said = [r for r in records if r["message"] == "hello from say"]
    assert said and said[0]["run_id"] == run.id and said[0]["step"] == "say"
    assert said[0]["workflow_id"] == "logged" and said[0]["attempt"] == 1
    assert said[0]["level"] == "WARNING" and said[0]["logger"] == "actorflow.step"
    assert any(r["logger"] == "actorflow.engine" for r in records)  # engine records too


def test_text_logs_carry_the_run_fields(make_engine: MakeEngine, restore_logger: None) -> None:
    out = io.StringIO()
    af.observability.log_to(out, level=logging.WARNING)
    engine = make_engine()
    engine.define("logged").step("say", steps.logs)
    with engine:
        run = engine.trigger("logged", {})
        run.result(timeout=30)
    line = next(x for x in out.getvalue().splitlines() if "hello from say" in x)
    assert f"run_id={run.id}" in line and "step=say" in line


def test_readiness_reports_each_check(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.define("noop").step("one", steps.add_one)
    assert engine.health() == {
        "alive": False,
        "ready": False,
        "role": "stopped",
        "checks": {"engine": {"ok": False, "detail": "stopped"}},
    }
    with engine:
        health = engine.health()
        assert health["ready"], health
        assert health["checks"]["workers"] == {"ok": True, "alive": 2, "executor": "process"}
        assert health["checks"]["store"]["ok"] and health["checks"]["scheduler"]["ok"]
        transport = httpx.ASGITransport(app=engine.asgi())

        async def get(path: str) -> httpx.Response:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.get(path)

        import asyncio

        r = asyncio.run(get("/readyz"))
        assert r.status_code == 200 and r.json()["ready"] is True
        engine._failure = OSError("disk full")  # as the writer reports a failed commit
        r = asyncio.run(get("/readyz"))
        assert r.status_code == 503
        assert r.json()["checks"]["store"] == {
            "ok": False,
            "detail": "halted: a commit failed (disk full); restart the engine",
        }
        assert r.json()["alive"] is False
        r = asyncio.run(get("/healthz"))
        assert r.status_code == 503 and r.json()["status"] == "halted"
        engine._failure = None
