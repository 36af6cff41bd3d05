"""Step functions that log through ``ctx.log`` (importable by worker processes), for the tests
of steps' logs kept with their run (tests/runtime/test_step_logs.py)."""

from __future__ import annotations

from typing import Any

import actorflow as af


def flaky(ctx: Any) -> str:
    """Log two lines per attempt; fail the first attempt."""
    ctx.log.info("try %d begins", ctx.run.attempt)
    if ctx.run.attempt == 1:
        ctx.log.warning("try 1 fails")
        raise RuntimeError("first try fails")
    ctx.log.info("try %d ends", ctx.run.attempt)
    return "ok"


def chatty(ctx: Any) -> int:
    """Log past the bound: one long message, then ``count`` short ones."""
    ctx.log.info("x" * 20_000)
    for i in range(int(ctx.payload["count"])):
        ctx.log.info("line %d", i)
    return int(ctx.payload["count"])


def levels(ctx: Any) -> None:
    ctx.log.debug("a debug line")
    ctx.log.info("an info line")
    ctx.log.warning("a warning line")
    try:
        raise ValueError("bad value")
    except ValueError:
        ctx.log.exception("it broke")


def quiet(ctx: Any) -> int:
    return 1


def item(value: Any, ctx: Any) -> Any:
    ctx.log.info("item %s", value)
    return value


def code_step(n: int) -> int:
    """A code workflow's step (``fn(*args)``): its context through ``af.step_context()``."""
    log = af.step_context().log
    log.info("code step got %d", n)
    return n + 1


def code_flaky(n: int) -> int:
    ctx = af.step_context()
    ctx.log.info("code try %d", ctx.run.attempt)
    if ctx.run.attempt == 1:
        raise RuntimeError("first try fails")
    return n
