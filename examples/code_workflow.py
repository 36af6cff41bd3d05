"""A code workflow: an ``async def`` whose steps are recorded and replayed after a crash.

Run it with ``python examples/code_workflow.py``. An ETL run extracts rows, transforms them
in parallel over the worker pool, pauses, waits for a person's approval (a signal), and has a
child run load the result. While it waits, the script queries its progress and sends the
signal; at the end it replays the run's recorded history against the code, which is how you
check, before a deploy, that changed code still takes the path recorded runs took.
"""

from __future__ import annotations

import os
import time
from typing import Any

import actorflow as af

engine = af.Engine(data_dir=os.environ.get("CODE_DATA_DIR", ".actorflow-code"))


def extract(source: str) -> list[dict[str, Any]]:
    """Read the rows (a stand-in for a database or an API)."""
    return [{"id": i, "value": (i * 37) % 101, "source": source} for i in range(200)]


def transform(row: dict[str, Any]) -> int:
    """CPU work per row, in a worker process."""
    total = 0
    for k in range(2_000):
        total = (total + row["value"] * k) % 1_000_003
    return total


def store(parts: list[int]) -> dict[str, int]:
    """Write the result out; heartbeats tell the engine this long step is alive."""
    ctx = af.step_context()
    for i in range(0, len(parts), 50):
        ctx.heartbeat({"written": i})
    return {"rows": len(parts), "checksum": sum(parts) % 1_000_003}


@engine.workflow("loader")
async def loader(ctx: af.WorkflowContext, parts: list[int]) -> dict[str, int]:
    loaded: dict[str, int] = await ctx.step("store", store, parts, heartbeat_timeout="30s")
    return loaded


@engine.workflow("etl", retry=af.Retry(maximum_attempts=3, initial_interval="200ms"))
async def etl(ctx: af.WorkflowContext, source: str) -> dict[str, Any]:
    progress = {"stage": "extract"}
    ctx.on_query("progress", lambda: dict(progress))
    rows = await ctx.step("extract", extract, source)
    progress["stage"] = f"transform {len(rows)} rows"
    parts = await ctx.map("transform", transform, rows, concurrency=64)
    progress["stage"] = "pause"
    await ctx.sleep("pause", "200ms")
    progress["stage"] = "waiting for approval"
    approved = await ctx.wait_for_signal("approve", timeout="1h", default=None)
    if not approved:
        raise af.WorkflowFailed("nobody approved the load")
    progress["stage"] = f"loading (approved by {approved['by']})"
    loaded = await ctx.child("load", "loader", parts)
    return {**loaded, "approved_by": approved["by"], "batch": str(ctx.uuid4())[:8]}


def main() -> None:
    with engine:
        run = engine.trigger("etl", "s3://bucket/orders.csv", idempotency_key="etl-today")
        while run.query("progress")["stage"] != "waiting for approval":
            time.sleep(0.05)
        print("progress:", run.query("progress")["stage"])
        run.signal("approve", {"by": "grace"})
        result = run.result(timeout=120)
        print("result:", result)
        details = run.inspect()
        print("steps:", ", ".join(s.path for s in details.steps if "[" not in s.path))
        print("transform items:", details.step("transform").items)
        history = engine.export_history(run.id)
    check = af.testing.replay(history, etl)
    print(
        f"replay: deterministic={check.ok}, {check.events} events in {check.seconds * 1000:.1f} "
        f"ms, same result: {check.result == result}"
    )


if __name__ == "__main__":
    main()
