"""Workers are replaced between tasks at max_tasks_per_worker or max_memory_per_worker."""

from __future__ import annotations

from collections.abc import Callable

import actorflow as af
from tests import code_steps as cs

MakeEngine = Callable[..., af.Engine]


def test_workers_are_replaced_after_max_tasks(make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1, max_tasks_per_worker=3)

    @engine.workflow("pids")
    async def pids(ctx: af.WorkflowContext) -> list[int]:
        return [await ctx.step("pid", cs.my_pid) for _ in range(10)]

    with engine:
        seen = engine.trigger("pids").result(timeout=120)
        stats = engine.statistics()
    assert len(seen) == 10
    # Three tasks per process: a new worker for tasks 1-3, 4-6, 7-9 and 10.
    assert [len(set(seen[i : i + 3])) for i in range(0, 9, 3)] == [1, 1, 1]
    assert len(set(seen)) == 4, seen
    assert stats["recycled"] >= 3
    assert stats["restarts"] == 0  # a planned replacement is not a death
    assert stats["pool"]["crashes"] == 0


def test_a_worker_past_its_memory_limit_is_replaced(make_engine: MakeEngine) -> None:
    engine = make_engine(workers=1, max_memory_per_worker="300MB")

    @engine.workflow("hog")
    async def hog(ctx: af.WorkflowContext) -> list[int]:
        first = await ctx.step("leak", cs.leak_memory, 400)  # keeps 400 MB alive
        second = await ctx.step("pid", cs.my_pid)
        third = await ctx.step("pid", cs.my_pid)
        return [first, second, third]

    with engine:
        leaked_in, second, third = engine.trigger("hog").result(timeout=120)
        stats = engine.statistics()
    assert leaked_in != second  # replaced between the tasks, not mid-task
    assert second == third  # the fresh worker is under the limit: kept
    assert stats["recycled"] == 1 and stats["pool"]["crashes"] == 0


def test_statistics_report_queue_latency_and_batches(make_engine: MakeEngine) -> None:
    engine = make_engine()

    @engine.workflow("few")
    async def few(ctx: af.WorkflowContext) -> int:
        return sum(await ctx.map("sq", cs.square, range(50)))

    with engine:
        engine.trigger("few").result(timeout=60)
        stats = engine.statistics()
    assert stats["queue_depth"] == 0 and stats["busy_workers"] == 0
    assert stats["workers"] == 2
    assert stats["commit_batch"]["mean"] >= 1 and stats["commit_batch"]["largest"] >= 1
    latency = stats["dispatch_latency_ms"]
    assert latency["p50"] is not None and 0 <= latency["p50"] <= latency["p99"]
