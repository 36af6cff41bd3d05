"""Recursion through subflows and code children: static cycles refused, depth bounded."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests import steps
from tests.conftest import wait_until
from tests.fixtures import legacy_workflows

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store-v2.tar.gz"


def _depths(engine: af.Engine) -> list[int]:
    return sorted(engine.inspect(r.id).depth for r in engine.runs(limit=None))


def _countdown(engine: af.Engine) -> None:
    """A graph workflow that recurses while ``n > 0`` (conditional recursion: allowed)."""
    (
        engine.define("countdown")
        .if_("more", lambda ctx: ctx.payload["n"] > 0)
        .subflow("again", "countdown", input=lambda ctx: {"n": ctx.payload["n"] - 1})
        .else_()
        .step("done", steps.echo_payload)
        .endif()
    )


async def forever(ctx: af.WorkflowContext, n: int) -> Any:
    """A code workflow that starts itself without end."""
    return await ctx.child("again", "forever", n + 1)


async def down(ctx: af.WorkflowContext, n: int) -> int:
    """A code workflow that recurses ``n`` times and returns the depth it reached."""
    if n == 0:
        return 0
    return 1 + await ctx.child("next", "down", n - 1)


# -- static cycles --------------------------------------------------------------------------


def test_the_issues_self_subflow_is_refused_at_start(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine()
    engine.define("w").subflow("again", "w")
    with pytest.raises(af.GraphError) as info:
        engine.start()
    assert not engine.running
    assert "subflow cycle: w -> w (subflow 'again' of 'w')" in str(info.value)


def test_an_indirect_cycle_is_refused_naming_each_step(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = make_engine()
    engine.define("a").step("first", steps.noop).subflow("to-b", "b")
    engine.define("b").parallel("both", {"x": steps.noop, "y": af.Flow().subflow("to-a", "a")})
    engine.define("fine").subflow("to-a", "a")  # reaches the cycle, is not on it
    with pytest.raises(af.GraphError) as info:
        engine.start()
    message = str(info.value)
    assert "subflow cycle: a -> b -> a (subflow 'to-b' of 'a', subflow 'to-a' of 'b')" in message
    assert "'fine'" not in message
    assert message.count("subflow cycle") == 1


def test_a_cycle_among_workflows_defined_after_start_is_refused_at_trigger(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = make_engine()
    engine.define("other").step("a", steps.echo_payload)
    with engine:
        engine.define("late-a").subflow("to-b", "late-b")
        engine.define("late-b").subflow("to-a", "late-a")
        with pytest.raises(af.GraphError, match=r"subflow cycle: late-a -> late-b -> late-a"):
            engine.trigger("late-a", {})
        with pytest.raises(af.GraphError, match=r"subflow cycle: late-b -> late-a -> late-b"):
            engine.trigger("late-b", {})
        assert engine.runs(limit=None) == []  # nothing of them was recorded
        assert engine.trigger("other", 7).result(timeout=30) == 7


def test_a_late_workflow_reaches_a_late_target(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine()
    engine.define("other").step("a", steps.noop)
    with engine:
        engine.define("late-parent").subflow("kid", "late-child")
        engine.define("late-child").step("echo", steps.echo_payload)
        assert engine.trigger("late-parent", {"v": 1}).result(timeout=30) == {"v": 1}


# -- conditional recursion and the depth limit ----------------------------------------------


def test_conditional_recursion_is_allowed_and_records_depths(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = make_engine()
    _countdown(engine)
    with engine:
        run = engine.trigger("countdown", {"n": 3})
        assert run.result(timeout=30) == {"n": 0}
        assert _depths(engine) == [0, 1, 2, 3]
        top = run.inspect()
        assert top.depth == 0 and top.parent_run_id is None
        child = engine.inspect(top.step("again").child_run_id or "")
        assert child.depth == 1 and child.parent_run_id == run.id


def test_a_graph_recursion_past_the_limit_fails_without_starting_the_child(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = make_engine(max_run_depth=5)
    _countdown(engine)
    with engine:
        run = engine.trigger("countdown", {"n": 100})
        with pytest.raises(af.RunDepthExceeded) as info:
            run.result(timeout=30)
        assert info.value.step == "again"
        assert "max_run_depth=5" in str(info.value)
        assert _depths(engine) == [0, 1, 2, 3, 4, 5]
        deepest = next(r for r in engine.runs(limit=None) if engine.inspect(r.id).depth == 5)
        step = engine.inspect(deepest.id).step("again")
        assert step.status == af.StepStatus.FAILED and step.child_run_id is None
        assert step.error is not None and step.error.type == "actorflow.errors.RunDepthExceeded"
        assert step.attempt <= 1 and step.failures <= 1  # deterministic: never retried


def test_unbounded_code_recursion_fails_at_the_limit_and_the_engine_serves_on(
    make_engine: Callable[..., af.Engine],
) -> None:
    engine = make_engine(max_run_depth=5)
    engine.workflow("forever")(forever)
    engine.define("other").step("echo", steps.echo_payload)
    with engine:
        run = engine.trigger("forever", 0)
        with pytest.raises(af.RunDepthExceeded) as info:
            run.result(timeout=30)
        err = info.value
        assert isinstance(err, af.StepFailed)  # what `await ctx.child` raises, as any child
        assert (err.limit, err.depth) == (5, 6)
        assert err.chain == ("forever",) * 7
        assert "max_run_depth=5" in str(err) and "forever (x7)" in str(err)
        runs = engine.runs(limit=None)
        assert len(runs) == 6  # limit + 1: the run at depth 5 started no child
        assert all(r.status == af.RunStatus.FAILED for r in runs)
        assert _depths(engine) == [0, 1, 2, 3, 4, 5]
        assert engine.trigger("other", {"still": "serving"}).result(timeout=30) == {
            "still": "serving"
        }


def test_a_code_workflow_may_handle_the_depth_error(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine(max_run_depth=3)

    @engine.workflow("careful")
    async def careful(ctx: af.WorkflowContext, n: int) -> Any:
        try:
            return await ctx.child("deeper", "careful", n + 1)
        except af.RunDepthExceeded as exc:
            return {"stopped_at": n, "limit": exc.limit}

    with engine:
        assert engine.trigger("careful", 0).result(timeout=30) == {"stopped_at": 3, "limit": 3}
        assert len(engine.runs(limit=None)) == 4


def test_a_chain_deeper_than_the_default_works_within_its_limit(
    make_engine: Callable[..., af.Engine],
) -> None:
    assert af.EngineConfig().max_run_depth == 64
    engine = make_engine(max_run_depth=80)
    engine.workflow("down")(down)
    with engine:
        assert engine.trigger("down", 70).result(timeout=120) == 70
        assert max(_depths(engine)) == 70


def test_no_limit_when_max_run_depth_is_zero(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine(max_run_depth=0)
    engine.workflow("down")(down)
    with engine:
        assert engine.trigger("down", 66).result(timeout=120) == 66


async def deep_wait(ctx: af.WorkflowContext, n: int) -> Any:
    """Recurses without end, each run first waiting for signal ``go``."""
    await ctx.wait_for_signal("go")
    return await ctx.child("again", "deep-wait", n + 1)


def test_a_recorded_depth_is_enforced_after_a_restart(
    make_engine: Callable[..., af.Engine],
) -> None:
    first = make_engine(max_run_depth=2)
    first.workflow("deep-wait")(deep_wait)
    with first:
        top = first.trigger("deep-wait", 0)
        for depth in (0, 1):
            waiting = [r for r in first.runs(limit=None) if first.inspect(r.id).depth == depth]
            assert len(waiting) == 1
            first.run(waiting[0].id).signal("go")
            wait_until(lambda d=depth: len(first.runs(limit=None)) == d + 2)
    second = make_engine(max_run_depth=2)
    second.workflow("deep-wait")(deep_wait)
    with second:
        deepest = [r for r in second.runs(limit=None) if second.inspect(r.id).depth == 2]
        assert len(deepest) == 1
        second.run(deepest[0].id).signal("go")
        with pytest.raises(af.RunDepthExceeded):
            second.run(top.id).result(timeout=30)
        assert len(second.runs(limit=None)) == 3


def _deep_graph(engine: af.Engine) -> None:
    """Recurses while its predicate holds (always), each run first waiting for an event."""
    (
        engine.define("deep-graph")
        .wait_for_event("deeper", name="wait")
        .if_("more", lambda ctx: True)
        .subflow("again", "deep-graph")
        .endif()
    )


def _waiting_runs(engine: af.Engine) -> int:
    runs = engine.runs(limit=None)
    return sum(engine.inspect(r.id).step("wait").status == af.StepStatus.RUNNING for r in runs)


def test_a_recorded_graph_depth_is_enforced_after_a_restart(
    make_engine: Callable[..., af.Engine],
) -> None:
    first = make_engine(max_run_depth=2)
    _deep_graph(first)
    with first:
        top = first.trigger("deep-graph", {})
        for runs in (2, 3):
            wait_until(lambda n=runs: _waiting_runs(first) == 1 and len(first.runs()) == n - 1)
            first.publish("deeper", {})
            wait_until(lambda n=runs: len(first.runs()) == n)
        wait_until(lambda: _waiting_runs(first) == 1)
    second = make_engine(max_run_depth=2)
    _deep_graph(second)
    with second:
        second.publish("deeper", {})
        with pytest.raises(af.RunDepthExceeded) as info:
            second.run(top.id).result(timeout=30)
        assert info.value.chain == ("deep-graph",) * 4
        assert len(second.runs(limit=None)) == 3


# -- stores of the previous release ---------------------------------------------------------


@pytest.fixture
def legacy_store(tmp_path: Path) -> Path:
    """A copy of the store the release before run depths wrote (no depth in its records)."""
    target = tmp_path / "legacy"
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(target, filter="data")
    return target


def _legacy_engine(data_dir: Path, make_engine: Callable[..., af.Engine], **settings: Any) -> Any:
    engine = make_engine(data_dir=data_dir, **settings)
    legacy_workflows.define(engine)
    return engine


def _only(engine: af.Engine, workflow: str) -> str:
    runs = engine.runs(workflow=workflow, limit=None)
    assert len(runs) == 1, runs
    return runs[0].id


def test_a_previous_release_store_reads_depths_from_parent_links(
    legacy_store: Path, make_engine: Callable[..., af.Engine]
) -> None:
    engine = _legacy_engine(legacy_store, make_engine, max_run_depth=2)
    with engine:
        top, mid = _only(engine, "fx_top"), _only(engine, "fx_mid")
        assert engine.inspect(top).depth == 0
        assert engine.inspect(mid).depth == 1  # no depth recorded: from its parent link
        assert engine.inspect(mid).parent_run_id == top
        engine.publish(legacy_workflows.EVENT, {"go": True})
        assert engine.run(top).result(timeout=30) == {"n": 1}
        code_top, code_mid = _only(engine, "fx_code_top"), _only(engine, "fx_code_mid")
        engine.run(code_mid).signal("go")
        assert engine.run(code_top).result(timeout=30) == {"n": 2}
        leaves = engine.runs(workflow="fx_leaf", limit=None)
        assert sorted(engine.inspect(r.id).depth for r in leaves) == [2, 2]


def test_a_previous_release_run_is_held_to_the_limit(
    legacy_store: Path, make_engine: Callable[..., af.Engine]
) -> None:
    engine = _legacy_engine(legacy_store, make_engine, max_run_depth=1)
    with engine:
        engine.publish(legacy_workflows.EVENT, {"go": True})
        with pytest.raises(af.RunDepthExceeded) as info:
            engine.run(_only(engine, "fx_top")).result(timeout=30)
        assert info.value.chain == ("fx_top", "fx_mid", "fx_leaf")
        engine.run(_only(engine, "fx_code_mid")).signal("go")
        with pytest.raises(af.RunDepthExceeded):
            engine.run(_only(engine, "fx_code_top")).result(timeout=30)
        assert engine.runs(workflow="fx_leaf", limit=None) == []
