"""The quick-start example that ``actorflow demo`` (and ``make demo``) runs.

An order pipeline on the embedded LMDB store: validate, score with a flaky service that fails
once and is retried with backoff, price, and an audit action. Step functions live in this
module, so worker processes import them by reference.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import actorflow as af
from actorflow.cli._output import Column, Output

__all__ = ["build_engine", "run_demo"]


def validate(ctx: af.StepContext) -> dict[str, Any]:
    order = ctx.payload
    if not order.get("lines"):
        raise ValueError(f"order {order.get('id')} has no lines")
    return {"id": order["id"], "amount": sum(q * p for q, p in order["lines"])}


def score(ctx: af.StepContext) -> dict[str, Any]:
    # A flaky fraud-scoring service: the first attempt of every order times out, the retry
    # (after a durable backoff) succeeds. ctx.idempotency_key is the same for both attempts.
    if ctx.run.attempt == 1:
        raise ConnectionError("fraud service timed out")
    amount = ctx.last["amount"]
    return {**ctx.last, "risk": round(min(1.0, amount / 10_000), 3), "by": f"pid {os.getpid()}"}


def price(ctx: af.StepContext) -> dict[str, Any]:
    order = ctx.last
    fee = 0 if order["risk"] < 0.5 else round(order["amount"] * 0.02, 2)
    # CPU work in the worker process, not in the engine.
    checksum = sum(random.Random(order["id"]).random() for _ in range(50_000))
    return {**order, "fee": fee, "total": order["amount"] + fee, "checksum": round(checksum, 2)}


def audit(ctx: af.StepContext) -> str:
    ctx.log.info("audited order %s", ctx.steps["validate"].output["id"])
    return f"audited {ctx.run.id}"


def build_engine(data_dir: str | Path = ".actorflow") -> af.Engine:
    """The demo's engine and workflow."""
    engine = af.Engine(data_dir=data_dir)
    (
        engine.define("orders-demo", timeout="2m", description="the quick-start example")
        .step("validate", validate)
        .step("score", score, timeout="5s", retry=af.Retry(attempts=3, delay="200ms"))
        .step("price", price)
        .action("audit", audit)
    )
    return engine


def run_demo(
    data_dir: str | Path = ".actorflow", orders: int = 3, out: Output | None = None
) -> list[dict[str, Any]]:
    """Run a few orders and print what happened (through ``out``); return their results."""
    out = out or Output("demo")
    engine = build_engine(data_dir)
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with engine:
        workers = engine.config.worker_count
        out.line(f"actorflow demo: store {Path(data_dir).resolve()}, {workers} workers")
        handles = [
            engine.trigger(
                "orders-demo",
                {"id": f"order-{i}", "lines": [[i + 1, 19.99], [2, 120.0 * (i + 1)]]},
                idempotency_key=f"demo-{time.time_ns()}-{i}",
            )
            for i in range(orders)
        ]
        for h in handles:
            result = h.result(timeout=120)
            results.append(result)
            out.line(f"  run {h.id}: total {result['total']:.2f} (risk {result['risk']})")
        details = engine.inspect(handles[0].id)
    out.line(f"{orders} runs completed in {time.perf_counter() - started:.2f}s\n")
    out.line(f"run {details.id} ({details.status.value}):")
    out.table(
        ["STEP", Column("STATUS", status=True), Column("ATTEMPTS", wrap=True)],
        [
            (
                s.name,
                s.status.value,
                ", ".join(a.status + (f" ({a.error})" if a.error else "") for a in s.attempts),
            )
            for s in details.steps
        ],
    )
    out.line("\nSee every run with `actorflow runs`, one run with `actorflow show RUN_ID`.")
    return results
