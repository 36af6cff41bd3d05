"""A step cache, as cronflow's (issue 24.7): ``.step(..., cache=af.Cache(key=fn, ttl=))``
returns a recorded output for the same key within the TTL, across runs and restarts,
without running, recorded as such; past the TTL the step runs again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import actorflow as af
from tests import steps
from tests.conftest import executions

MakeEngine = Callable[..., af.Engine]


def define(engine: af.Engine) -> None:
    engine.define("forecast").step(
        "weather",
        steps.weather,
        cache=af.Cache(key=lambda ctx: ctx.payload["city"].lower(), ttl="1h"),
    ).step("report", lambda ctx: f"{ctx.last['city']}: {ctx.last['temp']}")


def test_a_hit_within_the_ttl_and_an_expiry(make_engine: MakeEngine, tmp_path: Path) -> None:
    log = tmp_path / "log"
    clock = af.ManualClock()
    engine = make_engine(clock=clock)
    define(engine)
    with engine:
        first = engine.trigger("forecast", {"city": "Paris", "log": str(log)})
        assert first.result(timeout=30) == "Paris: 15"
        again = engine.trigger("forecast", {"city": "PARIS", "log": str(log)})  # same key
        assert again.result(timeout=30) == "Paris: 15"  # the cached output, as recorded
        hit = again.inspect().step("weather")
        assert hit.status == af.StepStatus.SUCCEEDED
        assert [a.kind for a in hit.attempts] == ["cached"]
        other = engine.trigger("forecast", {"city": "Rome", "log": str(log)})
        assert other.result(timeout=30) == "Rome: 12"
        assert executions(log) == {"weather": 2}
        clock.advance(3601)  # past the TTL: it runs again, and caches anew
        late = engine.trigger("forecast", {"city": "paris", "log": str(log)})
        assert late.result(timeout=30) == "paris: 15"
        assert [a.kind for a in late.inspect().step("weather").attempts] == [None]
        assert executions(log) == {"weather": 3}


def test_the_cache_survives_a_restart(make_engine: MakeEngine, tmp_path: Path) -> None:
    log = tmp_path / "log"
    first = make_engine(clock=af.ManualClock())
    define(first)
    with first:
        first.trigger("forecast", {"city": "Oslo", "log": str(log)}).result(timeout=30)
    second = make_engine(clock=af.ManualClock())
    define(second)
    with second:
        run = second.trigger("forecast", {"city": "oslo", "log": str(log)})
        assert run.result(timeout=30) == "Oslo: 12"
    assert executions(log) == {"weather": 1}


def test_a_key_that_is_not_json_fails_the_step(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.define("bad").step(
        "weather", steps.weather, cache=af.Cache(key=lambda ctx: object(), ttl="1h")
    )
    with engine:
        run = engine.trigger("bad", {"city": "x"})
        with pytest.raises(af.StepFailed, match="cache key must be a JSON value"):
            run.result(timeout=30)


def test_cache_options_are_checked() -> None:
    with pytest.raises(af.DefinitionError, match="ttl"):
        af.Cache(key=lambda ctx: 1, ttl="soon")
    with pytest.raises(af.DefinitionError, match="key: expected a function"):
        af.Cache(key="city", ttl="1h")  # type: ignore[arg-type]
    engine = af.Engine(store="memory")
    wf = engine.define("w").step("s", steps.noop, cache={"ttl": 1})
    with pytest.raises(af.DefinitionError, match=r"cache: expected af\.Cache"):
        wf.build()


async def code_forecast(ctx: af.WorkflowContext, city: str, log: str) -> str:
    weather = await ctx.step(
        "weather",
        steps.city_weather,
        city,
        log,
        cache=af.Cache(key=lambda city, log: city.lower(), ttl="1h"),
    )
    return f"{weather['city']}: {weather['temp']}"


async def bad_key(ctx: af.WorkflowContext) -> str:
    try:
        await ctx.step(
            "s",
            steps.city_weather,
            "x",
            "/dev/null",
            cache=af.Cache(key=lambda *a: object(), ttl=60),
        )
    except af.StepFailed as exc:
        return str(exc)
    return "ran"


def test_code_workflow_steps_cache_across_runs_and_restarts(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    data_dir = tmp_path / "data"
    clock = af.ManualClock()
    engine = make_engine(clock=clock, data_dir=data_dir)
    engine.workflow("forecast")(code_forecast)
    with engine:
        assert engine.trigger("forecast", "Lima", str(log)).result(timeout=30) == "Lima: 12"
        again = engine.trigger("forecast", "LIMA", str(log))
        assert again.result(timeout=30) == "Lima: 12"  # the output Lima's run recorded
        assert [a.kind for a in again.inspect().step("weather").attempts] == ["cached"]
        assert executions(log) == {"city_weather": 1}
    engine = make_engine(clock=clock, data_dir=data_dir)
    engine.workflow("forecast")(code_forecast)
    engine.workflow("bad")(bad_key)
    with engine:
        assert engine.trigger("forecast", "lima", str(log)).result(timeout=30) == "Lima: 12"
        assert executions(log) == {"city_weather": 1}
        clock.advance(3601)
        assert engine.trigger("forecast", "lima", str(log)).result(timeout=30) == "lima: 12"
        assert executions(log) == {"city_weather": 2}
        out = engine.trigger("bad").result(timeout=30)
        assert "a cache key must be a JSON value" in out
