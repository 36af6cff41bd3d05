"""Parent-close policies for code workflows' children (issue 24.5), as Temporal's:
``terminate`` (the default), ``request_cancel`` and ``abandon``, when the parent completes and
across ``continue_as_new``; a child started but not awaited is created all the same."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests import code_steps as cs
from tests.conftest import executions, wait_until

MakeEngine = Callable[..., af.Engine]


def define(engine: af.Engine, log: str) -> None:
    @engine.workflow("child")
    async def child(ctx: af.WorkflowContext, tag: str) -> str:
        try:
            got = await ctx.wait_for_signal("finish")
        except asyncio.CancelledError:
            await ctx.step("cleanup", cs.logged, log, f"cleanup-{tag}", 1)
            raise
        return f"{tag}: {got}"

    @engine.workflow("parent")
    async def parent(ctx: af.WorkflowContext, policy: str, generation: int = 0) -> str:
        if generation == 0:
            ctx.child("kid", "child", policy, parent_close_policy=policy)  # not awaited
            ctx.continue_as_new(policy, 1)
        return "second generation done"

    @engine.workflow("completes")
    async def completes(ctx: af.WorkflowContext, policy: str) -> str:
        started = asyncio.ensure_future(
            ctx.child("kid", "child", policy, parent_close_policy=policy)
        )
        await ctx.sleep("a-moment", "10ms")
        assert not started.done()
        return "parent done"


def the_child(engine: af.Engine, run: af.RunHandle) -> af.RunHandle:
    """The child of the first run of ``run``'s chain."""
    kid = next(s for s in engine.inspect(run.id).steps if s.name == "kid")
    child_id = kid.child_run_id
    assert child_id is not None
    # It is started once the parent's record of it is durable: just after, maybe.
    wait_until(lambda: any(r.id == child_id for r in engine.runs(workflow="child")))
    return engine.run(child_id)


@pytest.mark.parametrize("generation_run", ["parent"])
def test_abandon_a_child_survives_continue_as_new(
    make_engine: MakeEngine, tmp_path: Path, generation_run: str
) -> None:
    engine = make_engine()
    define(engine, str(tmp_path / "log"))
    with engine:
        run = engine.trigger(generation_run, "abandon")
        assert run.result(timeout=30) == "second generation done"
        child = the_child(engine, run)  # it was created, though never awaited
        assert child.status() == af.RunStatus.RUNNING
        child.signal("finish", "on my own")
        assert child.result(timeout=30) == "abandon: on my own"


def test_terminate_ends_the_child_at_once_across_continue_as_new(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    engine = make_engine()
    define(engine, str(log))
    with engine:
        run = engine.trigger("parent", "terminate")
        assert run.result(timeout=30) == "second generation done"
        child = the_child(engine, run)
        with pytest.raises(af.RunCancelled):
            child.result(timeout=30)
        assert "parent_close_policy: terminate" in (child.inspect().cancel_reason or "")
    assert not log.exists()  # its code was not told: no clean-up ran


@pytest.mark.parametrize(
    ("policy", "outcome", "cleaned"),
    [
        ("terminate", af.RunStatus.CANCELLED, {}),
        ("request_cancel", af.RunStatus.CANCELLED, {"cleanup-request_cancel": 1}),
        ("abandon", af.RunStatus.RUNNING, {}),
    ],
)
def test_the_policies_when_the_parent_completes(
    make_engine: MakeEngine,
    tmp_path: Path,
    policy: str,
    outcome: af.RunStatus,
    cleaned: dict[str, int],
) -> None:
    log = tmp_path / "log"
    engine = make_engine()
    define(engine, str(log))
    with engine:
        run = engine.trigger("completes", policy)
        assert run.result(timeout=30) == "parent done"
        child = the_child(engine, run)
        wait_until(lambda: child.status() == outcome)
        if outcome == af.RunStatus.CANCELLED:
            with pytest.raises(af.RunCancelled):
                child.result(timeout=30)
        else:
            child.signal("finish", "later")
            assert child.result(timeout=30) == "abandon: later"
    assert (executions(log) if log.exists() else {}) == cleaned


def test_a_bad_policy_is_refused(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("bad")
    async def bad(ctx: af.WorkflowContext) -> Any:
        return await ctx.child("kid", "bad", parent_close_policy="orphan")

    with engine:
        run = engine.trigger("bad")
        wait_until(lambda: run.status() == af.RunStatus.PANICKED)
        assert "parent_close_policy: expected one of" in run.inspect().error.message  # type: ignore[union-attr]
    assert af.ParentClosePolicy("abandon") is af.ParentClosePolicy.ABANDON
