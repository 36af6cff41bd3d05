"""An order pipeline that survives its own engine being killed.

Run it twice: the first time it SIGKILLs its own engine in the middle of a run; the second
time a new engine on the same store resumes that run where it stopped (completed steps are not
run again) and prints the result.

    python examples/orders.py            # crashes on purpose (exit code -9 / 137)
    python examples/orders.py            # resumes and finishes
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import actorflow as af

DATA_DIR = Path(os.environ.get("ORDERS_DATA_DIR", ".actorflow-orders"))
CRASHED = DATA_DIR / "crashed-once"


def reserve_stock(ctx: af.StepContext) -> dict[str, object]:
    return {"order": ctx.payload["id"], "reserved": sum(q for q, _ in ctx.payload["lines"])}


def charge_card(ctx: af.StepContext) -> dict[str, object]:
    if not CRASHED.exists():
        # The engine dies while this step runs: a real SIGKILL, no cleanup at all.
        CRASHED.write_text("yes")
        os.kill(int(ctx.payload["engine_pid"]), signal.SIGKILL)
    amount = sum(q * p for q, p in ctx.payload["lines"])
    # ctx.idempotency_key is the same on the retry: a payment API would not charge twice.
    return {"charged": round(amount, 2), "idempotency_key": ctx.idempotency_key}


def ship(ctx: af.StepContext) -> str:
    return f"shipped {ctx.steps['reserve'].output['reserved']} items, charged {ctx.last['charged']}"


def define(engine: af.Engine) -> af.Workflow:
    """The order pipeline, defined on ``engine`` (the tests run it in the test harness)."""
    return (
        engine.define("orders")
        .step("reserve", reserve_stock)
        .step("charge", charge_card, retry=af.Retry(attempts=3, delay="100ms"))
        .step("ship", ship)
    )


def main() -> int:
    engine = af.Engine(data_dir=DATA_DIR)
    define(engine)
    with engine:
        order = {"id": "A-1001", "lines": [[2, 9.5], [1, 30.0]], "engine_pid": os.getpid()}
        # The same idempotency key on both runs of this script: one order, one run.
        run = engine.trigger("orders", order, idempotency_key="order-A-1001")
        print(f"run {run.id}: {run.result(timeout=60)}")
        for step in engine.inspect(run.id).steps:
            print(
                f"  {step.name:<8} {step.status.value:<10} attempts: "
                + ", ".join(a.status for a in step.attempts)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
