"""Per-workflow concurrency and rate limits: runs beyond them queue durably, in order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import actorflow as af
from actorflow.runtime._admission import Admission
from tests.conftest import wait_until


def test_concurrency_holds_under_a_burst_of_500(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine(workers=2)
    engine.define("limited", concurrency=3).step("work", lambda ctx: ctx.payload)
    with engine:
        core = engine._core
        assert core is not None
        admission = core.admission
        peak = 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, admission.active("limited"))

        watcher = threading.Thread(target=watch)
        watcher.start()
        threads = [
            threading.Thread(
                target=lambda k=k: [engine.trigger("limited", i) for i in range(k, 500, 10)]
            )
            for k in range(10)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        runs = engine.runs("limited", limit=None)
        assert len(runs) == 500
        for r in runs:
            engine.run(r.id).result(timeout=120)
        stop.set()
        watcher.join()
        assert 1 <= peak <= 3
        assert admission.queued("limited") == 0


def test_queued_runs_start_in_trigger_order(make_engine: Callable[..., af.Engine]) -> None:
    engine = make_engine(workers=2)
    engine.define("one", concurrency=1).step("work", lambda ctx: ctx.payload)
    with engine:
        handles = [engine.trigger("one", i) for i in range(30)]
        assert [h.result(timeout=60) for h in handles] == list(range(30))
        starts = [engine.inspect(h.id).started_at for h in handles]
        assert starts == sorted(starts)


def test_rate_limit_queues_runs_until_the_window_allows(
    make_engine: Callable[..., af.Engine],
) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock, workers=1)
    engine.define("rated", rate_limit="2/m").step("s", lambda ctx: ctx.payload)
    with engine:
        handles = [engine.trigger("rated", i) for i in range(5)]
        wait_until(lambda: handles[1].status() == af.RunStatus.COMPLETED)
        assert [h.status() for h in handles[2:]] == [af.RunStatus.QUEUED] * 3
        clock.advance(61)
        wait_until(lambda: handles[3].status() == af.RunStatus.COMPLETED)
        assert handles[4].status() == af.RunStatus.QUEUED
        clock.advance(61)
        assert handles[4].result(timeout=30) == 4


def test_rate_limited_runs_survive_a_restart(make_engine: Callable[..., af.Engine]) -> None:
    clock = af.ManualClock()
    engine = make_engine(clock=clock, workers=1)
    engine.define("rated", rate_limit="1/h").step("s", lambda ctx: ctx.payload)
    with engine:
        handles = [engine.trigger("rated", i) for i in range(2)]
        handles[0].result(timeout=30)
        assert handles[1].status() == af.RunStatus.QUEUED
    engine2 = make_engine(clock=clock, workers=1)
    engine2.define("rated", rate_limit="1/h").step("s", lambda ctx: ctx.payload)
    with engine2:
        # The window is in memory: after a restart the queued run starts at once.
        assert engine2.run(handles[1].id).result(timeout=30) == 1


def test_admission_rate_window_unit() -> None:
    clock = af.ManualClock(100.0)
    waits: list[Any] = []
    adm = Admission({"w": None}, {"w": (2, 10.0)}, clock)
    adm.on_wait = lambda wf, due: waits.append((wf, due))
    assert adm.try_acquire("w", "a") and adm.try_acquire("w", "b")
    assert not adm.try_acquire("w", "c")
    assert waits == [("w", 110.0)]
    assert adm.admit_ready("w") == []
    clock.advance(10)
    assert adm.admit_ready("w") == [("c", 110.0)]
    assert adm.queued("w") == 0
