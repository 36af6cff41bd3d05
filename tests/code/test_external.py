"""``ctx.external(run_id).signal(...)`` and ``.cancel(...)`` (issue 24.6): a child reports to
its parent, a run stops another; each is a recorded command, taken by its target once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import actorflow as af
from actorflow.code._history import read_history
from actorflow.store import _keys as K
from tests.conftest import wait_until

MakeEngine = Callable[..., af.Engine]


def define(engine: af.Engine) -> None:
    @engine.workflow("parent")
    async def parent(ctx: af.WorkflowContext) -> dict[str, Any]:
        progress: list[Any] = []
        ctx.on_signal("progress", progress.append)
        ctx.on_signal("pair", lambda a, b: progress.append([a, b]))
        result = await ctx.child("work", "child", ctx.run.id)
        await ctx.wait_condition(lambda: len(progress) >= 3)
        return {"progress": progress, "child": result}

    @engine.workflow("child")
    async def child(ctx: af.WorkflowContext, parent_id: str) -> str:
        parent_run = ctx.external(parent_id)
        first = await parent_run.signal("progress", 50)
        await parent_run.signal("progress", 100)
        await parent_run.signal("pair", args=["done", True])
        return f"reported ({first})"


def test_a_child_reports_to_its_parent(make_engine: MakeEngine) -> None:
    engine = make_engine()
    define(engine)
    with engine:
        run = engine.trigger("parent")
        assert run.result(timeout=30) == {
            "progress": [50, 100, ["done", True]],
            "child": "reported (True)",
        }
        child_id = next(s.child_run_id for s in run.inspect().steps if s.name == "work")
        assert child_id is not None
        steps = {s.path: s for s in engine.inspect(child_id).steps}
        assert steps["signal:progress"].kind == "external"
        assert steps["signal:progress"].status == af.StepStatus.SUCCEEDED
        assert steps["signal:progress#2"].output == "true"
        # The parent took each signal once.
        history, _ = engine._read(lambda store: read_history(store, run.id))
        sigs = [r for e in history for r in e.r if r[0] == "sig"]
        assert len(sigs) == 3


def test_a_run_cancels_another(make_engine: MakeEngine) -> None:
    engine = make_engine()
    cleaned: list[str] = []

    @engine.workflow("victim")
    async def victim(ctx: af.WorkflowContext) -> None:
        try:
            await ctx.wait_for_signal("never")
        except asyncio.CancelledError:
            cleaned.append("yes")
            raise

    @engine.workflow("stopper")
    async def stopper(ctx: af.WorkflowContext, target: str) -> list[bool]:
        first = await ctx.external(target).cancel("stopped by stopper")
        again = await ctx.external(target).cancel()
        return [first, again]

    with engine:
        target = engine.trigger("victim")
        wait_until(lambda: any(s.name == "never" for s in target.inspect().steps))
        stopper_run = engine.trigger("stopper", target.id)
        assert stopper_run.result(timeout=30) == [True, False]  # the second: already over
        with pytest.raises(af.RunCancelled):
            target.result(timeout=30)
        assert target.inspect().cancel_reason == "stopped by stopper"
    assert cleaned == ["yes"]


def test_a_refused_signal_fails_where_it_is_awaited(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("lonely")
    async def lonely(ctx: af.WorkflowContext) -> str:
        try:
            await ctx.external("ffffffffffffffffffffffff").signal("hello")
        except af.StepFailed as exc:
            return type(exc.__cause__).__name__
        return "delivered?"

    @engine.workflow("bad")
    async def bad(ctx: af.WorkflowContext) -> None:
        ctx.external("")

    with engine:
        assert engine.trigger("lonely").result(timeout=30) == "RunNotFound"
        run = engine.trigger("bad")
        wait_until(lambda: run.status() == af.RunStatus.PANICKED)
        assert "ctx.external: run_id" in (run.inspect().error.message or "")  # type: ignore[union-attr]


def test_a_resend_after_a_crash_is_dropped_by_the_target(make_engine: MakeEngine) -> None:
    """A reload resends a signal whose reply was lost, with the key ``<run id>/<path>``:
    the target takes a signal with that key once."""
    engine = make_engine()

    @engine.workflow("sink")
    async def sink(ctx: af.WorkflowContext) -> list[Any]:
        got: list[Any] = []
        ctx.on_signal("note", got.append)
        await ctx.wait_for_signal("end")
        return got

    @engine.workflow("source")
    async def source(ctx: af.WorkflowContext, target: str) -> bool:
        return await ctx.external(target).signal("note", "once")

    with engine:
        target = engine.trigger("sink")
        src = engine.trigger("source", target.id)
        assert src.result(timeout=30) is True
        # What a resend after a crash would be: the same key, dropped.
        assert target.signal("note", "once", idempotency_key=f"{src.id}/signal:note") is False
        target.signal("end")
        assert target.result(timeout=30) == ["once"]


def test_a_signal_name_too_long_for_its_command_is_refused_when_sent() -> None:
    from actorflow.code._context import ExternalRun

    class _Ctx:
        def _future(self, *a: Any) -> None:
            raise AssertionError("never issued")

    long = "n" * (K.MAX_NAME - 3)  # fits alone; 'signal:' + it does not
    with pytest.raises(af.DefinitionError, match="with its 'signal:' prefix"):
        ExternalRun(_Ctx(), "r").signal(long)  # type: ignore[arg-type]
