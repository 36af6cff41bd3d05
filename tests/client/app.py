"""The engine the client tests talk to, served by ``actorflow serve tests/client/app.py:engine``
in a process of its own (its store: ``$TEST_APP_DATA_DIR``)."""

from __future__ import annotations

import os
import time
from typing import Any

import actorflow as af
from tests import log_steps


def declined(ctx: Any) -> None:
    raise ValueError("card declined")


def nap(ctx: Any) -> str:
    time.sleep(30)  # killed at the step's timeout long before
    return "woke"


engine = af.Engine(data_dir=os.environ.get("TEST_APP_DATA_DIR", ".actorflow-client"), workers=1)
engine.define("double").step("x2", lambda ctx: ctx.payload["n"] * 2)
engine.define("boom").step("charge", declined)
engine.define("naps").step("nap", nap, timeout="100ms")
engine.define("late", timeout="200ms").wait_for_event("never")
engine.define("listed").step("noop", lambda ctx: None)
engine.define("versioned").step("v", lambda ctx: 1)
engine.define("versioned", version=2).step("v", lambda ctx: 2)
(
    engine.define("gate")  # held until the event "go" with the payload's id is published
    .wait_for_event("go", key=lambda ctx: ctx.payload["id"])
    .step("done", lambda ctx: {"got": ctx.last})
)
ranked = af.Queue("ranked", concurrency=1, priority=True)
engine.define("ranked-hold", queue=ranked).wait_for_event("rank-go", key=lambda ctx: ctx.payload)
engine.define("ranked", queue=ranked).step("tag", lambda ctx: ctx.payload)
engine.define("approve").human_in_the_loop("ok", timeout="1h").step("done", lambda ctx: ctx.last)
engine.define("chatty").step("flaky", log_steps.flaky, retry=af.Retry(attempts=2, delay=0.01))


@engine.workflow("tally")
async def tally(ctx: af.WorkflowContext, start: dict[str, Any]) -> dict[str, Any]:
    counts = {"n": int(start.get("n", 0))}
    ctx.on_query("n", lambda: counts["n"])
    ctx.on_query("times", lambda k: counts["n"] * k)

    def add(k: int) -> int:
        if k < 0:
            raise ValueError("negative")
        counts["n"] += k
        return counts["n"]

    ctx.on_update("add", add)
    ctx.on_signal("bump", lambda k: counts.__setitem__("n", counts["n"] + k))
    closing = await ctx.wait_for_signal("close")
    return {"n": counts["n"], "closing": closing}


@engine.workflow("fails")
async def fails(ctx: af.WorkflowContext, why: str) -> None:
    raise af.WorkflowFailed(why)


@engine.workflow("careful")
async def careful(ctx: af.WorkflowContext, _payload: Any = None) -> str:
    import asyncio

    try:
        await ctx.wait_for_signal("go")
        return "went"
    except asyncio.CancelledError:
        await ctx.step("cleanup", lambda: "cleaned")  # a cancel runs it; a terminate does not
        raise
