"""Fan-outs report progress: counts from the store, and a progress bar while waiting."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import actorflow as af
from tests import code_steps as cs
from tests import steps


def test_result_with_progress_draws_each_fan_out(
    make_engine: Callable[..., af.Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine()
    engine.define("fan").for_each("lines", lambda ctx: list(range(300)), steps.tiny_double)

    @engine.workflow("mapper")
    async def mapper(ctx: af.WorkflowContext) -> int:
        return sum(await ctx.map("squares", cs.square, range(120)))

    with engine:
        fan = engine.trigger("fan")
        assert fan.result(timeout=60, progress=True) == [2 * i for i in range(300)]
        code = engine.trigger("mapper")
        assert code.result(timeout=60, progress=True) == sum(i * i for i in range(120))
        counts = fan.progress()
        mapped = code.progress()
    err = capsys.readouterr().err
    assert "fan lines (for_each)" in err and "300/300" in err
    assert "mapper squares (map)" in err and "120/120" in err
    assert counts == [
        {"path": "lines", "kind": "for_each", "total": 300, "succeeded": 300, "failed": 0,
         "cancelled": 0, "pending": 0},
    ]  # fmt: skip
    assert mapped[0]["path"] == "squares" and mapped[0]["succeeded"] == 120


def test_progress_of_a_run_without_fan_out_is_empty(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine()
    engine.define("one").step("s", lambda ctx: 1)
    with engine:
        run = engine.trigger("one")
        assert run.result(timeout=30, progress=True) == 1
        assert run.progress() == []
        with pytest.raises(af.RunNotFound):
            engine.run("nope").progress()
