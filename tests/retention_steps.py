"""Workflows of the retention tests, and of the store fixture of the previous format.

``tests/fixtures/make_store_format2.py`` ran :func:`define` on the code of format 2 (before
retention) to write ``tests/fixtures/store-format2``; the tests define the same workflows
when they open a copy of it, so the unfinished runs in it can resume.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import actorflow as af


def add_one(ctx: Any) -> int:
    return int(ctx.payload.get("n", 0)) + 1


def double(ctx: Any) -> int:
    return int(ctx.last) * 2


def boom(ctx: Any) -> None:
    raise ValueError("boom")


def big(ctx: Any) -> Any:
    """A uint8 array of ``size`` bytes (payload): a large value, kept as a blob."""
    return np.full(int(ctx.payload.get("size", 8192)), 7, dtype=np.uint8)


def nbytes(ctx: Any) -> int:
    return int(ctx.last.nbytes)


def echo(ctx: Any) -> Any:
    return ctx.last


async def chain(ctx: af.WorkflowContext, n: int, rounds: int) -> int:
    """Continue as new ``rounds - 1`` times, adding one each time."""
    n = await ctx.step("add", _plus_one, n)
    if rounds > 1:
        ctx.continue_as_new(n, rounds - 1)
    return n


def _plus_one(n: int) -> int:
    return n + 1


def define(engine: af.Engine, **retention: Any) -> None:
    """The fixture's workflows; ``retention={"orders": "1d"}`` sets per-workflow retention."""

    def opts(workflow: str) -> dict[str, Any]:
        return {"retention": retention[workflow]} if workflow in retention else {}

    engine.define("orders", **opts("orders")).step("add", add_one).step("double", double).step(
        "echo", echo
    )
    engine.define("failing", **opts("failing")).step("boom", boom)
    engine.define("slow", **opts("slow")).step("add", add_one).sleep("nap", "1h").step("echo", echo)
    engine.define("gate", concurrency=1, **opts("gate")).sleep("nap", "1h").step("echo", echo)
    engine.define("approve", **opts("approve")).human_in_the_loop("ok", timeout="24h").step(
        "echo", echo
    )
    engine.define("evented", **opts("evented")).wait_for_event("paid", key="k").step("echo", echo)
    engine.define("large", **opts("large")).step("make", big).step("size", nbytes).step(
        "again", big
    )
    engine.define("large_fail", **opts("large_fail")).step("make", big).step("boom", boom)
    engine.define("child", **opts("child")).step("add", add_one)
    engine.define("parent", **opts("parent")).subflow("sub", "child").step("echo", echo)
    engine.workflow("chain", **opts("chain"))(chain)
