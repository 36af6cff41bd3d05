"""``ctx.steps`` is a read-only Mapping, in graph steps, loop bodies, engine-side code and
code workflows' steps (issue 24.3: ``"x" in ctx.steps`` used to iterate indices forever)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

import actorflow as af
from tests import code_steps as cs
from tests import steps

MakeEngine = Callable[..., af.Engine]


def test_graph_step_sees_a_mapping(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.define("m").step("first", steps.first).step("view", steps.steps_mapping)
    with engine:
        out = engine.trigger("m", {"value": 4}).result(timeout=30)
    assert out["in"] == [True, False, False]
    assert out["get"] == [{"value": 40}, "dflt"]
    assert out["keys"] == out["iter"] == ["first"]
    assert out["len"] == 1
    assert out["items"] == [("first", {"value": 40})]
    assert out["is_mapping"] is True
    # The KeyError names the missing step and the steps that do have outputs.
    assert "'never_ran'" in out["missing"] and "steps with outputs: 'first'" in out["missing"]


def test_loop_body_sees_its_item_first_and_not_other_items(make_engine: MakeEngine) -> None:
    def body(item: Any, flow: af.Flow) -> None:
        flow.step("double", lambda ctx: ctx.item * 2).step("look", steps.item_steps)

    engine = make_engine()
    (
        engine.define("fe")
        .step("seed", lambda ctx: 1)
        .for_each("each", lambda ctx: list(range(30)), body, concurrency=4)
        .step("after", lambda ctx: sorted(ctx.steps))
    )
    with engine:
        run = engine.trigger("fe", {"value": 1})
        run.result(timeout=60)
        d = run.inspect()
    looks = [orjson.loads(d.step(f"each[{i}]/look").output) for i in range(30)]
    for i, look in enumerate(looks):
        # Its own item's steps, then the run's that had ended: never another item's.
        assert look[0] == ["double", "seed"]
        assert look[1] == i * 2 and look[2] is True
    after = orjson.loads(d.step("after").output)
    # At the top the 30 items (each[0]/... each[29]/...) are not names; the loop is.
    assert after == ["each", "seed"]


def test_engine_side_code_sees_a_mapping(make_engine: MakeEngine) -> None:
    seen: list[Any] = []

    def pred(ctx: Any) -> bool:
        seen.append(("first" in ctx.steps, "nope" in ctx.steps, sorted(ctx.steps), len(ctx.steps)))
        return True

    engine = make_engine()
    (
        engine.define("br")
        .step("first", steps.first)
        .if_("yes", pred)
        .step("then", lambda ctx: "t")
        .endif()
    )
    with engine:
        engine.trigger("br", {"value": 1}).result(timeout=30)
    assert seen == [(True, False, ["first"], 1)]


def test_code_workflow_step_sees_a_mapping(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("cw")
    async def cw(ctx: af.WorkflowContext) -> Any:
        await ctx.step("one", cs.add, 0, 1)
        await ctx.map("sq", cs.square, [1, 2, 3])
        await ctx.sleep("nap", "10ms")
        return await ctx.step("look", steps.steps_mapping_code)

    with engine:
        out = engine.trigger("cw").result(timeout=30)
    # The map's items (sq[0]...) are not names; the sleep has no output.
    assert out == {"keys": ["one", "sq"], "in": [True, False], "one": 1}
