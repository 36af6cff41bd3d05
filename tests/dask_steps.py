"""Step functions for the Dask and Ray executor tests (importable by their worker processes)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def where(ctx: Any) -> dict[str, Any]:
    return {"pid": os.getpid(), "n": ctx.payload["n"]}


def add(ctx: Any) -> dict[str, Any]:
    first = ctx.steps["where"].output
    count = ctx.state.incr("calls")
    ctx.log.info("adding on %s", os.getpid())
    return {"pid": os.getpid(), "sum": first["n"] + 1, "calls": count, "first_pid": first["pid"]}


def slow(ctx: Any) -> None:
    Path(ctx.payload["pids"]).write_text(str(os.getpid()))
    time.sleep(60)


def killed_once(ctx: Any) -> int:
    """Record this execution, then wait (the test SIGKILLs the first one's process)."""
    log = Path(ctx.payload["log"])
    with log.open("a") as f:
        f.write(f"{os.getpid()}\n")
    if len(log.read_text().split()) == 1:
        time.sleep(60)
    return len(log.read_text().split())


def array_sum(ctx: Any) -> float:
    return float(ctx.payload.sum())


def crash_once(ctx: Any) -> dict[str, Any]:
    """The first attempt records its pid and waits to be SIGKILLed; the next one returns."""
    log = Path(ctx.payload["log"])
    with log.open("a") as f:
        f.write(f"{os.getpid()} {ctx.run.attempt}\n")
    if ctx.run.attempt == 1:
        time.sleep(60)
    return {"attempt": ctx.run.attempt, "pid": os.getpid()}


def beating(ctx: Any) -> int:
    """Heartbeats for a while, then goes silent (past its heartbeat timeout)."""
    Path(ctx.payload["pids"]).write_text(str(os.getpid()))
    for i in range(3):
        ctx.heartbeat({"done": i})
        time.sleep(0.2)
    time.sleep(60)
    return 0
