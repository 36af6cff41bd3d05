"""Ten thousand code workflow runs sleeping at once: in memory, without a thread each."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable

import psutil

import actorflow as af
from tests.conftest import wait_until

RUNS = 10_000


def test_ten_thousand_sleeping_runs_fit_in_memory(make_engine: Callable[..., af.Engine]) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock, durability="fast", sticky_cache_size=2 * RUNS)

    @engine.workflow("sleepy")
    async def sleepy(ctx: af.WorkflowContext, n: int) -> int:
        await ctx.sleep("nap", "1h")
        return n * 2

    proc = psutil.Process()

    def heap() -> int:  # resident memory that is not file-backed (LMDB's map is)
        info = proc.memory_info()
        return int(info.rss - info.shared)

    with engine:
        own_timers = engine.statistics()["timers"]  # the engine's own (retention...)
        engine.trigger("sleepy", -1)  # warm up the code paths before measuring
        gc.collect()
        threads, before = threading.active_count(), heap()
        runs = engine.trigger_many("sleepy", range(RUNS))
        # Every run, the warm-up's too, asleep on its timer: nothing more is in flight.
        asleep = own_timers + RUNS + 1
        wait_until(lambda: engine.statistics()["timers"] >= asleep, timeout=120, interval=0.1)
        gc.collect()
        grown = heap() - before
        assert threading.active_count() == threads  # suspended coroutines, not threads
        assert grown < RUNS * 30 * 1024, f"{grown / RUNS / 1024:.1f} KiB per sleeping run"
        assert all(r.status() == af.RunStatus.RUNNING for r in runs[:: RUNS // 20])
        clock.advance(3600)
        assert [r.result(timeout=120) for r in runs] == [n * 2 for n in range(RUNS)]
