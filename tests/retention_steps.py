"""Workflows of the retention tests, and of the store fixture of the previous format.

``tests/fixtures/make_store_format2.py`` ran :func:`define` on the code of format 2 (before
retention) to write ``tests/fixtures/store-format2``; the tests define the same workflows
when they open a copy of it, so the unfinished runs in it can resume (``signalled`` was added
after the fixture was written; it has no runs there).
"""

from __future__ import annotations

import time
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


async def signalled(ctx: af.WorkflowContext, n: int) -> Any:
    """Wait for signal ``go`` (sent with an idempotency key), then for event ``paid``."""
    go = await ctx.wait_for_signal("go")
    paid = await ctx.wait_for_event("paid", key=str(n), timeout="1h", default=None)
    return [n, go, paid]


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
    engine.workflow("signalled", **opts("signalled"))(signalled)


def settle(run: af.RunHandle, status: str, timeout: float = 60.0) -> None:
    """Wait until ``run`` is in ``status``."""
    deadline = time.monotonic() + timeout
    while run.status() != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run.id} did not become {status}: {run.status()}")
        time.sleep(0.02)


def _step_running(engine: af.Engine, run_id: str, step: str) -> bool:
    return any(s.name == step and s.status == "running" for s in engine.inspect(run_id).steps)


def _until(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        time.sleep(0.02)


def populate(engine: af.Engine, clock: af.ManualClock, signals: bool = True) -> dict[str, str]:
    """Runs of every kind on a started engine (:func:`define`); their ids by name.

    Finished, 5 s of the clock apart: completed with an idempotency key, failed, cancelled
    while asleep, resumed approval, event delivered to a waiting step, large result (a
    blob), failed with a blob, parent with a child, a continue-as-new chain of two, and
    (``signals``) a code run that took a keyed signal and an event. Unfinished, last: a run
    asleep, one queued behind it, one waiting for an approval.
    """
    ids: dict[str, str] = {}
    ids["orders"] = engine.trigger("orders", {"n": 1}, idempotency_key="order-1").id
    settle(engine.run(ids["orders"]), "completed")
    clock.advance(5)
    ids["failing"] = engine.trigger("failing").id
    settle(engine.run(ids["failing"]), "failed")
    clock.advance(5)
    cancelled = engine.trigger("slow", {"n": 2})
    _until(lambda: _step_running(engine, cancelled.id, "nap"))
    cancelled.cancel("fixture")
    settle(cancelled, "cancelled")
    ids["cancelled"] = cancelled.id
    clock.advance(5)
    resumed = engine.trigger("approve", {"n": 3})
    _until(lambda: bool(engine.approvals(status="waiting")))
    engine.resume(engine.approvals(status="waiting")[0]["token"], {"ok": True})
    settle(resumed, "completed")
    ids["approved"] = resumed.id
    clock.advance(5)
    ev = engine.trigger("evented", {"n": 4})
    _until(lambda: _step_running(engine, ev.id, "paid"))
    engine.publish("paid", {"amount": 5}, key="k")
    settle(ev, "completed")
    ids["evented"] = ev.id
    clock.advance(5)
    ids["large"] = engine.trigger("large", {"size": 8192}).id
    settle(engine.run(ids["large"]), "completed")
    ids["large_fail"] = engine.trigger("large_fail", {"size": 8192}).id
    settle(engine.run(ids["large_fail"]), "failed")
    clock.advance(5)
    ids["parent"] = engine.trigger("parent", {"n": 6}).id
    settle(engine.run(ids["parent"]), "completed")
    clock.advance(5)
    ids["chain"] = engine.trigger("chain", 0, 2).id
    assert engine.run(ids["chain"]).result(timeout=60) == 2
    if signals:
        sig = engine.trigger("signalled", 7)
        assert sig.signal("go", "now", idempotency_key="go-1")
        _until(lambda: _step_running(engine, sig.id, "paid"))
        engine.publish("paid", {"amount": 7}, key="7")
        assert sig.result(timeout=60) == [7, "now", {"amount": 7}]
        ids["signalled"] = sig.id
    clock.advance(25)
    ids["sleeping"] = engine.trigger("gate", {"n": 7}).id
    ids["queued"] = engine.trigger("gate", {"n": 8}).id
    ids["waiting"] = engine.trigger("approve", {"n": 9}).id
    _until(lambda: len(engine.approvals(status="waiting")) == 1)
    settle(engine.run(ids["queued"]), "queued")
    _until(lambda: _step_running(engine, ids["sleeping"], "nap"))
    return ids
