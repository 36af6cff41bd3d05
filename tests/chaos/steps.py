"""Step functions of the chaos workload: each execution appends one line to an outside log.

A line is ``X <generation> <run id> <step> <attempt> <pid>``, written with one ``write`` on
an ``O_APPEND`` file, so lines from every process interleave whole and in real-time order.
"""

from __future__ import annotations

import os
import time
from typing import Any


def note(log: str, line: str) -> None:
    """Append one line to ``log`` (one write: atomic next to other processes' lines)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _executed(log: str, run_id: str, step: str, attempt: int) -> None:
    gen = os.environ.get("CHAOS_GEN", "?")
    note(log, f"X {gen} {run_id} {step} {attempt} {os.getpid()}")


def work(ctx: Any) -> int:
    """A graph step: a little work; returns the previous value plus its weight."""
    _executed(ctx.payload["log"], ctx.run.id, ctx.run.step, ctx.run.attempt)
    time.sleep(ctx.payload.get("pause", 0.01))
    base = ctx.last if isinstance(ctx.last, int) else 0
    return base + 1


def flaky(ctx: Any) -> int:
    """Fails its first attempt (retried by policy), then succeeds."""
    _executed(ctx.payload["log"], ctx.run.id, ctx.run.step, ctx.run.attempt)
    if ctx.run.attempt == 1:
        raise RuntimeError("first attempt fails on purpose")
    return 100


def item(value: Any, ctx: Any) -> int:
    """A for_each item: its value squared."""
    _executed(ctx.payload["log"], ctx.run.id, ctx.run.step, ctx.run.attempt)
    time.sleep(0.005)
    return int(value) * int(value)


def items(ctx: Any) -> list[int]:
    return list(range(8))


def child_input(ctx: Any) -> dict[str, Any]:
    return {"log": ctx.payload["log"], "n": 5}


def summary(ctx: Any) -> dict[str, Any]:
    """The last step of a graph run: what it saw, for the checker."""
    _executed(ctx.payload["log"], ctx.run.id, ctx.run.step, ctx.run.attempt)
    return {
        "key": ctx.payload["key"],
        "steps": {k: ctx.steps[k].output for k in ctx.payload["read"]},
    }


def code_step(log: str, value: int) -> int:
    """A code workflow's step (called as ``fn(*args)``; its identity from the context)."""
    from actorflow import step_context

    run = step_context().run
    _executed(log, run.id, run.step, run.attempt)
    time.sleep(0.005)
    return value
