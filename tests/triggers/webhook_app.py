"""An engine with webhooks, served by tests through ``actorflow serve`` and in-process."""

from __future__ import annotations

import os
from typing import Any

import actorflow as af

os.environ.setdefault("TEST_HOOK_SECRET", "hook-secret")

ORDER_SCHEMA = {
    "type": "object",
    "required": ["order", "amount"],
    "properties": {"order": {"type": "string"}, "amount": {"type": "number", "minimum": 0}},
}


def accept(ctx: Any) -> dict[str, Any]:
    return {"order": ctx.payload["order"], "amount": ctx.payload["amount"]}


def define(engine: af.Engine) -> af.Engine:
    engine.define("orders").step("accept", accept).on_webhook(
        "/hooks/orders", secret_env="TEST_HOOK_SECRET", schema=ORDER_SCHEMA
    )
    engine.define("gh").step("echo", lambda ctx: ctx.payload).on_webhook(
        "/hooks/github", secret_env="TEST_HOOK_SECRET", signature="github"
    )
    engine.define("stripe").step("echo", lambda ctx: ctx.payload).on_webhook(
        "/hooks/stripe", secret_env="TEST_HOOK_SECRET", signature="stripe"
    )
    engine.define("open").step("echo", lambda ctx: ctx.payload).on_webhook("/hooks/open", "PUT")
    (
        engine.define("approve")
        .human_in_the_loop("ok", timeout="1h")
        .wait_for_event("paid", key=lambda ctx: ctx.payload["id"])
        .step("done", lambda ctx: {"paid": ctx.last, "ok": ctx.steps["ok"].output})
    )

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
        closing = await ctx.wait_for_signal("close")
        return {"n": counts["n"], "closing": closing}

    tally.on_webhook("/hooks/tally")
    return engine


engine = define(
    af.Engine(data_dir=os.environ.get("TEST_APP_DATA_DIR", ".actorflow-test"), workers=1)
)
