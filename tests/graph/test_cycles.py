"""Which subflows make a static cycle: certain ones only (conditional recursion may end)."""

from __future__ import annotations

import pytest

import actorflow as af
from actorflow.graph import check_subflow_cycles
from actorflow.graph._cycles import certain_subflows
from tests import steps


def _certain(flow: af.Workflow) -> list[str]:
    return [s.name for s in certain_subflows(flow.build().block)]


def test_top_level_and_parallel_arms_are_certain() -> None:
    flow = (
        af.Workflow("w")
        .step("a", steps.noop)
        .subflow("top", "w")
        .parallel("p", {"x": af.Flow().subflow("in-parallel", "w"), "y": steps.noop})
    )
    assert _certain(flow) == ["top", "in-parallel"]


def test_branches_loops_fan_outs_races_and_after_a_cancel_are_not() -> None:
    flow = (
        af.Workflow("w")
        .if_("maybe", lambda ctx: ctx.payload)
        .subflow("in-if", "w")
        .endif()
        .while_("loop", lambda ctx: False, af.Flow().subflow("in-while", "w"), max_iterations=3)
        .for_each("each", lambda ctx: [], af.Flow().subflow("in-for-each", "w"))
        .race("r", {"x": af.Flow().subflow("in-race", "w"), "y": steps.noop})
        .cancel("stop here")
        .subflow("after-cancel", "w")
    )
    assert _certain(flow) == []


def test_every_separate_cycle_is_reported_once_and_the_rest_pass() -> None:
    specs = {
        "a": af.Workflow("a").subflow("to-b", "b").build(),
        "b": af.Workflow("b").subflow("to-a", "a").subflow("to-c", "c").build(),
        "c": af.Workflow("c").step("leaf", steps.noop).build(),
        "d": af.Workflow("d").subflow("self", "d").build(),
        "e": af.Workflow("e").subflow("to-code", "code-workflow").build(),  # not a graph: ends
    }
    with pytest.raises(af.GraphError) as info:
        check_subflow_cycles(specs)
    assert [p.split(" (")[0] for p in info.value.problems] == [
        "subflow cycle: a -> b -> a",
        "subflow cycle: d -> d",
    ]
    check_subflow_cycles({k: v for k, v in specs.items() if k in ("c", "e")})


def test_the_shortest_cycle_is_named_from_the_workflow_asked_first() -> None:
    specs = {
        "x": af.Workflow("x").subflow("to-y", "y").build(),
        "y": af.Workflow("y").subflow("to-z", "z").subflow("to-x", "x").build(),
        "z": af.Workflow("z").subflow("to-x", "x").build(),
    }
    with pytest.raises(af.GraphError) as info:
        check_subflow_cycles(specs, first="y")
    assert info.value.workflow == "y"
    assert str(info.value).startswith(
        "workflow 'y': subflow cycle: y -> x -> y (subflow 'to-x' of 'y', subflow 'to-y' of 'x')"
    )
