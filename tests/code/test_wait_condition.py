"""``ctx.wait_condition(fn, timeout=)`` (issue 24.6): wait until a predicate over the
workflow's state holds, re-checked after every activation, deterministic on replay, its
timeout a durable timer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests import code_steps as cs
from tests.conftest import executions, wait_until

MakeEngine = Callable[..., af.Engine]


def collector(log: str) -> Callable[..., Any]:
    async def flow(ctx: af.WorkflowContext, need: int) -> Any:
        items: list[Any] = []
        ctx.on_signal("add", items.append)
        ctx.on_query("items", lambda: list(items))
        await ctx.step("before", cs.logged, log, "before", 1)
        try:
            await ctx.wait_condition(lambda: len(items) >= need, timeout="1h")
        except TimeoutError:  # asyncio.TimeoutError, as Temporal code catches it
            return {"timed_out": list(items)}
        total = await ctx.step("sum", cs.logged, log, "sum", sum(items))
        return {"items": items, "sum": total}

    return flow


def steps_of(engine: af.Engine, run_id: str) -> dict[str, af.StepDetails]:
    return {s.path: s for s in engine.inspect(run_id).steps}


def test_signals_make_the_condition_true(make_engine: MakeEngine, tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    engine = make_engine(clock=af.ManualClock())
    engine.workflow("collect")(collector(log))
    with engine:
        run = engine.trigger("collect", 3)
        wait_until(lambda: "wait_condition" in steps_of(engine, run.id))
        run.signal("add", 1)
        run.signal("add", 2)
        assert run.status() == af.RunStatus.RUNNING and run.query("items") == [1, 2]
        run.signal("add", 3)
        assert run.result(timeout=30) == {"items": [1, 2, 3], "sum": 6}
        # The condition held first: its timer was dropped.
        assert steps_of(engine, run.id)["wait_condition"].status == af.StepStatus.CANCELLED


def test_the_timeout_raises_a_timeout_error(make_engine: MakeEngine, tmp_path: Path) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock)
    engine.workflow("collect")(collector(str(tmp_path / "log")))
    with engine:
        run = engine.trigger("collect", 3)
        wait_until(lambda: "wait_condition" in steps_of(engine, run.id))
        run.signal("add", 1)
        clock.advance(3600)
        assert run.result(timeout=30) == {"timed_out": [1]}
        assert steps_of(engine, run.id)["wait_condition"].status == af.StepStatus.SUCCEEDED


def test_a_condition_already_true_does_not_wait(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("now")
    async def now(ctx: af.WorkflowContext) -> str:
        await ctx.wait_condition(lambda: True, timeout="1h")
        return "at once"

    with engine:
        run = engine.trigger("now")
        assert run.result(timeout=30) == "at once"
        assert steps_of(engine, run.id) == {}  # no timer was even started


def test_a_condition_across_a_restart(
    make_engine: MakeEngine, tmp_path: Path, data_dir: Path
) -> None:
    log = str(tmp_path / "log")
    first = make_engine(clock=af.ManualClock())
    first.workflow("collect")(collector(log))
    with first:
        run = first.trigger("collect", 3)
        wait_until(lambda: "wait_condition" in steps_of(first, run.id))
        run.signal("add", 1)
        run.signal("add", 2)
    # A new engine replays the history: the two signals, the condition not yet true.
    second = make_engine(clock=af.ManualClock())
    second.workflow("collect")(collector(log))
    with second:
        handle = second.run(run.id)
        assert handle.query("items") == [1, 2]
        handle.signal("add", 3)
        assert handle.result(timeout=30) == {"items": [1, 2, 3], "sum": 6}
    assert executions(Path(log)) == {"before": 1, "sum": 1}


def test_the_timeout_timer_is_durable_across_a_restart(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = str(tmp_path / "log")
    first = make_engine(clock=af.ManualClock())
    first.workflow("collect")(collector(log))
    with first:
        run = first.trigger("collect", 3)
        wait_until(lambda: "wait_condition" in steps_of(first, run.id))
        run.signal("add", 7)
    clock = af.ManualClock()
    second = make_engine(clock=clock)
    second.workflow("collect")(collector(log))
    with second:
        clock.advance(3600)
        assert second.run(run.id).result(timeout=30) == {"timed_out": [7]}


def test_a_predicate_that_raises_panics_the_run(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("bad")
    async def bad(ctx: af.WorkflowContext) -> None:
        state: dict[str, int] = {}
        ctx.on_signal("poke", lambda: state.setdefault("n", 0))
        await ctx.wait_condition(lambda: state["n"] > 0)  # KeyError until poked

    with engine:
        run = engine.trigger("bad")
        wait_until(lambda: run.status() == af.RunStatus.PANICKED)
        error = run.inspect().error
        assert error is not None and error.type == "builtins.KeyError"


def test_wait_timeout_is_a_timeout_error() -> None:
    assert issubclass(af.WaitTimeout, TimeoutError)  # = asyncio.TimeoutError
    with pytest.raises(TimeoutError):
        raise af.WaitTimeout("no")
