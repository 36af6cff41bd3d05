"""Interceptors, as Temporal's (issue 24.8): ``Engine(interceptors=[...])`` around workflow
starts, signals, queries, updates and step attempts, these in the worker processes that
run them; the first given is the outermost; OpenTelemetry's step scope is one of them."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests.interceptors_app import Recorder

MakeEngine = Callable[..., af.Engine]


def lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def double(ctx: Any) -> int:
    return int(ctx.payload["n"]) * 2


async def counter(ctx: af.WorkflowContext) -> int:
    total = {"n": 0}
    ctx.on_query("n", lambda: total["n"])
    ctx.on_query("secret", lambda: "hidden")

    def add(k: int) -> int:
        total["n"] += k
        return total["n"]

    ctx.on_update("add", add)
    await ctx.wait_for_signal("done")
    return total["n"]


def test_an_interceptor_sees_a_step_in_its_worker_process_and_the_engine_side_calls(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    engine = make_engine(workers=1, interceptors=[Recorder(str(log))])
    engine.define("double").step("x2", double)
    engine.workflow("counter")(counter)
    with engine:
        run = engine.trigger("double", {"n": 21})
        assert run.result(timeout=60) == 42
        assert run.inspect().search_attributes == {"tenant": "acme"}  # the call it changed
        c = engine.trigger("counter")
        assert c.update("add", 5) == 5
        assert c.query("n") == 5
        with pytest.raises(PermissionError, match="refused"):
            c.query("secret")
        assert c.signal("done", "now") is True
        assert c.result(timeout=60) == 5
    got = lines(log)
    step_in = next(line for line in got if line[1] == "step-in")
    assert step_in[2:5] == ["double", "x2", "1"]
    assert int(step_in[5]) != os.getpid()  # it ran in the worker process, not the engine
    assert ["r", "step-out", "x2", "42"] in got
    kinds = [line[1] for line in got if line[1] != "step-in" and line[1] != "step-out"]
    assert kinds == ["start", "start", "update", "query", "signal"]
    assert ["r", "start", "double", run.id] in got


def test_an_interceptor_defined_in_the_script_reaches_the_workers(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"

    class Here(af.Interceptor):  # not importable in a worker: it travels by value
        def step(self, call: af.StepCall, next: Any) -> Any:
            with open(str(log), "a") as f:
                f.write(f"{call.step} {os.getpid()}\n")
            return next(call)

    engine = make_engine(workers=1, interceptors=[Here()])
    engine.define("double").step("x2", double)
    with engine:
        assert engine.trigger("double", {"n": 4}).result(timeout=60) == 8
    [(step, pid)] = [tuple(line) for line in lines(log)]
    assert step == "x2" and int(pid) != os.getpid()


def test_the_async_api_runs_through_them_too(make_engine: MakeEngine, tmp_path: Path) -> None:
    log = tmp_path / "log"
    engine = make_engine(workers=1, interceptors=[Recorder(str(log))])
    engine.define("double").step("x2", double)
    engine.workflow("counter")(counter)

    async def main() -> tuple[int, int]:
        run = await engine.trigger_async("double", {"n": 2})
        c = await engine.trigger_async("counter")
        await c.update_async("add", 3)
        n = await c.query_async("n")
        await c.signal_async("done")
        return await run.result_async(timeout=60), n

    with engine:
        assert asyncio.run(main()) == (4, 3)
    kinds = [line[1] for line in lines(log) if not line[1].startswith("step")]
    assert kinds == ["start", "start", "update", "query", "signal"]


def test_the_first_is_outermost_and_names_resolve(make_engine: MakeEngine, tmp_path: Path) -> None:
    log = tmp_path / "log"
    engine = make_engine(
        workers=1, interceptors=[Recorder(str(log), "outer"), Recorder(str(log), "inner")]
    )
    engine.define("double").step("x2", double)
    with engine:
        assert engine.trigger("double", {"n": 1}).result(timeout=60) == 2
    steps = [line[0] + ":" + line[1] for line in lines(log) if line[1].startswith("step")]
    assert steps == ["outer:step-in", "inner:step-in", "inner:step-out", "outer:step-out"]
    with pytest.raises(af.ConfigError, match=r"interceptors\[0\]: expected an af.Interceptor"):
        make_engine(interceptors=[object()])
    with pytest.raises(af.ConfigError, match=r"interceptors\[0\]: cannot import"):
        make_engine(interceptors=["tests.nowhere:Nothing"])
    named = make_engine(interceptors="tests.interceptors_app:Recorder")
    assert named.config.interceptors == ("tests.interceptors_app:Recorder",)


def test_an_interceptor_that_cannot_reach_the_workers_fails_the_start(
    make_engine: MakeEngine,
) -> None:
    class Locked(af.Interceptor):  # defined here: travels by value, but its lock cannot
        def __init__(self) -> None:
            self.lock = threading.Lock()

    engine = make_engine(workers=1, interceptors=[Locked()])
    engine.define("double").step("x2", double)
    with pytest.raises(af.ConfigError, match="cannot be sent to worker processes"):
        engine.start()


def test_trigger_many_and_webhooks_start_through_them(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    import httpx

    from tests.serving import serve

    log = tmp_path / "log"
    engine = make_engine(workers=1, interceptors=[Recorder(str(log))])
    engine.define("double").step("x2", double).on_webhook("/double")
    with engine:
        runs = engine.trigger_many("double", [{"n": 1}, {"n": 2}])
        assert [r.result(timeout=60) for r in runs] == [2, 4]
        with serve(engine.asgi()) as url:
            reply = httpx.post(f"{url}/double", json={"n": 3})
            assert reply.status_code == 202
            hooked = engine.run(reply.json()["run_id"])
            assert hooked.result(timeout=60) == 6
        assert all(r.inspect().search_attributes == {"tenant": "acme"} for r in [*runs, hooked])
    assert [line[1] for line in lines(log)].count("start") == 3
