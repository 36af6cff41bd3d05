"""Control flow: a branch, a parallel, a race, a while loop, a 10,000-item fan-out, a durable
sleep and a child run, in one workflow. Run it: ``python examples/control_flow.py``.

Then look at the run with ``actorflow --data-dir .actorflow-flow show RUN_ID``.
"""

from __future__ import annotations

import os
import time

import actorflow as af


def fetch_prices(ctx: af.StepContext) -> dict[str, float]:  # a step: runs in a worker
    return {"eu": 10.0, "us": 11.5}


def from_cache(ctx: af.StepContext) -> str:
    return "cache"


def from_origin(ctx: af.StepContext) -> str:
    time.sleep(5)  # loses the race: its worker is killed, not left running
    return "origin"


def score(item: int, ctx: af.StepContext) -> int:  # a for_each body: fn(item, ctx)
    return (item * 7919) % 101


def total(ctx: af.StepContext) -> int:
    return sum(ctx.payload["scores"])


def define(engine: af.Engine) -> af.Workflow:
    """Define the child ``sum`` and the ``report`` workflow on ``engine``; return ``report``."""
    engine.define("sum").step("total", total)
    return (
        engine.define("report")
        .if_("big", lambda ctx: ctx.payload["n"] >= 1000)  # predicates run in the engine
        .step("note", lambda ctx: "a big one")
        .else_()
        .cancel("too small to report")
        .endif()
        .parallel("prices", {"eu_us": fetch_prices, "currency": lambda ctx: "EUR"})
        .race("source", [from_cache, from_origin])  # the first to succeed wins
        .while_(  # ctx.last: the previous iteration's output (before the first: "cache")
            "halve",
            lambda ctx: ctx.iteration == 0 or ctx.last > 100,
            lambda ctx: (ctx.payload["n"] if ctx.iteration == 0 else ctx.last) // 2,
            max_iterations=20,
        )
        .for_each("scores", lambda ctx: list(range(ctx.payload["n"])), score)
        .sleep("cool_down", "200ms")  # a durable timer: the run leaves memory meanwhile
        .subflow("sum", "sum", input=lambda ctx: {"scores": ctx.steps["scores"].output})
    )


def build(data_dir: str) -> af.Engine:
    engine = af.Engine(data_dir=data_dir, workers=2)
    define(engine)
    return engine


def main() -> None:
    engine = build(os.environ.get("FLOW_DATA_DIR", ".actorflow-flow"))
    with engine:
        run = engine.trigger("report", {"n": 10_000})
        print("result:", run.result(timeout=120))
        d = run.inspect()
        print("branch taken:", d.step("big").branch, "| race winner:", d.step("source").winner)
        print("halvings:", d.step("halve").iterations, "| items:", d.step("scores").items)
        print("child run:", d.step("sum").child_run_id)
        small = engine.trigger("report", {"n": 10})
        print("small run:", small.status().value, "-", small.inspect().cancel_reason)
        print(f"\nSee it: actorflow --data-dir {engine.config.data_dir} show {run.id}")


if __name__ == "__main__":
    main()
